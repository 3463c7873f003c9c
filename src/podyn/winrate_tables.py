"""The run grid's win-rate tables: per run, the final and best judged step's win rate with
confidence intervals across seeds and over prompts, and comparisons of each variant with its
panel's baseline over seeds and prompts, with their MDE and four-way verdict (docs/method.md
§4-§6); the ``ablations`` stage also draws figure 4. The ``coordination`` stage draws the
weights each run applied and Coordinated PO's comparisons (``tables/copo.csv``)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from .config import AblationPanel, Config, RunConfig, WinrateConfig
from .io import write_csv, write_text
from .length_control import length_controlled_win_rate
from .results import read_records, read_scores
from .statistics import bootstrap_ci, paired_difference, seed_interval


def _summary(scores: pd.DataFrame, step: int, winrate: WinrateConfig, prefix: str) -> dict[str, float]:
    at = scores[scores["step"] == step]
    per_seed = at.groupby("seed")["score"].mean().to_numpy()
    per_prompt = at.groupby("prompt_index")["score"].mean().to_numpy()  # averaged over seeds
    mean, lo, hi = bootstrap_ci(per_prompt, winrate.bootstrap_samples, winrate.confidence, seed=step)
    s_lo, s_hi = seed_interval(per_seed, winrate.confidence)
    # the length-controlled win rate over every (seed, prompt) judgement at this step
    lc = float("nan")
    if "length_diff" in at:
        lc = length_controlled_win_rate(at["score"].to_numpy(), at["length_diff"].to_numpy())
    return {
        f"{prefix}_step": step,
        f"{prefix}_win_rate": mean,
        f"{prefix}_seed_ci_low": s_lo,
        f"{prefix}_seed_ci_high": s_hi,
        f"{prefix}_prompt_ci_low": lo,
        f"{prefix}_prompt_ci_high": hi,
        f"{prefix}_lc_win_rate": lc,
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
                result = _compare(scores, variant, spec.baseline, winrate, step)
                rows.append(
                    {
                        "panel": panel,
                        "variant": variant,
                        "baseline": spec.baseline,
                        "step": step,
                        "paper_claim": spec.paper_claim,
                        **result,
                    }
                )
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


COMPARISON_COLUMNS = [
    "panel",
    "variant",
    "baseline",
    "step",
    "difference",
    "ci_low",
    "ci_high",
    "se",
    "mde",
    "n_prompts",
    "n_seeds",
    "paired_seeds",
    "variance",
    "verdict",
    "paper_claim",
]


def _compare(scores: pd.DataFrame, variant: str, baseline: str, winrate: WinrateConfig, step: str) -> dict:
    return paired_difference(
        scores, variant, baseline, winrate.bootstrap_samples, winrate.confidence, winrate.power, step
    )


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
            "final LC win rate": [f"{v:.3f}" for v in table["final_lc_win_rate"]],
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


def best_fixed_variants(winrates: pd.DataFrame, cfg: Config) -> dict[str, str]:
    """For each Coordinated-PO run, the fixed (paper) variant of the same baseline with the
    highest final win rate (mean over seeds)."""
    last = winrates["step"] == winrates.groupby("run")["step"].transform("max")
    final = winrates[last].groupby("run")["win_rate"].mean()
    panels = cfg.figures.ablation_panels.values()
    out = {}
    for panel in panels:
        for run in panel.runs:
            if run not in cfg.runs or cfg.runs[run].controller is None:
                continue
            fixed = [
                r for p in panels if p.baseline == panel.baseline and p.paper_claim for r in p.runs if r in final.index
            ]
            if fixed:
                out[run] = max(fixed, key=lambda r: final[r])
    return out


def _cost_rows(run: str, frame: pd.DataFrame, timing: pd.DataFrame) -> list[dict]:
    """Per seed: training and controller seconds (of the run's last attempt), the cost fraction,
    the number of measurements and the final weights of a Coordinated-PO run."""
    rows = []
    for seed, per_seed in frame.groupby("seed"):
        times = timing[timing["seed"] == seed].set_index("kind")["value"]
        fit, spent = times.get("fit_seconds", np.nan), times.get("controller_seconds", np.nan)
        weight_rows = per_seed[per_seed["kind"].str.startswith("weight/")]
        last = weight_rows[weight_rows["step"] == weight_rows["step"].max()]
        final_weights = {f"final_{k.removeprefix('weight/')}": v for k, v in last.set_index("kind")["value"].items()}
        rows.append(
            {
                "run": run,
                "seed": seed,
                "fit_seconds": fit,
                "controller_seconds": spent,
                "cost_fraction": spent / fit,
                "measurements": int(times.get("measurements", 0)),
                **final_weights,
            }
        )
    return rows


def coordination_stage(
    cfg: Config,
    *,
    winrates: Path,
    runs: list[str],
    seeds: list[int],
    scores: list[Path],
    records: list[Path],
    timing: list[Path],
    tables: Path,
    figures: Path,
) -> pd.DataFrame:
    """fig6_weights (the weights every scheduled or steered run applied), fig7_copo, and
    ``tables/copo.csv``: each Coordinated-PO run's cost (controller time / training time), its
    final weights, and its comparisons with the baseline and the best fixed variant. ``runs``
    and ``seeds`` name the run and seed of each file in ``scores`` and, in the same order, in
    ``records`` and ``timing``."""
    from .figures import copo_figure, weights_figure

    by_run: dict[str, tuple[list[Path], list[int], list[pd.DataFrame]]] = {}
    for path, times, run, seed in zip(records, timing, runs, seeds, strict=True):
        by_run.setdefault(run, ([], [], []))
        by_run[run][0].append(Path(path))
        by_run[run][1].append(int(seed))
        by_run[run][2].append(pd.read_csv(times).assign(seed=int(seed)))
    run_records = {run: read_records(paths, run_seeds) for run, (paths, run_seeds, _) in by_run.items()}
    run_timing = {run: pd.concat(frames, ignore_index=True) for run, (_, _, frames) in by_run.items()}
    winrate_frame = pd.read_csv(winrates)
    best = best_fixed_variants(winrate_frame, cfg)
    weights_figure(cfg, run_records, Path(figures) / "fig6_weights")
    copo_figure(cfg, winrate_frame, run_records, best, Path(figures) / "fig7_copo")
    score_table = read_scores(scores, runs, seeds)
    rows = [
        row
        for run, frame in run_records.items()
        if run in cfg.runs and cfg.runs[run].controller is not None
        for row in _cost_rows(run, frame, run_timing[run])
    ]
    base_columns = ["run", "seed", "fit_seconds", "controller_seconds", "cost_fraction", "measurements"]
    table = pd.DataFrame(rows, columns=None if rows else base_columns)
    baselines = {run: panel.baseline for panel in cfg.figures.ablation_panels.values() for run in panel.runs}
    for run in table["run"].unique() if not table.empty else []:
        for prefix, other in (("vs_baseline", baselines.get(run)), ("vs_best_fixed", best.get(run))):
            if other is None or other not in set(score_table["run"]):
                continue
            result = _compare(score_table, run, other, cfg.winrate, "final")
            at = table["run"] == run
            numbers = [result["difference"], result["ci_low"], result["ci_high"], result["mde"]]
            table.loc[at, [prefix, f"{prefix}_ci_low", f"{prefix}_ci_high", f"{prefix}_mde"]] = numbers
            table.loc[at, [f"{prefix}_run", f"{prefix}_verdict", f"{prefix}_variance"]] = [
                other,
                result["verdict"],
                result["variance"],
            ]
    write_csv(Path(tables) / "copo.csv", table)
    return table
