#!/usr/bin/env python
"""Where a ``podyn train`` job's time goes, from a py-spy profile.

Record one job (py-spy is not a dependency: ``pip install py-spy``)::

    py-spy record -r 200 --format raw -o dpo.spy -- python -m podyn.cli train ...

then ``python bench/pyspy_phases.py dpo.spy [--cpu-seconds S --startup-cpu I]`` prints each phase's
share of the samples of the main thread (idle helper threads excluded). A sample is counted once,
in the first phase of the list below whose marker occurs in its stack. Given the job's CPU
seconds ``S`` (``/usr/bin/time``'s user + sys) and the CPU seconds ``I`` of its imports measured
on their own (``/usr/bin/time python -c "import podyn.stages.train"``), it also prints the CPU
seconds each phase stands for: ``I`` for the imports, and ``S - I`` split by the shares of the
other phases (py-spy samples wall time: on a loaded machine the imports, which read many files,
take a larger share of the samples than of the CPU time)."""

from __future__ import annotations

import argparse
from collections import Counter

PHASES = [  # (phase, markers): the first phase with a marker in the stack takes the sample
    ("start-up: imports", ["_find_and_load"]),
    ("evaluation: greedy generations at judged steps", ["save_generations"]),
    ("analysis checkpoints (save_pretrained + batch)", ["save_analysis"]),
    ("Lightning checkpoints (last.ckpt)", ["ModelCheckpoint", "save_checkpoint"]),
    ("final policy: save + manifest", ["finish (podyn/training/checkpoints.py"]),
    ("Coordinated PO: G measurements", ["podyn/controller.py"]),
    ("data: collate (tokenise, pad)", ["collate"]),
    ("data: sampler, dataset rows", ["fetchers"]),
    ("metrics: self.log and Lightning's logger connector", ["LightningModule.log", "logger_connector"]),
    ("PPO rollouts: sampling (generate)", ["generate (podyn/generation.py"]),
    ("PPO rollouts: log-probs, values, rewards, GAE", ["PPOModule.rollout"]),
    ("backward", ["backward ("]),
    ("forward and loss", ["training_step", "_optimise"]),
    ("optimizer (AdamW, clipping)", ["Optimizer.", "adam.py", "clip_grad"]),
    ("setup: load data, models, trainer", ["train_run (podyn/stages/train.py"]),
    ("Lightning loop, other", ["lightning/pytorch"]),
]
IDLE = ["Condition.wait", "_worker (concurrent/futures", "Event.wait"]


def phase_samples(path: str) -> Counter:
    counts: Counter = Counter()
    for line in open(path):
        stack, _, n = line.rstrip().rpartition(" ")
        if not stack or any(marker in stack for marker in IDLE):
            continue
        name = next((phase for phase, markers in PHASES if any(m in stack for m in markers)), "other")
        counts[name] += int(n)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", help="py-spy raw output (--format raw)")
    parser.add_argument("--cpu-seconds", type=float, default=None, help="the job's CPU seconds")
    parser.add_argument("--startup-cpu", type=float, default=0.0, help="CPU seconds of the imports alone")
    args = parser.parse_args()
    counts = phase_samples(args.profile)
    total = sum(counts.values())
    imports = PHASES[0][0]
    rest = total - counts[imports]
    print("| phase | share of samples | CPU s |")
    print("|---|---:|---:|")
    for name, n in counts.most_common():
        cpu = ""
        if args.cpu_seconds and args.startup_cpu:
            cpu = args.startup_cpu if name == imports else n / rest * (args.cpu_seconds - args.startup_cpu)
        elif args.cpu_seconds:
            cpu = n / total * args.cpu_seconds
        print(f"| {name} | {100 * n / total:.1f}% | {cpu if cpu == '' else f'{cpu:.1f}'} |")
    print(f"| total | 100% | {args.cpu_seconds or ''} |")


if __name__ == "__main__":
    main()
