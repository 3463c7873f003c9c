"""The run grid's results: win-rate tables with confidence intervals across seeds and over
prompts, and paired comparisons of each variant with its baseline (method.md §4-§6)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from .io import write_csv, write_text
from .judges import bootstrap_ci
from .significance import compare


def read_scores(paths: Iterable[Path]) -> pd.DataFrame:
    """Per-prompt judge scores of every run and seed (``eval/judgements/<run>/seed<s>_scores.csv``)."""
    frames = []
    for path in map(Path, paths):
        frame = pd.read_csv(path)
        frames.append(frame.assign(run=path.parent.name, seed=int(path.name.split("_")[0].removeprefix("seed"))))
    return pd.concat(frames, ignore_index=True)


def seed_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """Student-t interval of the mean across seeds (NaN with a single seed)."""
    if len(values) < 2:
        return float("nan"), float("nan")
    half = scipy_stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


def _summary(scores: pd.DataFrame, step: int, wr_cfg: dict[str, Any], prefix: str) -> dict[str, float]:
    at = scores[scores["step"] == step]
    per_seed = at.groupby("seed")["score"].mean().to_numpy()
    per_prompt = at.groupby("prompt_index")["score"].mean().to_numpy()  # averaged over seeds
    mean, lo, hi = bootstrap_ci(per_prompt, wr_cfg["bootstrap_samples"], wr_cfg["confidence"], seed=step)
    s_lo, s_hi = seed_interval(per_seed, wr_cfg["confidence"])
    return {f"{prefix}_step": step, f"{prefix}_win_rate": mean, f"{prefix}_seed_ci_low": s_lo, f"{prefix}_seed_ci_high": s_hi,
            f"{prefix}_prompt_ci_low": lo, f"{prefix}_prompt_ci_high": hi}


def panel_order(panels: dict[str, dict], runs: Iterable[str]) -> list[str]:
    """Runs in figure-4 order (each panel's baseline, then its variants), then any others."""
    ordered = [name for spec in panels.values() for name in (spec["baseline"], *spec["runs"])]
    return list(dict.fromkeys([*ordered, *sorted(runs)]))


def winrate_table(scores: pd.DataFrame, runs: dict[str, dict], wr_cfg: dict[str, Any], order: list[str] | None = None) -> pd.DataFrame:
    """Per run: the final and the best judged step's win rate (mean over seeds), with a 95%
    t-interval across seeds and a bootstrap interval over prompts."""
    rows = []
    for run, frame in scores.groupby("run", sort=False):
        curve = frame.groupby("step")["score"].mean()
        row = {"run": run, "label": runs.get(run, {}).get("label", run), "objective": runs.get(run, {}).get("objective", ""), "n_seeds": frame["seed"].nunique()}
        row.update(_summary(frame, int(curve.index.max()), wr_cfg, "final"))
        row.update(_summary(frame, int(curve.idxmax()), wr_cfg, "best"))
        rows.append(row)
    rank = {name: i for i, name in enumerate(order or runs)}
    return pd.DataFrame(rows).sort_values("run", key=lambda s: s.map(rank)).reset_index(drop=True)


def score_matrix(scores: pd.DataFrame, run: str, step: str = "final") -> pd.DataFrame:
    """A run's per-prompt scores at its final (or best: highest mean) judged step, as a
    seeds x prompts table."""
    frame = scores[scores["run"] == run]
    chosen = frame["step"].max() if step == "final" else frame.groupby("step")["score"].mean().idxmax()
    return frame[frame["step"] == chosen].pivot_table(index="seed", columns="prompt_index", values="score")


def paired_difference(scores: pd.DataFrame, variant: str, baseline: str, wr_cfg: dict[str, Any], step: str = "final") -> dict[str, Any]:
    """Win-rate difference variant - baseline at each run's final (or best) step, on the prompts
    both were judged on, with a hierarchical bootstrap over seeds and prompts (seeds paired when
    the two runs share them), its MDE at ``wr_cfg['power']`` and the four-way verdict
    (:mod:`podyn.significance`)."""
    a, b = score_matrix(scores, variant, step), score_matrix(scores, baseline, step)
    prompts = a.columns.intersection(b.columns)
    shared = a.index.intersection(b.index)
    paired = len(shared) > 0
    if paired:
        a, b = a.loc[shared], b.loc[shared]
    a, b = a[prompts].to_numpy(), b[prompts].to_numpy()
    result = compare(a, b, paired, wr_cfg["bootstrap_samples"], wr_cfg["confidence"], wr_cfg.get("power", 0.8), seed=0)
    return {k: v for k, v in vars(result).items()}


def comparisons(scores: pd.DataFrame, panels: dict[str, dict], wr_cfg: dict[str, Any]) -> pd.DataFrame:
    """Every panel's variants against the panel's baseline, at the final and the best step."""
    rows = []
    present = set(scores["run"])
    for panel, spec in panels.items():
        if spec["baseline"] not in present:
            continue
        for variant in (r for r in spec["runs"] if r in present):
            for step in ("final", "best"):
                result = paired_difference(scores, variant, spec["baseline"], wr_cfg, step)
                rows.append({"panel": panel, "variant": variant, "baseline": spec["baseline"], "step": step,
                             "paper_claim": spec.get("paper_claim", True), **result})
    columns = ["panel", "variant", "baseline", "step", "difference", "ci_low", "ci_high", "se", "mde", "n_prompts", "n_seeds",
               "paired_seeds", "variance", "verdict", "paper_claim"]
    return pd.DataFrame(rows, columns=columns)


def _fmt(mean: float, low: float, high: float) -> str:
    return f"{mean:.3f}" if np.isnan(low) else f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def write_tables(table: pd.DataFrame, out_stem: Path) -> None:
    """``winrates.csv`` (every number), ``winrates.md`` and ``winrates.tex`` (formatted)."""
    write_csv(out_stem.with_suffix(".csv"), table)
    display = pd.DataFrame({
        "run": table["run"],
        "final win rate (seed CI)": [_fmt(*r) for r in table[["final_win_rate", "final_seed_ci_low", "final_seed_ci_high"]].to_numpy()],
        "final (prompt CI)": [_fmt(*r) for r in table[["final_win_rate", "final_prompt_ci_low", "final_prompt_ci_high"]].to_numpy()],
        "best win rate (prompt CI)": [_fmt(*r) for r in table[["best_win_rate", "best_prompt_ci_low", "best_prompt_ci_high"]].to_numpy()],
        "best step": table["best_step"],
        "seeds": table["n_seeds"],
    })
    write_text(out_stem.with_suffix(".md"), display.to_markdown(index=False) + "\n")
    write_text(out_stem.with_suffix(".tex"), display.to_latex(index=False, escape=True))


def ablation_stage(cfg: dict[str, Any], winrates_csv: Path, score_files: list[Path], tables_dir: Path, figures_dir: Path) -> None:
    """``tables/winrates.{csv,md,tex}``, ``tables/comparisons.csv`` and figure 4."""
    from .figures import ablation_figure

    scores = read_scores(score_files)
    order = panel_order(cfg["figures"]["ablation_panels"], cfg["runs"])
    write_tables(winrate_table(scores, cfg["runs"], cfg["winrate"], order), Path(tables_dir) / "winrates")
    write_csv(Path(tables_dir) / "comparisons.csv", comparisons(scores, cfg["figures"]["ablation_panels"], cfg["winrate"]))
    ablation_figure(cfg, winrates_csv, figures_dir)


def best_fixed_variants(winrates: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, str]:
    """For each Coordinated-PO run, the fixed (paper) variant of the same baseline with the
    highest final win rate (mean over seeds)."""
    final = winrates[winrates["step"] == winrates.groupby("run")["step"].transform("max")].groupby("run")["win_rate"].mean()
    out = {}
    for panel in cfg["figures"]["ablation_panels"].values():
        for run in panel["runs"]:
            if cfg["runs"].get(run, {}).get("controller") is None:
                continue
            fixed = [r for p in cfg["figures"]["ablation_panels"].values() if p["baseline"] == panel["baseline"] and p.get("paper_claim", True)
                     for r in p["runs"] if r in final.index]
            if fixed:
                out[run] = max(fixed, key=lambda r: final[r])
    return out


def coordination_stage(cfg: dict[str, Any], winrates_csv: Path, score_files: list[Path], record_files: list[Path], tables_dir: Path, figures_dir: Path) -> pd.DataFrame:
    """fig6_weights (the weights every scheduled or steered run applied), fig7_copo, and
    ``tables/copo.csv``: each Coordinated-PO run's cost (controller time / training time), its
    final weights, and its comparisons with the baseline and the best fixed variant."""
    from .figures import copo_figure, read_records, weights_figure

    by_run: dict[str, list[Path]] = {}
    for path in map(Path, record_files):
        by_run.setdefault(path.parent.parent.name, []).append(path)
    records = {run: read_records(paths) for run, paths in by_run.items()}
    winrates = pd.read_csv(winrates_csv)
    best = best_fixed_variants(winrates, cfg)
    weights_figure(cfg, records, Path(figures_dir) / "fig6_weights")
    copo_figure(cfg, winrates, records, best, Path(figures_dir) / "fig7_copo")
    scores = read_scores(score_files)
    rows = []
    for run, frame in records.items():
        if cfg["runs"].get(run, {}).get("controller") is None:
            continue
        for seed, per_seed in frame.groupby("seed"):
            kinds = per_seed.groupby("kind")["value"]
            fit, spent = kinds.sum().get("run/fit_seconds", np.nan), kinds.sum().get("run/controller_seconds", np.nan)
            last = per_seed[per_seed["step"] == per_seed[per_seed["kind"].str.startswith("weight/")]["step"].max()]
            final_weights = {f"final_{k.removeprefix('weight/')}": v for k, v in last.set_index("kind")["value"].items() if k.startswith("weight/")}
            rows.append({"run": run, "seed": seed, "fit_seconds": fit, "controller_seconds": spent, "cost_fraction": spent / fit,
                         "measurements": int((per_seed["kind"] == "controller/seconds").sum()), **final_weights})
    table = pd.DataFrame(rows, columns=None if rows else ["run", "seed", "fit_seconds", "controller_seconds", "cost_fraction", "measurements"])
    baselines = {run: panel["baseline"] for panel in cfg["figures"]["ablation_panels"].values() for run in panel["runs"]}
    for run in table["run"].unique() if not table.empty else []:
        for prefix, other in (("vs_baseline", baselines.get(run)), ("vs_best_fixed", best.get(run))):
            if other is None or other not in set(scores["run"]):
                continue
            result = paired_difference(scores, run, other, cfg["winrate"], "final")
            table.loc[table["run"] == run, [prefix, f"{prefix}_ci_low", f"{prefix}_ci_high", f"{prefix}_mde"]] = \
                [result["difference"], result["ci_low"], result["ci_high"], result["mde"]]
            table.loc[table["run"] == run, [f"{prefix}_run", f"{prefix}_verdict", f"{prefix}_variance"]] = [other, result["verdict"], result["variance"]]
    write_csv(Path(tables_dir) / "copo.csv", table)
    return table
