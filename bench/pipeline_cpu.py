#!/usr/bin/env python
"""CPU seconds per stage of a ``bench/pipeline.py`` run, from its job records.

``bench/pipeline.py`` prints wall times; each job's record (``<out>/stats/<job>.json``) also
holds ``cpu_s``, the CPU seconds of the job's process (all its threads) around the stage. On a
shared machine wall times grow with the load, CPU times much less: they are what an estimate
of the idle machine's wall time starts from. This prints every job's wall and CPU seconds,
heaviest first, then sums over groups of jobs and over all of them (interpreter start-up and
Snakemake excluded: measure the whole run's CPU with ``/usr/bin/time -v``; with warm start, the
servers' imports too: their logs under ``logs/warm_start/`` give their time).

    python bench/pipeline_cpu.py bench/out/real-text
"""

from __future__ import annotations

import argparse
import json
import sys
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/pipeline_cpu.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="bench/pipeline.py's --out directory")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
