#!/usr/bin/env python
"""Benchmark the Snakemake DAG: wall time, tokens/s and peak memory per stage.

Runs ``snakemake --cores N`` in the repository on a config (default: the embedded default,
``config.yaml``) into a fresh results directory under ``--out`` (``--config results_dir=``
overrides the config's; a config other than config.yaml is passed with ``--configfile``,
which Snakemake merges over config.yaml, as ``snakemake --configfile`` would), with
``PODYN_STATS_DIR`` set so that every ``podyn <stage>`` job writes its own record:

* wall time: inside the job's ``podyn`` process, around the stage (the interpreter's
  start-up and the CLI's first imports excluded; with warm start, on by default in a local
  run, the torch imports too: the servers paid them once, see ``podyn.warm_start``);
* tokens: tokens through the model (forward passes and generated tokens);
* peak memory: the job process's peak resident set size (and peak GPU memory if any).

A job that declined warm start (its interpreter, ``sys.path`` or environment differed from
the servers', e.g. a checkout whose ``.venv`` is a symlink to another's) ran cold: a warning
names such jobs, whose times include their imports.

The TOTAL row is the end-to-end wall time of the ``snakemake`` command (jobs run in
parallel, so it is less than the sum of the stages plus start-up), its tokens the sum over
stages and its memory the largest single job's. The table is printed and written to
``<out>/pipeline.md`` and ``<out>/pipeline.csv``; Snakemake's own output goes to
``<out>/snakemake.log``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "config.yaml"


@dataclass
class Row:
    """One line of the table (a stage's JSON record, or the TOTAL)."""

    stage: str
    wall_s: float
    tokens: int
    tokens_per_s: float
    peak_rss_mb: float
    peak_gpu_mb: float | None = None
    cached: bool = False  # record left by an earlier run (--keep): this run did not rerun it


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/pipeline.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help="workflow config (default: config.yaml, the embedded default)",
    )
    parser.add_argument("--cores", default="all", help="snakemake --cores (default: %(default)s)")
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "bench" / "out" / "pipeline",
        help="results, per-stage records, log and table go here (default: bench/out/pipeline)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="reuse <out>/results: Snakemake reruns only what is missing or outdated; stages it skips keep "
        "their earlier records, marked 'cached'",
    )
    parser.add_argument(
        "--snakemake-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument passed to snakemake (repeatable), e.g. --snakemake-arg=--forceall",
    )
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    if args.out == (ROOT / "results").resolve() or (ROOT / "results").resolve() in args.out.parents:
        parser.error("--out must not be under the repository's results/ (the benchmark deletes its results directory)")
    return args


def snakemake_command(config: Path, cores: str, results_dir: Path, extra: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "snakemake", "--cores", str(cores)]
    if config.resolve() != DEFAULT_CONFIG.resolve():
        cmd += ["--configfile", str(config.resolve())]
    # one --config flag: a second one would replace the first rather than add to it
    if "--config" in extra:
        at = extra.index("--config") + 1
        return cmd + [*extra[:at], f"results_dir={results_dir}", *extra[at:]]
    return cmd + ["--config", f"results_dir={results_dir}", *extra]


def job_environment(stats_dir: Path) -> dict[str, str]:
    """This interpreter's bin first on PATH (the rules call ``podyn``), offline, stats on."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PODYN_STATS_DIR=str(stats_dir)
    )
    return env


def run_snakemake(cmd: list[str], env: dict[str, str], log: Path) -> float:
    """Run the DAG; return its wall time in seconds. On failure, show the log's tail and exit."""
    print("running: " + " ".join(cmd), flush=True)
    start = time.perf_counter()
    with open(log, "w") as handle:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log.read_text().splitlines()[-40:]
        sys.exit(
            f"snakemake failed (exit {proc.returncode}) after {wall:.1f} s; last lines of {log}:\n" + "\n".join(tail)
        )
    return wall


def read_records(stats_dir: Path, started: float) -> list[Row]:
    """Every stage record, in the order the stages finished; those written before ``started``
    (an earlier run's, kept by --keep) are marked cached."""
    files = sorted(stats_dir.glob("*.json"), key=lambda p: p.stat().st_mtime)
    rows = []
    for path in files:
        rec = json.loads(path.read_text())
        rows.append(
            Row(
                rec["stage"],
                rec["wall_s"],
                int(rec["tokens"]),
                rec["tokens_per_s"],
                rec["peak_rss_mb"],
                rec.get("peak_gpu_mb"),
                path.stat().st_mtime < started,
            )
        )
    return rows


def total_row(rows: list[Row], wall: float) -> Row:
    fresh = [r for r in rows if not r.cached]
    tokens = sum(r.tokens for r in fresh)
    gpu = [r.peak_gpu_mb for r in fresh if r.peak_gpu_mb is not None]
    return Row(
        "TOTAL (snakemake end to end)",
        wall,
        tokens,
        tokens / wall if wall else 0.0,
        max((r.peak_rss_mb for r in fresh), default=0.0),
        max(gpu) if gpu else None,
    )


def table_cells(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    gpu = any(r.peak_gpu_mb is not None for r in rows)
    head = ["stage", "wall s", "tokens", "tokens/s", "peak RSS MB"] + (["peak GPU MB"] if gpu else [])
    body = []
    for r in rows:
        name = f"{r.stage} (cached)" if r.cached else r.stage
        cells = [name, f"{r.wall_s:.1f}", f"{r.tokens:,}", f"{r.tokens_per_s:,.0f}", f"{r.peak_rss_mb:.0f}"]
        body.append(cells + ([f"{r.peak_gpu_mb:.0f}" if r.peak_gpu_mb is not None else ""] if gpu else []))
    return head, body


def markdown(head: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if i else "---" for i in range(len(head))) + "|"]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])


def plain(head: list[str], body: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join(
        [
            fmt(head),
            "  ".join("-" * w for w in widths),
            *map(fmt, body[:-1]),
            "  ".join("-" * w for w in widths),
            fmt(body[-1]),
        ]
    )


def write_tables(out: Path, rows: list[Row], header: str) -> None:
    head, body = table_cells(rows)
    (out / "pipeline.md").write_text(f"{header}\n\n{markdown(head, body)}\n")
    with open(out / "pipeline.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["stage", "wall_s", "tokens", "tokens_per_s", "peak_rss_mb", "peak_gpu_mb", "cached"])
        writer.writerows(
            [
                r.stage,
                f"{r.wall_s:.3f}",
                r.tokens,
                f"{r.tokens_per_s:.1f}",
                f"{r.peak_rss_mb:.1f}",
                "" if r.peak_gpu_mb is None else f"{r.peak_gpu_mb:.1f}",
                r.cached,
            ]
            for r in rows
        )


def cold_job_logs(results: Path) -> dict[str, list[str]]:
    """Job logs whose podyn declined warm start and ran cold, grouped by the reason it printed
    (``podyn.warm_start``: the job's environment, interpreter or ``sys.path`` differed from the
    servers'): such a run's times include every cold job's imports, so they are not a warm run's."""
    marker = "podyn: warm start declined"
    found: dict[str, list[str]] = {}
    for log in sorted(results.rglob("logs/**/*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith(marker):
                found.setdefault(line, []).append(str(log.relative_to(results)))
                break
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results, stats = args.out / "results", args.out / "stats"
    if not args.keep:
        for path in (results, stats):
            shutil.rmtree(path, ignore_errors=True)
    stats.mkdir(parents=True, exist_ok=True)
    cmd = snakemake_command(args.config, args.cores, results, args.snakemake_arg)
    started = time.time()
    wall = run_snakemake(cmd, job_environment(stats), args.out / "snakemake.log")
    rows = read_records(stats, started)
    if not rows:
        sys.exit(f"no stage records in {stats}: does this podyn write PODYN_STATS_DIR records?")
    rows.append(total_row(rows, wall))
    header = (
        f"config={args.config.name}, cores={args.cores} ({os.cpu_count()} CPUs), fresh={not args.keep}, "
        f"stages={len(rows) - 1}"
    )
    write_tables(args.out, rows, header)
    print(header)
    print(plain(*table_cells(rows)))
    print(
        f"\nsum of stage wall times: {sum(r.wall_s for r in rows[:-1] if not r.cached):.1f} s; tables in "
        f"{args.out}/pipeline.md and .csv"
    )
    for reason, logs in cold_job_logs(results).items():
        print(f"warning: {len(logs)} jobs ran cold ({reason}), e.g. {logs[0]}", file=sys.stderr)
    print(f"total {wall:.1f} s")  # the last line: the end-to-end wall time of the snakemake command
    return 0


if __name__ == "__main__":
    sys.exit(main())
