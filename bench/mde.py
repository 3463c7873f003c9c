"""Minimum detectable effect of the PPO-variant comparisons, measured and predicted.

Reads an experiment's per-prompt judge scores (``eval/judgements/<run>/seed<s>_scores.csv``),
estimates for every PPO variant the seed, prompt and residual variance of its paired
difference with PPO at the final step (two-way random-effects ANOVA, podyn.statistics),
prints the MDE at 80% power that the hierarchical bootstrap gives for the design that was run,
and predicts it for other numbers of seeds and test prompts:

    python bench/mde.py results/default [--baseline ppo] [--seeds 1 2 3 5] [--prompts 256 512 1024]

With a single seed the seed variance is not estimable and the prediction covers prompts only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from podyn.results import read_scores
from podyn.statistics import detectable_effect, paired_difference, score_matrix, variance_components


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", type=Path, help="results/<experiment>")
    parser.add_argument("--baseline", default="ppo", help="the run every variant is compared with")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[1, 2, 3, 5, 8], help="seed counts to project the MDE for"
    )
    parser.add_argument(
        "--prompts", type=int, nargs="+", default=[256, 512, 1024], help="prompt counts to project the MDE for"
    )
    args = parser.parse_args()
    files = sorted((args.experiment / "eval" / "judgements").glob("*/seed*_scores.csv"))
    # eval/judgements/<run>/seed<s>_scores.csv: the run and seed of each file
    runs = [path.parent.name for path in files]
    seeds = [int(path.name.removeprefix("seed").removesuffix("_scores.csv")) for path in files]
    scores = read_scores(files, runs, seeds)
    base = score_matrix(scores, args.baseline)
    variants = [
        r
        for r in scores["run"].unique()
        if r != args.baseline
        and scores[scores["run"] == r]["step"].max() == scores[scores["run"] == args.baseline]["step"].max()
    ]
    header = " | ".join(f"{s} seeds x {p}" for s in args.seeds for p in args.prompts)
    print(
        "| variant | seeds x prompts run | difference [95% CI] | MDE (bootstrap) | var seed / prompt / "
        f"residual | predicted MDE: {header} |"
    )
    for variant in sorted(variants):
        a = score_matrix(scores, variant)
        shared = a.index.intersection(base.index)
        diff = (a.loc[shared] - base.loc[shared]).dropna(axis=1).to_numpy()
        vc = variance_components(diff)
        result = paired_difference(scores, variant, args.baseline, samples=2000, confidence=0.95, power=0.8)
        predicted = " | ".join(f"{detectable_effect(vc.se(s, p)):.3f}" for s in args.seeds for p in args.prompts)
        seed_var = "n/a" if np.isnan(vc.seed) else f"{vc.seed:.2e}"
        print(
            f"| {variant} | {diff.shape[0]} x {diff.shape[1]} | {result['difference']:+.3f} "
            f"[{result['ci_low']:+.3f}, {result['ci_high']:+.3f}] "
            f"| {result['mde']:.3f} | {seed_var} / {vc.prompt:.2e} / {vc.residual:.2e} | {predicted} |"
        )


if __name__ == "__main__":
    main()
