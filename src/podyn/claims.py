"""The paper's qualitative claims, each computed from this run's data as a statistic with a
threshold and a verdict. A claim that does not reproduce is reported as such."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .config import ClaimsConfig, Config, RobustnessSetting
from .io import write_csv, write_text
from .results import read_records
from .statistics import seed_interval


@dataclass
class Claim:
    id: str
    claim: str
    statistic: str
    value: float
    threshold: str
    holds: bool


def _series(table: pd.DataFrame, component: str) -> pd.DataFrame:
    data = table[(table["component"] == component) & (table.get("layer", "all") == "all")]
    return data.sort_values(["seed", "step"])


def fraction_positive(table: pd.DataFrame, component: str) -> float:
    return float((_series(table, component)["G"] > 0).mean())


def mean_sign_changes(table: pd.DataFrame, component: str) -> float:
    """Sign changes of G between consecutive checkpoints, averaged over seeds."""
    per_seed = (
        _series(table, component)
        .groupby("seed")["G"]
        .apply(lambda g: int((np.diff(np.sign(g.to_numpy())) != 0).sum()))
    )
    return float(per_seed.mean())


def sign_consistency(table: pd.DataFrame, component: str) -> float:
    """|2 * fraction positive - 1|: 1 when G never changes sign, 0 when it is positive half the time."""
    return abs(2 * fraction_positive(table, component) - 1)


def paired(table: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    return _series(table, a).merge(_series(table, b), on=["seed", "step"], suffixes=(f"_{a}", f"_{b}"))


def group_shares(table: pd.DataFrame) -> pd.Series:
    """Mean share of sum |G| held by each of TOP, MID and BOT."""
    wide = table[table.get("layer", "all") == "all"].pivot_table(
        index=["seed", "step"], columns="component", values="G"
    )
    magnitude = wide[["top", "mid", "bot"]].abs()
    return magnitude.div(magnitude.sum(axis=1), axis=0).mean()


def dynamics_claims(dpo: pd.DataFrame, ppo: pd.DataFrame, ppo_records: pd.DataFrame, th: ClaimsConfig) -> list[Claim]:
    claims = []
    stable = th.stable_fraction
    f_dpo, f_ppo = fraction_positive(dpo, "tot"), fraction_positive(ppo, "tot")
    claims.append(
        Claim(
            "dpo_stable_target",
            "DPO follows stable targets (G(TOT) > 0: updates move toward the final responses).",
            "fraction of DPO checkpoints with G(TOT) > 0",
            f_dpo,
            f">= {stable}",
            f_dpo >= stable,
        )
    )
    changes = mean_sign_changes(ppo, "tot")
    claims.append(
        Claim(
            "ppo_sign_changes",
            "PPO follows dynamic targets: G(TOT) changes sign over training.",
            "sign changes of PPO G(TOT) between consecutive checkpoints (mean over seeds)",
            changes,
            ">= 1",
            changes >= 1,
        )
    )
    claims.append(
        Claim(
            "ppo_less_aligned_than_dpo",
            "PPO balances exploration and exploitation, DPO is supervised-like.",
            "fraction of PPO checkpoints with G(TOT) > 0 minus DPO's",
            f_ppo - f_dpo,
            "< 0",
            f_ppo < f_dpo,
        )
    )
    both = paired(dpo, "pos", "neg")
    offset = float((np.sign(both["G_pos"]) != np.sign(both["G_neg"])).mean())
    claims.append(
        Claim(
            "dpo_pos_neg_offset",
            "In DPO, positive and negative learning mutually offset each other.",
            "fraction of DPO checkpoints where G(POS) and G(NEG) have opposite signs",
            offset,
            f">= {th.offset_fraction}",
            offset >= th.offset_fraction,
        )
    )
    share = float((both["G_neg"].abs() / (both["G_pos"].abs() + both["G_neg"].abs())).median())
    low, high = th.joint_share_range
    claims.append(
        Claim(
            "dpo_pos_neg_joint",
            "In DPO, positive and negative learning jointly shape the learning targets.",
            "median share of NEG in |G(POS)| + |G(NEG)| over DPO checkpoints",
            share,
            f"in [{low}, {high}]",
            low <= share <= high,
        )
    )
    c_pos, c_neg = sign_consistency(ppo, "pos"), sign_consistency(ppo, "neg")
    claims.append(
        Claim(
            "ppo_neg_explores",
            "In PPO, negative learning supports exploration rather than determining the targets.",
            "sign consistency |2 P(G>0) - 1| of PPO G(NEG) minus that of G(POS)",
            c_neg - c_pos,
            "< 0",
            c_neg < c_pos,
        )
    )
    for name, table in (("dpo", dpo), ("ppo", ppo)):
        shares = group_shares(table)
        spread = float(shares.max() - shares.min())
        detail = ", ".join(f"{g.upper()} {shares[g]:.2f}" for g in ("top", "mid", "bot"))
        claims.append(
            Claim(
                f"{name}_groups_differ",
                f"In {name.upper()}, the loss-reweighting groups TOP, MID and BOT play different roles.",
                f"max - min mean share of |G| over TOP/MID/BOT ({detail})",
                spread,
                f">= {th.group_spread}",
                spread >= th.group_spread,
            )
        )
    adv = ppo_records[ppo_records["kind"].str.startswith("abs_raw_advantage/")]
    magnitude = adv.groupby("kind")["value"].mean()  # over iterations (and seeds) of each group's mean |A|
    top, mid, bot = (float(magnitude.get(f"abs_raw_advantage/{g}", np.nan)) for g in ("top", "mid", "bot"))
    claims.append(
        Claim(
            "ppo_advantage_order",
            "Loss reweighting in PPO follows |advantage|: TOP tokens carry the largest raw advantages (figure 3).",
            f"mean |raw advantage|: TOP {top:.3f}, MID {mid:.3f}, BOT {bot:.3f}",
            top - bot,
            "TOP > MID > BOT",
            top > mid > bot,
        )
    )
    return claims


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _variance(row) -> str:
    return str(getattr(row, "variance", "prompts"))


def _mde(row) -> str:
    return f"{row.mde:.3f}" if hasattr(row, "mde") else "n/a"


def ablation_claims(comparisons: pd.DataFrame) -> list[Claim]:
    """One claim per variant, from its paired comparison with its baseline at the final step:
    an ablation ("w/o") is claimed to hurt, a coordinated variant to help."""
    claims = []
    final = comparisons[comparisons["step"] == "final"]
    if "paper_claim" in final:  # Coordinated PO is podyn's, not a claim of the paper
        final = final[final["paper_claim"].astype(str).str.lower() == "true"]
    for row in final.itertuples():
        ablation = "_wo_" in row.variant
        expected = "worse" if ablation else "better"
        text = (
            f"Removing a component ({row.variant}) hurts {row.baseline.upper()}."
            if ablation
            else f"The coordinated variant {row.variant} beats {row.baseline.upper()}."
        )
        claims.append(
            Claim(
                f"{row.variant}_vs_{row.baseline}",
                text,
                f"final win rate minus {row.baseline}'s over {_variance(row)} [{row.ci_low:+.3f}, "
                f"{row.ci_high:+.3f}], MDE {_mde(row)}: {row.verdict}",
                row.difference,
                f"95% CI {'< 0' if ablation else '> 0'}",
                row.verdict == expected,
            )
        )
    return claims


def write_claims(claims: list[Claim], md_out: Path, csv_out: Path, preamble: str = "") -> None:
    frame = pd.DataFrame([asdict(c) for c in claims])
    write_csv(csv_out, frame)
    lines = [
        "# Paper claims, computed from this run",
        "",
        preamble,
        "",
        f"{int(frame['holds'].sum())} of {len(frame)} claims hold.",
        "",
        "| id | claim | statistic | value | threshold | holds |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {c.id} | {_cell(c.claim)} | {_cell(c.statistic)} | {c.value:.3g} | {_cell(c.threshold)} | "
        f"{'yes' if c.holds else '**no**'} |"
        for c in claims
    ]
    write_text(md_out, "\n".join(lines) + "\n")


def claims_report(
    cfg: Config,
    *,
    dpo: Path,
    ppo: Path,
    seeds: Sequence[int],
    ppo_records: Sequence[Path],
    out: Path,
    csv_out: Path,
    comparisons: Path | None = None,
) -> list[Claim]:
    """``claims.md`` (``out``) and ``claims.csv`` from the dynamics tables of the DPO and PPO
    runs, the PPO run's records (one file per seed in ``seeds``) and the paired comparisons."""
    claims = dynamics_claims(pd.read_csv(dpo), pd.read_csv(ppo), read_records(ppo_records, seeds), cfg.claims)
    if comparisons is not None:
        table = pd.read_csv(comparisons)
        if not table.empty:
            claims += ablation_claims(table)
    preamble = (
        "Each claim from the paper's abstract and captions is turned into a statistic of this experiment's "
        "gradient-alignment tables (`dynamics/*.csv`) and PPO records, pooled over seeds, and compared with "
        "the threshold in the config's `claims` section; the ablation claims compare each variant's final "
        "win rate with its baseline's over seeds and prompts (`tables/comparisons.csv`, with its MDE). "
        "Thresholds are fixed in advance; a claim that does not reproduce is reported as such, and so is an "
        "inconclusive comparison."
    )
    write_claims(claims, out, csv_out, preamble)
    return claims


# ----------------------------------------------------------------------------- robustness across settings


def claim_predicate(threshold: str):
    """The claim's test as a function of its statistic, parsed from its threshold text
    (``>= x``, ``> x``, ``< x``, ``<= x``, ``in [a, b]``); None when the test is not a function
    of the statistic alone (e.g. ``TOP > MID > BOT``)."""
    text = threshold.strip()
    if text.startswith("in ["):
        low, high = (float(v) for v in text[4:-1].split(","))
        return lambda v: low <= v <= high
    tests = (
        (">=", lambda v, x: v >= x),
        ("<=", lambda v, x: v <= x),
        (">", lambda v, x: v > x),
        ("<", lambda v, x: v < x),
    )
    for op, fn in tests:
        if text.startswith(op):
            try:
                x = float(text[len(op) :])
            except ValueError:
                return None
            return lambda v, x=x, fn=fn: fn(v, x)
    return None


def seed_verdict(
    values: np.ndarray, holds: np.ndarray, threshold: str, confidence: float = 0.95
) -> tuple[float, float, float, str]:
    """Mean of a claim's per-seed statistic, its t-interval across seeds, and a verdict: ``holds``
    (the claim's test passes over the whole interval), ``fails`` (fails over the whole interval)
    or ``inconclusive``. With one seed there is no interval and the verdict is the point test's.
    A test that is not a function of the statistic holds / fails when every seed agrees."""
    mean = float(np.mean(values))
    low, high = seed_interval(np.asarray(values, float), confidence)
    if len(values) < 2:
        return mean, low, high, "holds" if bool(holds[0]) else "fails"
    test = claim_predicate(threshold)
    if test is None:
        return mean, low, high, "holds" if holds.all() else ("fails" if not holds.any() else "inconclusive")
    # an interval test: the predicates used here are monotone or an interval, so checking the
    # two ends and (for `in [a, b]`) the mean decides it
    ends = [test(low), test(high), test(mean)]
    return mean, low, high, "holds" if all(ends) else ("fails" if not any(ends) else "inconclusive")


def robustness_table(
    settings: dict[str, RobustnessSetting],
    dynamics: dict[str, pd.DataFrame],
    records: dict[str, pd.DataFrame],
    th: ClaimsConfig,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Every dynamics claim under every setting (a DPO run and a PPO run), computed per seed,
    with a t-interval across seeds and a holds / fails / inconclusive verdict."""
    rows = []
    for name, setting in settings.items():
        dpo, ppo, rec = dynamics[setting.dpo], dynamics[setting.ppo], records[setting.ppo]
        seeds = sorted(set(dpo["seed"]) & set(ppo["seed"]))
        per_seed = [
            dynamics_claims(dpo[dpo["seed"] == s], ppo[ppo["seed"] == s], rec[rec["seed"] == s], th) for s in seeds
        ]
        for i, claim in enumerate(per_seed[0]):
            values = np.array([claims[i].value for claims in per_seed], float)
            holds = np.array([claims[i].holds for claims in per_seed])
            mean, low, high, verdict = seed_verdict(values, holds, claim.threshold, confidence)
            rows.append(
                {
                    "setting": name,
                    "dpo_run": setting.dpo,
                    "ppo_run": setting.ppo,
                    "claim": claim.id,
                    "statistic": mean,
                    "ci_low": low,
                    "ci_high": high,
                    "n_seeds": len(seeds),
                    "threshold": claim.threshold,
                    "verdict": verdict,
                }
            )
    return pd.DataFrame(rows)


def robustness_stage(
    cfg: Config,
    *,
    dynamics: Sequence[Path],
    dynamics_runs: Sequence[str],
    records: Sequence[Path],
    record_runs: Sequence[str],
    seeds: Sequence[int],
    out: Path,
    figure: Path,
) -> pd.DataFrame:
    """``tables/claims_robustness.csv`` (``out``) and its heatmap (claims x settings; ``figure``
    is the stem). ``dynamics_runs`` names the run of each dynamics table; ``record_runs`` and
    ``seeds`` the run and seed of each records file."""
    from .figures import robustness_heatmap

    if len(dynamics) != len(dynamics_runs):
        raise ValueError(f"{len(dynamics)} dynamics tables but {len(dynamics_runs)} run labels")
    tables = {run: pd.read_csv(path) for path, run in zip(dynamics, dynamics_runs)}
    by_run: dict[str, tuple[list[Path], list[int]]] = {}
    for path, run, seed in zip(records, record_runs, seeds, strict=True):
        by_run.setdefault(run, ([], []))
        by_run[run][0].append(Path(path))
        by_run[run][1].append(int(seed))
    run_records = {run: read_records(paths, run_seeds) for run, (paths, run_seeds) in by_run.items()}
    table = robustness_table(cfg.robustness.settings, tables, run_records, cfg.claims, cfg.winrate.confidence)
    write_csv(out, table)
    robustness_heatmap(table, Path(figure), cfg.figures)
    return table
