"""Print the science tables of a results directory as Markdown: the comparisons with their MDE and
verdict, Coordinated PO's cost, weights and paired differences, and the claim robustness map.

    python bench/science_tables.py results/<experiment> [--panels c i j] [--step final]

Reads tables/comparisons.csv, tables/copo.csv, tables/claims_robustness.csv and eval/winrates.csv
where present; prints nothing for a table that is absent.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def ci(row: pd.Series, name: str = "difference") -> str:
    """``difference [ci_low, ci_high]`` of a row: columns ``name``, ``<name>_ci_low``, ``<name>_ci_high``
    (``ci_low``, ``ci_high`` for ``difference``)."""
    prefix = "" if name == "difference" else f"{name}_"
    diff, low, high = row[name], row[f"{prefix}ci_low"], row[f"{prefix}ci_high"]
    return f"{diff:+.3f} [{low:+.3f}, {high:+.3f}]"


def run_winrates(root: Path) -> pd.DataFrame | None:
    """tables/winrates.csv indexed by run: final and best win rate (mean over seeds) and steps."""
    path = root / "tables" / "winrates.csv"
    return pd.read_csv(path).set_index("run") if path.exists() else None


def comparisons(root: Path, panels: list[str] | None, step: str) -> None:
    path = root / "tables" / "comparisons.csv"
    if not path.exists():
        return
    table = pd.read_csv(path)
    table = table[table["step"] == step] if step != "all" else table
    if panels:
        table = table[table["panel"].isin(panels)]
    rates = run_winrates(root)
    print(f"## {path} (step: {step})\n")
    print("| panel | variant | baseline | step | win rate (at step) | difference [95% CI] | MDE | seeds | verdict |")
    print("|---|---|---|---|---:|---|---:|---:|---|")
    for _, row in table.iterrows():
        rate = ""
        if rates is not None and row["variant"] in rates.index:
            at = rates.loc[row["variant"]]
            rate = f"{at[f'{row.step}_win_rate']:.3f} ({int(at[f'{row.step}_step'])})"
        print(
            f"| {row['panel']} | {row['variant']} | {row['baseline']} | {row['step']} | {rate} | {ci(row)} "
            f"| {row['mde']:.3f} | {row['n_seeds']} | {row['verdict']} |"
        )
    print(
        f"\nMDE at step {step}: {table['mde'].min():.3f} to {table['mde'].max():.3f}; variance: "
        + "; ".join(sorted(table["variance"].unique()))
        + "\n"
    )


def copo(root: Path) -> None:
    path = root / "tables" / "copo.csv"
    if not path.exists():
        return
    table = pd.read_csv(path)
    if table.empty:
        return
    print(f"## {path}\n")
    print(
        "| run | seed | cost fraction | measurements | final weights | vs baseline [95% CI] | MDE | verdict "
        "| vs best fixed [95% CI] | verdict |"
    )
    print("|---|---:|---:|---:|---|---|---:|---|---|---|")
    for _, row in table.iterrows():
        weights = ", ".join(
            f"{c.upper()} {row[f'final_{c}']:.2f}"
            for c in ("pos", "neg", "top", "mid", "bot")
            if f"final_{c}" in row and abs(row[f"final_{c}"] - 1.0) > 1e-12
        )
        best = f"{row['vs_best_fixed_run']} {ci(row, 'vs_best_fixed')}"
        cells = [
            row["run"],
            row["seed"],
            f"{row['cost_fraction']:.1%}",
            row["measurements"],
            weights or "all 1",
            ci(row, "vs_baseline"),
            f"{row['vs_baseline_mde']:.3f}",
            row["vs_baseline_verdict"],
            best,
            row["vs_best_fixed_verdict"],
        ]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    print()


def robustness(root: Path) -> None:
    path = root / "tables" / "claims_robustness.csv"
    if not path.exists():
        return
    table = pd.read_csv(path)
    print(f"## {path}\n")
    counts = table.pivot_table(index="setting", columns="verdict", values="claim", aggfunc="count", fill_value=0)
    counts = counts.reindex(table["setting"].unique())
    print("| setting | " + " | ".join(counts.columns) + " |")
    print("|---|" + "---:|" * len(counts.columns))
    for setting, row in counts.iterrows():
        print(f"| {setting} | " + " | ".join(str(int(v)) for v in row) + " |")
    print("\n| claim | threshold | holds in | fails in | inconclusive in | statistic (default) [CI] |")
    print("|---|---|---:|---:|---:|---|")
    for claim, rows in table.groupby("claim", sort=False):
        verdicts = rows["verdict"].value_counts()
        default = rows[rows["setting"] == "default"].iloc[0] if (rows["setting"] == "default").any() else rows.iloc[0]
        print(
            f"| {claim} | `{default['threshold']}` | {verdicts.get('holds', 0)} | {verdicts.get('fails', 0)} "
            f"| {verdicts.get('inconclusive', 0)} | {default['statistic']:.3f} "
            f"[{default['ci_low']:.3f}, {default['ci_high']:.3f}] |"
        )
    print(
        f"\n{len(counts)} settings x {table['claim'].nunique()} claims, seeds per setting: "
        f"{sorted(table['n_seeds'].unique().tolist())}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="results/<experiment>")
    parser.add_argument("--panels", nargs="*", help="comparison panels to print (default: all)")
    parser.add_argument("--step", default="final", help="final, best or all")
    args = parser.parse_args()
    comparisons(args.root, args.panels, args.step)
    copo(args.root)
    robustness(args.root)


if __name__ == "__main__":
    main()
