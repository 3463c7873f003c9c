"""The statistics of the evaluation (docs/method.md §6): bootstrap confidence intervals over
prompts, t-intervals across seeds, and comparisons of a variant's win rate with its baseline's
that cover both sources of variance: training randomness (seeds) and the choice of test prompts.

Every run is judged on the same prompts, so the per-prompt scores of a run form a
seeds x prompts matrix. The difference variant - baseline is estimated by a hierarchical
(two-way) bootstrap: each replicate resamples seeds and prompts with replacement and
averages the selected cells. Seeds are paired when both runs have them (the same seed gives
both runs the same data order and initial state); runs with no seed in common are resampled
independently. With one seed only prompts are resampled, and the comparison says so: the
training variance is then not covered.

The minimum detectable effect at power 1 - beta is ``(z_{1-alpha/2} + z_{1-beta}) * SE`` with
SE the standard deviation of the same bootstrap replicates. The verdict is one of:
``better`` / ``worse`` (the CI excludes 0), ``no difference`` (the CI lies within +-MDE: an
effect as large as the MDE is ruled out), or ``inconclusive``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

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


SEEDS_AND_PROMPTS = "seeds and prompts"
PROMPTS_ONLY = "prompts only (one seed: training variance not covered)"


@dataclass
class Comparison:
    difference: float
    ci_low: float
    ci_high: float
    se: float
    mde: float
    n_seeds: int
    n_prompts: int
    paired_seeds: bool
    variance: str
    verdict: str


def hierarchical_bootstrap(
    a: np.ndarray, b: np.ndarray, paired: bool, samples: int = 2000, seed: int = 0
) -> np.ndarray:
    """Bootstrap replicates of mean(a) - mean(b) for two seeds x prompts score matrices with the
    same prompt columns. Paired: a and b have the same seed rows and one seed draw serves both;
    otherwise each run's seeds are drawn on their own. The prompt draw is shared (same prompts)."""
    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"the two runs were judged on different prompts ({a.shape[1]} vs {b.shape[1]})")
    if paired and a.shape[0] != b.shape[0]:
        raise ValueError("paired seeds need the same number of seed rows")
    rng = np.random.default_rng(seed)
    n_prompts = a.shape[1]
    out = np.empty(samples)
    diff = a - b if paired else None
    for i in range(samples):
        prompts = rng.integers(n_prompts, size=n_prompts)
        if paired:
            rows = rng.integers(a.shape[0], size=a.shape[0])
            out[i] = diff[np.ix_(rows, prompts)].mean()
        else:
            rows_a, rows_b = rng.integers(a.shape[0], size=a.shape[0]), rng.integers(b.shape[0], size=b.shape[0])
            out[i] = a[np.ix_(rows_a, prompts)].mean() - b[np.ix_(rows_b, prompts)].mean()
    return out


def detectable_effect(se: float, confidence: float = 0.95, power: float = 0.8) -> float:
    """MDE = (z_{1-alpha/2} + z_power) * SE, alpha = 1 - confidence (a two-sided test)."""
    return float((scipy_stats.norm.ppf(0.5 + confidence / 2) + scipy_stats.norm.ppf(power)) * se)


def four_way_verdict(low: float, high: float, mde: float) -> str:
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    if -mde <= low and high <= mde:
        return "no difference"
    return "inconclusive"


def compare(
    a: np.ndarray,
    b: np.ndarray,
    paired: bool,
    samples: int = 2000,
    confidence: float = 0.95,
    power: float = 0.8,
    seed: int = 0,
) -> Comparison:
    """Difference mean(a) - mean(b) of two seeds x prompts matrices, with the hierarchical
    bootstrap's percentile CI, its MDE and the four-way verdict."""
    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    reps = hierarchical_bootstrap(a, b, paired, samples, seed)
    alpha = (1.0 - confidence) / 2
    low, high = float(np.quantile(reps, alpha)), float(np.quantile(reps, 1 - alpha))
    se = float(reps.std(ddof=1))
    mde = detectable_effect(se, confidence, power)
    n_seeds = min(a.shape[0], b.shape[0])
    return Comparison(
        difference=float(a.mean() - b.mean()),
        ci_low=low,
        ci_high=high,
        se=se,
        mde=mde,
        n_seeds=n_seeds,
        n_prompts=a.shape[1],
        paired_seeds=paired,
        variance=SEEDS_AND_PROMPTS if n_seeds > 1 else PROMPTS_ONLY,
        verdict=four_way_verdict(low, high, mde),
    )


@dataclass
class VarianceComponents:
    """Two-way random-effects decomposition of a seeds x prompts matrix of paired differences:
    D[s, p] = mu + a_s + b_p + e_sp. ``seed`` is NaN with one seed (not estimable), and then
    ``prompt`` holds the prompt and residual variance together."""

    seed: float
    prompt: float
    residual: float

    def se(self, n_seeds: int, n_prompts: int) -> float:
        seed = 0.0 if np.isnan(self.seed) else self.seed
        return float(np.sqrt(seed / n_seeds + self.prompt / n_prompts + self.residual / (n_seeds * n_prompts)))


def variance_components(diff: np.ndarray) -> VarianceComponents:
    """ANOVA (method-of-moments) estimates of the seed, prompt and residual variances."""
    d = np.atleast_2d(np.asarray(diff, float))
    n_s, n_p = d.shape
    if n_s == 1:
        return VarianceComponents(seed=float("nan"), prompt=float(d.var(ddof=1)), residual=0.0)
    rows, cols, grand = d.mean(1), d.mean(0), d.mean()
    ms_rows = n_p * rows.var(ddof=1)
    ms_cols = n_s * cols.var(ddof=1)
    resid = d - rows[:, None] - cols[None, :] + grand
    ms_e = (resid**2).sum() / ((n_s - 1) * (n_p - 1))
    return VarianceComponents(
        seed=max((ms_rows - ms_e) / n_p, 0.0), prompt=max((ms_cols - ms_e) / n_s, 0.0), residual=float(ms_e)
    )


def score_matrix(scores: pd.DataFrame, run: str, step: Literal["final", "best"] = "final") -> pd.DataFrame:
    """A run's per-prompt scores at its final (or best: highest mean) judged step, as a
    seeds x prompts table. ``scores`` holds per-prompt judge scores with columns run, seed,
    step, prompt_index, score."""
    frame = scores[scores["run"] == run]
    chosen = frame["step"].max() if step == "final" else frame.groupby("step")["score"].mean().idxmax()
    return frame[frame["step"] == chosen].pivot_table(index="seed", columns="prompt_index", values="score")


def paired_difference(
    scores: pd.DataFrame,
    variant: str,
    baseline: str,
    samples: int,
    confidence: float,
    power: float = 0.8,
    step: Literal["final", "best"] = "final",
) -> dict[str, Any]:
    """Win-rate difference variant - baseline at each run's final (or best) step, on the prompts
    both were judged on, with a hierarchical bootstrap over seeds and prompts (seeds paired when
    the two runs share them), its MDE at ``power`` and the four-way verdict (:func:`compare`).

    An invalid judgement (method.md §6) has no score row, so its cell of the seeds x prompts
    matrix is empty: a prompt is compared only where both runs have a valid score in every seed
    compared (the bootstrap draws the same prompts for every seed), and ``n_prompts`` counts
    those prompts."""
    a, b = score_matrix(scores, variant, step), score_matrix(scores, baseline, step)
    shared = a.index.intersection(b.index)
    paired = len(shared) > 0
    if paired:
        a, b = a.loc[shared], b.loc[shared]
    prompts = a.columns.intersection(b.columns)
    prompts = prompts[a[prompts].notna().all().to_numpy() & b[prompts].notna().all().to_numpy()]
    result = compare(a[prompts].to_numpy(), b[prompts].to_numpy(), paired, samples, confidence, power, seed=0)
    return asdict(result)
