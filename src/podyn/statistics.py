"""The statistics of the evaluation: bootstrap confidence intervals over prompts, t-intervals
across seeds, and paired comparisons of a variant with its baseline (method.md §6)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats


def bootstrap_ci(
    scores: np.ndarray, samples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of ``scores`` and its percentile-bootstrap confidence interval over prompts."""
    scores = np.asarray(scores, dtype=float)
    rng = np.random.default_rng(seed)
    means = scores[rng.integers(len(scores), size=(samples, len(scores)))].mean(axis=1)
    alpha = (1.0 - confidence) / 2
    return float(scores.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def seed_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """Student-t interval of the mean across seeds (NaN with a single seed)."""
    if len(values) < 2:
        return float("nan"), float("nan")
    half = scipy_stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


def paired_difference(
    scores: pd.DataFrame,
    variant: str,
    baseline: str,
    samples: int,
    confidence: float,
    step: Literal["final", "best"] = "final",
) -> dict[str, float]:
    """Win-rate difference variant - baseline at each run's final (or best) step, paired by
    prompt and seed, with a bootstrap interval over prompts. ``scores`` holds per-prompt judge
    scores with columns run, seed, step, prompt_index, score."""

    def at(run: str) -> pd.Series:
        frame = scores[scores["run"] == run]
        chosen = frame["step"].max() if step == "final" else frame.groupby("step")["score"].mean().idxmax()
        return frame[frame["step"] == chosen].set_index(["seed", "prompt_index"])["score"]

    a, b = at(variant), at(baseline)
    common = a.index.intersection(b.index)
    diff = (a[common] - b[common]).groupby(level="prompt_index").mean().to_numpy()
    mean, lo, hi = bootstrap_ci(diff, samples, confidence, seed=0)
    return {
        "difference": mean,
        "ci_low": lo,
        "ci_high": hi,
        "n_prompts": len(diff),
        "n_seeds": common.get_level_values("seed").nunique(),
    }


def verdict(low: float, high: float) -> str:
    """'better' or 'worse' when the interval excludes 0, else 'no significant difference'."""
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "no significant difference"
