#!/usr/bin/env python
"""``ppo.old_logps``: recompute (the default) against generation, side by side, on the default's PPO run.

Given the results of a finished default run (``--results``, e.g. ``bench/pipeline.py``'s
``<out>/results/default``), runs ``podyn train --run ppo`` exactly as the DAG's ``train`` rule
does (``--threads 1``), alternately with ``ppo.old_logps: recompute`` and ``generation``,
``--repeats`` times each, and prints:

* CPU seconds (user + sys) of each whole job, start-up included, and the median per setting;
* whether the recompute job's declared outputs equal the DAG's own (byte for byte);
* the largest absolute difference of every ``metrics.csv`` column between the two settings (pi_old
  from the KV-cached sampling pass differs from the recomputed one by float round-off, and the
  runs drift apart from there).

The last line is ``cpu ratio <generation / recompute>`` (medians).

    python bench/ppo_old_logps.py --results bench/out/pipeline/results/default --repeats 2
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import statistics
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from stage_cpu import child_cpu, environment, train_command  # noqa: E402

from podyn.config import load_config  # noqa: E402

SETTINGS = ("recompute", "generation")
COMPARED = ("records.csv", "generations.jsonl", "metrics.csv")  # timing.csv is wall-clock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/ppo_old_logps.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=Path, required=True, help="a finished default run's results/<experiment>")
    parser.add_argument("--config", type=Path, default=ROOT / "config.yaml", help="config of that run")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each variant, alternating")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "ppo_old_logps", help="scratch directory")
    args = parser.parse_args(argv)
    base = load_config(args.config)
    results = args.results.resolve()
    shutil.rmtree(args.out, ignore_errors=True)
    env = environment(ROOT)
    cpu: dict[str, list[float]] = {s: [] for s in SETTINGS}
    for repeat in range(args.repeats):
        for setting in SETTINGS:
            cfg = base.model_copy(update={"ppo": base.ppo.model_copy(update={"old_logps": setting})})
            out = args.out / f"{setting}_{repeat}"
            out.mkdir(parents=True)
            seconds = child_cpu(train_command(cfg, "ppo", results, out), env, out / "job.log")
            cpu[setting].append(seconds)
            print(f"{setting:<11} repeat {repeat}: {seconds:.2f} CPU s", flush=True)
    dag = results / "runs" / "ppo" / "seed0"
    same = all(filecmp.cmp(args.out / "recompute_0" / name, dag / name, shallow=False) for name in COMPARED)
    print(f"recompute's outputs equal the DAG's ({dag}): {'yes' if same else 'no'}")
    recompute, generation = (pd.read_csv(args.out / f"{s}_0" / "metrics.csv") for s in SETTINGS)
    columns = [c for c in recompute.columns if c not in ("step", "iteration")]
    print("largest |generation - recompute| over the run's metrics rows:")
    for column in columns:
        print(f"  {column:<28} {float((generation[column] - recompute[column]).abs().max()):.3e}")
    medians = {s: statistics.median(v) for s, v in cpu.items()}
    print(f"median CPU s: recompute {medians['recompute']:.2f}, generation {medians['generation']:.2f}")
    print(f"cpu ratio {medians['generation'] / medians['recompute']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
