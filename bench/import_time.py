#!/usr/bin/env python
"""Start-up cost of a pipeline job: the wall time of importing each stage's entry module, and
of the libraries beneath it, each in a fresh interpreter (what every Snakemake job pays).

Rows (cumulative: each row's modules include the ones above it):
  python         an empty interpreter (the floor)
  torch          import torch
  transformers   + import transformers (and its GPT-NeoX model classes)
  lightning      + import lightning
  stage <name>   the stage's entry module from podyn.registry.STAGES

Repeats alternate the rows (row 1..n, then again), so load on a shared machine falls on all
of them alike; the table shows the median per row. The last printed line is
``total <seconds> s`` (the sum of the stage medians).

    python bench/import_time.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

LIBRARIES = {
    "python": "pass",
    "torch": "import torch",
    "transformers": "import torch, transformers; from transformers import GPTNeoXForCausalLM",
    "lightning": "import torch, transformers; from transformers import GPTNeoXForCausalLM; import lightning",
}


def stage_modules() -> dict[str, str]:
    from podyn.registry import STAGES

    return {f"stage {s.name}": f"import {s.entry.split(':')[0]}" for s in STAGES.values()}


def wall(code: str) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="fresh interpreters per row; the median is shown")
    parser.add_argument("--stages-only", action="store_true", help="skip the library rows")
    args = parser.parse_args(argv)
    rows = ({} if args.stages_only else dict(LIBRARIES)) | stage_modules()
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.repeats):
        for name, code in rows.items():
            times[name].append(wall(code))
    print(f"| job start-up ({args.repeats} repeats, median) | seconds | min | max |")
    print("|---|---:|---:|---:|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |")
    total = sum(statistics.median(v) for k, v in times.items() if k.startswith("stage "))
    print(f"total {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
