"""The paper's figures, drawn with seaborn from cached tables (no retraining):

* fig1_dpo_dynamics / fig2_ppo_dynamics: G over training, panels (a) TOT, (b) POS/NEG,
  (c) TOP/MID/BOT, on a symmetric-log axis so that negative values stay visible;
* fig3_ppo_advantages: mean raw advantage of the TOP/MID/BOT token groups per PPO iteration;
* fig5_grad_magnitudes: per-mini-batch gradient L2 norms, IQR outliers red, others blue;
* fig6_weights / fig7_copo: the component weights each run applied, and Coordinated PO against
  its baseline and the best fixed variant (the ``coordination`` stage);
* claims_robustness: the claims x settings heatmap (the ``claims-robustness`` stage).

Several seeds are drawn as their mean with a 95% confidence band.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .config import Config, FiguresConfig  # noqa: E402
from .io import atomic_path  # noqa: E402
from .results import read_records  # noqa: E402

PANELS = (("(a) TOT", ["tot"]), ("(b) POS / NEG", ["pos", "neg"]), ("(c) TOP / MID / BOT", ["top", "mid", "bot"]))
PALETTE = {
    "tot": "black",
    "pos": "tab:blue",
    "neg": "tab:red",
    "top": "tab:purple",
    "mid": "tab:orange",
    "bot": "tab:green",
}


def save(fig: plt.Figure, stem: Path, formats: Iterable[str]) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    for fmt in formats:
        with atomic_path(stem.with_suffix(f".{fmt}")) as tmp:
            fig.savefig(tmp, format=fmt, bbox_inches="tight", dpi=150)
    plt.close(fig)


def symlog_threshold(values: pd.Series, setting: float | None) -> float:
    """The linear range of the symlog axis: the configured value, else the 10th percentile of |G|."""
    if setting:
        return float(setting)
    nonzero = values.abs()[values.abs() > 0]
    return float(np.quantile(nonzero, 0.1)) if len(nonzero) else 1.0


def dynamics_figure(
    table: pd.DataFrame, title: str, stem: Path, fig_cfg: FiguresConfig, xlabel: str = "training step"
) -> None:
    data = table[table["layer"] == "all"] if "layer" in table else table
    threshold = symlog_threshold(data["G"], fig_cfg.symlog_linthresh)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), sharey=True)
    for ax, (panel, components) in zip(axes, PANELS):
        subset = data[data["component"].isin(components)].assign(component=lambda d: d["component"].str.upper())
        sns.lineplot(
            subset,
            x="step",
            y="G",
            hue="component",
            errorbar=("ci", 95),
            marker="o",
            ax=ax,
            palette={c.upper(): PALETTE[c] for c in components},
            hue_order=[c.upper() for c in components],
        )
        ax.axhline(0.0, color="grey", lw=0.8, ls=":")
        ax.set_yscale("symlog", linthresh=threshold)
        ax.set_title(panel)
        ax.set_xlabel(xlabel)
        ax.legend(title=None, fontsize=8)
    axes[0].set_ylabel(r"$\mathcal{G}$ (symlog)")
    fig.suptitle(title)
    save(fig, stem, fig_cfg.formats)


def advantages_figure(records: pd.DataFrame, stem: Path, fig_cfg: FiguresConfig) -> None:
    data = records[records["kind"].str.startswith("raw_advantage/")].copy()
    data["group"] = data["kind"].str.split("/").str[1].str.upper()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    sns.lineplot(
        data,
        x="step",
        y="value",
        hue="group",
        hue_order=["TOP", "MID", "BOT"],
        errorbar=("ci", 95),
        ax=ax,
        palette={g.upper(): PALETTE[g] for g in ("top", "mid", "bot")},
    )
    ax.axhline(0.0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("PPO iteration")
    ax.set_ylabel("mean raw advantage")
    ax.set_title("Average (raw) advantages of TOP / MID / BOT tokens")
    ax.legend(title=None)
    save(fig, stem, fig_cfg.formats)


def iqr_outliers(values: pd.Series) -> pd.Series:
    """True below Q1 - 1.5 IQR or above Q3 + 1.5 IQR."""
    q1, q3 = values.quantile(0.25), values.quantile(0.75)
    spread = q3 - q1
    return (values < q1 - 1.5 * spread) | (values > q3 + 1.5 * spread)


def grad_norm_figure(norms: dict[str, pd.DataFrame], stem: Path, fig_cfg: FiguresConfig) -> None:
    fig, axes = plt.subplots(1, len(norms), figsize=(5.5 * len(norms), 3.6))
    for ax, (name, frame) in zip(np.atleast_1d(axes), norms.items()):
        data = frame[frame["kind"] == "grad_norm"].copy()
        data["outlier"] = iqr_outliers(data["value"])
        sns.scatterplot(
            data,
            x="step",
            y="value",
            hue="outlier",
            palette={False: "tab:blue", True: "tab:red"},
            s=10,
            linewidth=0,
            ax=ax,
        )
        ax.set_title(f"{name}: {int(data['outlier'].sum())} of {len(data)} mini-batches are IQR outliers")
        ax.set_xlabel("training step" if name.upper().startswith("DPO") else "PPO iteration")
        ax.set_ylabel("gradient L2 norm")
        ax.legend(title="outlier", fontsize=8)
    save(fig, stem, fig_cfg.formats)


def dynamics_figures(
    cfg: Config,
    *,
    dpo: Path,
    ppo: Path,
    seeds: Sequence[int],
    dpo_records: Sequence[Path],
    ppo_records: Sequence[Path],
    out: Path,
) -> None:
    """Figures 1, 2, 3 and 5 from the cached dynamics tables (``dpo``, ``ppo``) and the two
    runs' per-step records, one file per seed in ``seeds``."""
    fig_cfg = cfg.figures
    sns.set_theme(style=fig_cfg.style, context="paper")
    out_dir = Path(out)
    dynamics_figure(pd.read_csv(dpo), "DPO learning dynamics", out_dir / "fig1_dpo_dynamics", fig_cfg)
    dynamics_figure(
        pd.read_csv(ppo), "PPO learning dynamics", out_dir / "fig2_ppo_dynamics", fig_cfg, xlabel="PPO iteration"
    )
    ppo_frame = read_records(ppo_records, seeds)
    advantages_figure(ppo_frame, out_dir / "fig3_ppo_advantages", fig_cfg)
    grad_norm_figure(
        {"DPO": read_records(dpo_records, seeds), "PPO": ppo_frame}, out_dir / "fig5_grad_magnitudes", fig_cfg
    )


def winrate_curves(ax: plt.Axes, winrates: pd.DataFrame, runs: list[str], labels: dict[str, str]) -> None:
    """Win rate against SFT over training: the mean over seeds with a 95% band across seeds,
    or, with a single seed, the bootstrap band over prompts."""
    palette = dict(zip(runs, sns.color_palette("deep", len(runs))))
    for run in runs:
        data = winrates[winrates["run"] == run]
        if data.empty:
            continue
        style = {"color": palette[run], "lw": 2.2 if run == runs[0] else 1.4, "ls": "-" if run == runs[0] else "--"}
        if data["seed"].nunique() > 1:
            sns.lineplot(data, x="step", y="win_rate", errorbar=("ci", 95), ax=ax, label=labels.get(run, run), **style)
        else:
            ax.plot(data["step"], data["win_rate"], label=labels.get(run, run), marker="o", ms=3, **style)
            ax.fill_between(data["step"], data["ci_low"], data["ci_high"], color=palette[run], alpha=0.15)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_ylabel("win rate vs SFT")
    ax.legend(fontsize=7, title=None)


def ablation_figure(cfg: Config, winrates_csv: Path, out_dir: Path) -> None:
    """Figure 4: one panel per entry of ``figures.ablation_panels``, each with its baseline."""
    fig_cfg = cfg.figures
    sns.set_theme(style=fig_cfg.style, context="paper")
    winrates = pd.read_csv(winrates_csv)
    labels = run_labels(cfg)
    # an experiment that selects part of the grid draws only the panels with a variant it ran; one
    # that ran no variant (only the baselines) draws the panels of its baselines
    present = set(winrates["run"])
    panels = {key: panel for key, panel in fig_cfg.ablation_panels.items() if present.intersection(panel.runs)}
    if not panels:
        panels = {key: panel for key, panel in fig_cfg.ablation_panels.items() if panel.baseline in present}
    panels = panels or dict(fig_cfg.ablation_panels)
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, (key, panel) in zip(axes.flat, panels.items()):
        winrate_curves(ax, winrates, [panel.baseline, *panel.runs], labels)
        ax.set_title(f"({key}) {panel.title}")
        baseline = cfg.runs.get(panel.baseline)
        ax.set_xlabel("training step" if baseline is not None and baseline.objective == "dpo" else "PPO iteration")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle("Performance under ablation and coordination (gold-judged win rate against SFT)")
    fig.tight_layout()
    save(fig, Path(out_dir) / "fig4_ablations", fig_cfg.formats)


def run_labels(cfg: Config) -> dict[str, str]:
    """Every run's legend label (its name where it has none)."""
    return {name: name if run.label is None else run.label for name, run in cfg.runs.items()}


def _xlabel(cfg: Config, run: str) -> str:
    spec = cfg.runs.get(run)
    return "training step" if spec is not None and spec.objective == "dpo" else "PPO iteration"


def _varying(records: pd.DataFrame) -> list[str]:
    """The components whose weight is not 1 at some step."""
    weights = records[records["kind"].str.startswith("weight/")]
    return [k.removeprefix("weight/") for k, v in weights.groupby("kind")["value"] if (v != 1.0).any()]


def weight_curves(ax: plt.Axes, records: pd.DataFrame, title: str, xlabel: str) -> None:
    """The component weights a run applied at each step (mean over seeds, band: range across seeds)."""
    data = records[records["kind"].isin([f"weight/{c}" for c in _varying(records)])]
    data = data.assign(component=data["kind"].str.removeprefix("weight/").str.upper())
    if data.empty:
        ax.text(0.5, 0.5, "all weights 1", ha="center", va="center", transform=ax.transAxes)
    else:
        hue = [c for c in ("POS", "NEG", "TOP", "MID", "BOT") if c in set(data["component"])]
        # min to max across seeds; no bootstrap over thousands of rows
        errorbar = ("pi", 100) if data["seed"].nunique() > 1 else None
        palette = {c: PALETTE[c.lower()] for c in hue}
        sns.lineplot(
            data,
            x="step",
            y="value",
            hue="component",
            hue_order=hue,
            errorbar=errorbar,
            ax=ax,
            palette=palette,
            lw=1.2,
        )
        ax.legend(title=None, fontsize=7)
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("weight")


def weights_figure(cfg: Config, records: dict[str, pd.DataFrame], stem: Path) -> None:
    """fig6_weights: the weights every run with a schedule or a controller applied, one panel per run."""
    runs = [r for r, frame in records.items() if _varying(frame)]
    if not runs:
        runs = list(records)[:1]
    labels = run_labels(cfg)
    cols = min(4, len(runs))
    rows = -(-len(runs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    for ax, run in zip(axes.flat, runs):
        weight_curves(ax, records[run], labels.get(run, run), _xlabel(cfg, run))
    for ax in list(axes.flat)[len(runs) :]:
        ax.set_visible(False)
    fig.suptitle("Component weights applied at each step")
    fig.tight_layout()
    save(fig, stem, cfg.figures.formats)


def copo_figure(
    cfg: Config, winrates: pd.DataFrame, records: dict[str, pd.DataFrame], best_fixed: dict[str, str], stem: Path
) -> None:
    """fig7_copo: for each Coordinated-PO run, its win rate beside its baseline's and the best
    fixed variant's, and the weights it chose over training."""
    labels = run_labels(cfg)
    copo = [
        (panel.baseline, run)
        for panel in cfg.figures.ablation_panels.values()
        for run in panel.runs
        if run in cfg.runs and cfg.runs[run].controller is not None and run in records
    ]
    fig, axes = plt.subplots(max(1, len(copo)), 2, figsize=(10, 3.4 * max(1, len(copo))), squeeze=False)
    for (ax_w, ax_c), (baseline, run) in zip(axes, copo):
        shown = [baseline, run, *([best_fixed[run]] if best_fixed.get(run) else [])]
        winrate_curves(ax_w, winrates, shown, labels)
        xlabel = _xlabel(cfg, run)
        ax_w.set_title(f"{labels.get(run, run)} vs {baseline} and the best fixed variant", fontsize=9)
        ax_w.set_xlabel(xlabel)
        weight_curves(ax_c, records[run], f"weights chosen by {labels.get(run, run)}", xlabel)
    fig.tight_layout()
    save(fig, stem, cfg.figures.formats)


def robustness_heatmap(table: pd.DataFrame, stem: Path, fig_cfg: FiguresConfig) -> None:
    """Claims x settings, coloured by verdict (holds / inconclusive / fails)."""
    from matplotlib.colors import ListedColormap

    codes = {"fails": 0, "inconclusive": 1, "holds": 2}
    grid = table.assign(code=table["verdict"].map(codes)).pivot(index="claim", columns="setting", values="code")
    grid = grid.reindex(index=list(dict.fromkeys(table["claim"])), columns=list(dict.fromkeys(table["setting"])))
    fig, ax = plt.subplots(figsize=(4.0 + 0.8 * grid.shape[1], 1.5 + 0.45 * grid.shape[0]))
    colours = ListedColormap(["#d7301f", "#fdd49e", "#1a9850"])
    ax.imshow(grid.to_numpy(float), cmap=colours, vmin=0, vmax=2, aspect="auto")
    ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(grid.shape[0]), grid.index, fontsize=8)
    names = {v: k for k, v in codes.items()}
    for (i, j), code in np.ndenumerate(grid.to_numpy(float)):
        if not np.isnan(code):
            ax.text(j, i, names[int(code)][0].upper(), ha="center", va="center", fontsize=7)
    n_seeds = int(table["n_seeds"].min()) if len(table) else 0
    ax.set_title(f"Claims across settings (H holds, F fails, I inconclusive; {n_seeds} seed(s))", fontsize=9)
    fig.tight_layout()
    save(fig, stem, fig_cfg.formats)
