#!/usr/bin/env python
"""CPU seconds per stage of a ``bench/pipeline.py`` run, from its job records.

``bench/pipeline.py`` prints wall times; each job's record (``<out>/stats/<job>.json``) also
holds ``cpu_s``, the CPU seconds of the job's process (all its threads) around the stage. On a
shared machine wall times grow with the load, CPU times much less: they are what an estimate
of the idle machine's wall time starts from. This prints every job's wall and CPU seconds,
heaviest first, then sums over groups of jobs and over all of them (interpreter start-up and
Snakemake excluded: measure the whole run's CPU with ``/usr/bin/time -v``; with warm start, the
servers' imports too: their logs under ``logs/warm_start/`` give their time).

Last, from Snakemake's log (``<out>/snakemake.log``), how busy the jobs kept the run's cores
from the first job's start to the last one's end: the core-seconds their threads held (a job
holds its ``threads`` cores while it runs, busy or not) and those no job held, before the first
training job, while training jobs ran and after the last one. Many idle core-seconds would mean
that the order of the jobs, not their work, bounds the run. Limits: Snakemake logs times to the
second, in local time (a daylight-saving change inside the run shifts them by an hour); the
warm-start servers' imports are not jobs, so their time counts as idle; jobs of rules with a
``message:`` and group jobs are logged in other shapes and are not counted (the workflow has
neither).

    python bench/pipeline_cpu.py bench/out/real-text
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

GROUPS = {
    "train": lambda s: s.startswith("train_"),
    "generations and judging": lambda s: s == "generate" or s.startswith(("final-responses_", "judge_")),
    "dynamics": lambda s: s.startswith("dynamics_"),
    "tables, figures, claims, report": lambda s: (
        s.startswith("concat")
        or s in ("winrates", "ablations", "coordination", "figures", "claims", "claims-robustness", "report-pages")
    ),
}


@dataclass
class Job:
    rule: str
    threads: int
    start: float  # seconds from the first job's start
    end: float


def snakemake_jobs(log: str) -> list[Job]:
    """Every finished job of a Snakemake log: its rule, threads, start and end (to the second),
    counted from the first job's start. A job's block is its start time, ``rule <name>:`` and
    indented fields (``jobid``; ``threads`` where more than one); ``Finished jobid: N`` ends it."""
    now, block, started, finished = datetime.min, None, {}, []
    for line in log.splitlines():
        if stamp := re.fullmatch(r"\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]", line):
            now = datetime.strptime(stamp.group(1), "%a %b %d %H:%M:%S %Y")
        elif head := re.fullmatch(r"(?:local)?(?:rule|checkpoint) (\w+):", line):
            block = {"rule": head.group(1), "threads": 1, "start": now}
        elif block is not None and (field := re.fullmatch(r"\s+(jobid|threads): (\d+)", line)):
            block[field.group(1)] = int(field.group(2))
            if field.group(1) == "jobid":
                started[block["jobid"]] = block  # the same dict: a later `threads:` lands there too
        elif (done := re.match(r"Finished jobid: (\d+)", line)) and (job := started.pop(int(done.group(1)), None)):
            finished.append((job, now))
        elif not line.startswith(" "):
            block = None
    first = min((job["start"] for job, _ in finished), default=datetime.min)
    return [
        Job(job["rule"], job["threads"], (job["start"] - first).total_seconds(), (end - first).total_seconds())
        for job, end in finished
    ]


def provided_cores(log: str) -> int | None:
    """The cores a local run had (Snakemake's ``Provided cores: N``)."""
    found = re.search(r"^Provided cores: (\d+)$", log, re.MULTILINE)
    return int(found.group(1)) if found else None


def idle_core_seconds(jobs: list[Job], cores: int, start: float, end: float) -> float:
    """Core-seconds in [start, end) that no job's threads held."""
    times = sorted({start, end, *(t for j in jobs for t in (j.start, j.end) if start < t < end)})
    idle = 0.0
    for a, b in zip(times, times[1:]):
        busy = sum(j.threads for j in jobs if j.start <= a and j.end >= b)
        idle += max(0, cores - busy) * (b - a)
    return idle


def occupancy(jobs: list[Job], cores: int) -> str:
    """One line: the core-seconds the jobs held and those left idle, by phase of the run."""
    span = max(j.end for j in jobs)
    phases = {"in all": (0.0, span)}
    if train := [j for j in jobs if j.rule == "train"]:
        first, last = min(j.start for j in train), max(j.end for j in train)
        phases = {
            "before the first training job": (0.0, first),
            "while training jobs ran": (first, last),
            "after the last one": (last, span),
        }
    idle = {name: idle_core_seconds(jobs, cores, a, b) for name, (a, b) in phases.items()}
    by_phase = ", ".join(f"{idle[name]:.0f} {name} ({b - a:.0f} s)" for name, (a, b) in phases.items())
    return (
        f"cores: {cores}, {span:.0f} s from the first job's start to the last one's end (Snakemake's log): jobs "
        f"held {cores * span - sum(idle.values()):.0f} of {cores * span:.0f} core-s; idle {sum(idle.values()):.0f}"
        f" core-s: {by_phase}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/pipeline_cpu.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="bench/pipeline.py's --out directory")
    parser.add_argument(
        "--cores", type=int, default=None, help="the run's cores (default: Snakemake's log says; else this machine's)"
    )
    args = parser.parse_args(argv)
    paths = sorted((args.out / "stats").glob("*.json"))
    if not paths:
        sys.exit(f"no job records in {args.out / 'stats'}")
    rows = sorted((json.loads(p.read_text()) for p in paths), key=lambda r: -r["cpu_s"])
    print(f"{'job':34s} {'wall s':>8s} {'CPU s':>8s}")
    for r in rows:
        print(f"{r['stage']:34s} {r['wall_s']:8.1f} {r['cpu_s']:8.1f}")
    for name, member in GROUPS.items():
        group = [r for r in rows if member(r["stage"])]
        if group:
            wall, cpu = [r["wall_s"] for r in group], [r["cpu_s"] for r in group]
            print(
                f"{name}: {len(group)} jobs, wall {min(wall):.1f}-{max(wall):.1f} s each, "
                f"CPU {min(cpu):.1f}-{max(cpu):.1f} s each, {sum(cpu):.1f} s in all"
            )
    print(f"all {len(rows)} jobs: CPU {sum(r['cpu_s'] for r in rows):.1f} s")
    log = (args.out / "snakemake.log").read_text() if (args.out / "snakemake.log").exists() else ""
    if jobs := snakemake_jobs(log):
        print(occupancy(jobs, args.cores or provided_cores(log) or os.cpu_count()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
