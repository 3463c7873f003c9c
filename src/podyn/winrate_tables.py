"""The run grid's win-rate tables: per run, the final and best judged step's win rate with
confidence intervals across seeds and over prompts, and paired comparisons of each variant
with its panel's baseline (method.md §4-§6); the ``ablations`` stage also draws figure 4."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from .config import AblationPanel, Config, RunConfig, WinrateConfig
from .io import write_csv, write_text
from .results import read_scores
from .statistics import bootstrap_ci, paired_difference, seed_interval, verdict


def _summary(scores: pd.DataFrame, step: int, winrate: WinrateConfig, prefix: str) -> dict[str, float]:
    at = scores[scores["step"] == step]
    per_seed = at.groupby("seed")["score"].mean().to_numpy()
    per_prompt = at.groupby("prompt_index")["score"].mean().to_numpy()  # averaged over seeds
    mean, lo, hi = bootstrap_ci(per_prompt, winrate.bootstrap_samples, winrate.confidence, seed=step)
    s_lo, s_hi = seed_interval(per_seed, winrate.confidence)
    return {
        f"{prefix}_step": step,
        f"{prefix}_win_rate": mean,
        f"{prefix}_seed_ci_low": s_lo,
        f"{prefix}_seed_ci_high": s_hi,
        f"{prefix}_prompt_ci_low": lo,
        f"{prefix}_prompt_ci_high": hi,
    }


def panel_order(panels: dict[str, AblationPanel], runs: Iterable[str]) -> list[str]:
    """Runs in figure-4 order (each panel's baseline, then its variants), then any others."""
    ordered = [name for spec in panels.values() for name in (spec.baseline, *spec.runs)]
    return list(dict.fromkeys([*ordered, *sorted(runs)]))


def winrate_table(
    scores: pd.DataFrame, runs: dict[str, RunConfig], winrate: WinrateConfig, order: list[str] | None = None
) -> pd.DataFrame:
    """Per run: the final and the best judged step's win rate (mean over seeds), with a 95%
    t-interval across seeds and a bootstrap interval over prompts. A run with scores but no
    entry in ``runs`` is labelled with its name."""
    rows = []
    for run, frame in scores.groupby("run", sort=False):
        curve = frame.groupby("step")["score"].mean()
        spec = runs.get(run)
        label = run if spec is None or spec.label is None else spec.label
        row = {
            "run": run,
            "label": label,
            "objective": "" if spec is None else spec.objective,
            "n_seeds": frame["seed"].nunique(),
        }
        row.update(_summary(frame, int(curve.index.max()), winrate, "final"))
        row.update(_summary(frame, int(curve.idxmax()), winrate, "best"))
        rows.append(row)
    rank = {name: i for i, name in enumerate(order or runs)}
    return pd.DataFrame(rows).sort_values("run", key=lambda s: s.map(rank)).reset_index(drop=True)


def comparisons(scores: pd.DataFrame, panels: dict[str, AblationPanel], winrate: WinrateConfig) -> pd.DataFrame:
    """Every panel's variants against the panel's baseline, at the final and the best step."""
    rows = []
    present = set(scores["run"])
    for panel, spec in panels.items():
        if spec.baseline not in present:
            continue
        for variant in (r for r in spec.runs if r in present):
            for step in ("final", "best"):
                result = paired_difference(
                    scores, variant, spec.baseline, winrate.bootstrap_samples, winrate.confidence, step
                )
                rows.append(
                    {
                        "panel": panel,
                        "variant": variant,
                        "baseline": spec.baseline,
                        "step": step,
                        **result,
                        "verdict": verdict(result["ci_low"], result["ci_high"]),
                    }
                )
    columns = [
        "panel",
        "variant",
        "baseline",
        "step",
        "difference",
        "ci_low",
        "ci_high",
        "n_prompts",
        "n_seeds",
        "verdict",
    ]
    return pd.DataFrame(rows, columns=columns)


def _fmt(mean: float, low: float, high: float) -> str:
    return f"{mean:.3f}" if np.isnan(low) else f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def write_tables(table: pd.DataFrame, out_stem: Path) -> None:
    """``winrates.csv`` (every number), ``winrates.md`` and ``winrates.tex`` (formatted)."""
    write_csv(out_stem.with_suffix(".csv"), table)
    display = pd.DataFrame(
        {
            "run": table["run"],
            "final win rate (seed CI)": [
                _fmt(*r) for r in table[["final_win_rate", "final_seed_ci_low", "final_seed_ci_high"]].to_numpy()
            ],
            "final (prompt CI)": [
                _fmt(*r) for r in table[["final_win_rate", "final_prompt_ci_low", "final_prompt_ci_high"]].to_numpy()
            ],
            "best win rate (prompt CI)": [
                _fmt(*r) for r in table[["best_win_rate", "best_prompt_ci_low", "best_prompt_ci_high"]].to_numpy()
            ],
            "best step": table["best_step"],
            "seeds": table["n_seeds"],
        }
    )
    write_text(out_stem.with_suffix(".md"), display.to_markdown(index=False) + "\n")
    write_text(out_stem.with_suffix(".tex"), display.to_latex(index=False, escape=True))


def ablation_stage(
    cfg: Config, *, winrates: Path, runs: list[str], seeds: list[int], scores: list[Path], tables: Path, figures: Path
) -> None:
    """``tables/winrates.{csv,md,tex}``, ``tables/comparisons.csv`` and figure 4. ``runs`` and
    ``seeds`` name the run and seed of each file in ``scores``."""
    from .figures import ablation_figure

    score_table = read_scores(scores, runs, seeds)
    panels = cfg.figures.ablation_panels
    order = panel_order(panels, cfg.runs)
    write_tables(winrate_table(score_table, cfg.runs, cfg.winrate, order), Path(tables) / "winrates")
    write_csv(Path(tables) / "comparisons.csv", comparisons(score_table, panels, cfg.winrate))
    ablation_figure(cfg, winrates, figures)
