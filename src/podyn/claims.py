"""The paper's qualitative claims, each computed from this run's data as a statistic with a
threshold and a verdict. A claim that does not reproduce is reported as such."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .config import ClaimsConfig, Config
from .io import write_csv, write_text
from .results import read_records


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
    per_seed = _series(table, component).groupby("seed")["G"].apply(lambda g: int((np.diff(np.sign(g.to_numpy())) != 0).sum()))
    return float(per_seed.mean())


def sign_consistency(table: pd.DataFrame, component: str) -> float:
    """|2 * fraction positive - 1|: 1 when G never changes sign, 0 when it is positive half the time."""
    return abs(2 * fraction_positive(table, component) - 1)


def paired(table: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    return _series(table, a).merge(_series(table, b), on=["seed", "step"], suffixes=(f"_{a}", f"_{b}"))


def group_shares(table: pd.DataFrame) -> pd.Series:
    """Mean share of sum |G| held by each of TOP, MID and BOT."""
    wide = table[table.get("layer", "all") == "all"].pivot_table(index=["seed", "step"], columns="component", values="G")
    magnitude = wide[["top", "mid", "bot"]].abs()
    return magnitude.div(magnitude.sum(axis=1), axis=0).mean()


def dynamics_claims(dpo: pd.DataFrame, ppo: pd.DataFrame, ppo_records: pd.DataFrame, th: ClaimsConfig) -> list[Claim]:
    claims = []
    stable = th.stable_fraction
    f_dpo, f_ppo = fraction_positive(dpo, "tot"), fraction_positive(ppo, "tot")
    claims.append(Claim("dpo_stable_target", "DPO follows stable targets (G(TOT) > 0: updates move toward the final responses).",
                        "fraction of DPO checkpoints with G(TOT) > 0", f_dpo, f">= {stable}", f_dpo >= stable))
    changes = mean_sign_changes(ppo, "tot")
    claims.append(Claim("ppo_sign_changes", "PPO follows dynamic targets: G(TOT) changes sign over training.",
                        "sign changes of PPO G(TOT) between consecutive checkpoints (mean over seeds)", changes, ">= 1", changes >= 1))
    claims.append(Claim("ppo_less_aligned_than_dpo", "PPO balances exploration and exploitation, DPO is supervised-like.",
                        "fraction of PPO checkpoints with G(TOT) > 0 minus DPO's", f_ppo - f_dpo, "< 0", f_ppo < f_dpo))
    both = paired(dpo, "pos", "neg")
    offset = float((np.sign(both["G_pos"]) != np.sign(both["G_neg"])).mean())
    claims.append(Claim("dpo_pos_neg_offset", "In DPO, positive and negative learning mutually offset each other.",
                        "fraction of DPO checkpoints where G(POS) and G(NEG) have opposite signs", offset, f">= {th.offset_fraction}", offset >= th.offset_fraction))
    share = float((both["G_neg"].abs() / (both["G_pos"].abs() + both["G_neg"].abs())).median())
    low, high = th.joint_share_range
    claims.append(Claim("dpo_pos_neg_joint", "In DPO, positive and negative learning jointly shape the learning targets.",
                        "median share of NEG in |G(POS)| + |G(NEG)| over DPO checkpoints", share, f"in [{low}, {high}]", low <= share <= high))
    c_pos, c_neg = sign_consistency(ppo, "pos"), sign_consistency(ppo, "neg")
    claims.append(Claim("ppo_neg_explores", "In PPO, negative learning supports exploration rather than determining the targets.",
                        "sign consistency |2 P(G>0) - 1| of PPO G(NEG) minus that of G(POS)", c_neg - c_pos, "< 0", c_neg < c_pos))
    for name, table in (("dpo", dpo), ("ppo", ppo)):
        shares = group_shares(table)
        spread = float(shares.max() - shares.min())
        detail = ", ".join(f"{g.upper()} {shares[g]:.2f}" for g in ("top", "mid", "bot"))
        claims.append(Claim(f"{name}_groups_differ", f"In {name.upper()}, the loss-reweighting groups TOP, MID and BOT play different roles.",
                            f"max - min mean share of |G| over TOP/MID/BOT ({detail})", spread, f">= {th.group_spread}", spread >= th.group_spread))
    adv = ppo_records[ppo_records["kind"].str.startswith("raw_advantage/")]
    magnitude = adv.assign(value=adv["value"].abs()).groupby("kind")["value"].mean()
    top, mid, bot = (float(magnitude.get(f"raw_advantage/{g}", np.nan)) for g in ("top", "mid", "bot"))
    claims.append(Claim("ppo_advantage_order", "Loss reweighting in PPO follows |advantage|: TOP tokens carry the largest raw advantages (figure 3).",
                        f"mean |raw advantage|: TOP {top:.3f}, MID {mid:.3f}, BOT {bot:.3f}", top - bot, "TOP > MID > BOT", top > mid > bot))
    return claims


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def ablation_claims(comparisons: pd.DataFrame) -> list[Claim]:
    """One claim per variant, from its paired comparison with its baseline at the final step:
    an ablation ("w/o") is claimed to hurt, a coordinated variant to help."""
    claims = []
    for row in comparisons[comparisons["step"] == "final"].itertuples():
        ablation = "_wo_" in row.variant
        expected = "worse" if ablation else "better"
        text = (f"Removing a component ({row.variant}) hurts {row.baseline.upper()}." if ablation
                else f"The coordinated variant {row.variant} beats {row.baseline.upper()}.")
        claims.append(Claim(f"{row.variant}_vs_{row.baseline}", text,
                            f"final win rate minus {row.baseline}'s, paired over prompts [{row.ci_low:+.3f}, {row.ci_high:+.3f}]: {row.verdict}",
                            row.difference, f"95% CI {'< 0' if ablation else '> 0'}", row.verdict == expected))
    return claims


def write_claims(claims: list[Claim], md_out: Path, csv_out: Path, preamble: str = "") -> None:
    frame = pd.DataFrame([asdict(c) for c in claims])
    write_csv(csv_out, frame)
    lines = ["# Paper claims, computed from this run", "", preamble, "",
             f"{int(frame['holds'].sum())} of {len(frame)} claims hold.", "",
             "| id | claim | statistic | value | threshold | holds |", "|---|---|---|---|---|---|"]
    lines += [f"| {c.id} | {_cell(c.claim)} | {_cell(c.statistic)} | {c.value:.3g} | {_cell(c.threshold)} | {'yes' if c.holds else '**no**'} |" for c in claims]
    write_text(md_out, "\n".join(lines) + "\n")


def claims_report(
    cfg: Config, *, dpo: Path, ppo: Path, seeds: Sequence[int], ppo_records: Sequence[Path], out: Path, csv_out: Path,
    comparisons: Path | None = None,
) -> list[Claim]:
    """``claims.md`` (``out``) and ``claims.csv`` from the dynamics tables of the DPO and PPO
    runs, the PPO run's records (one file per seed in ``seeds``) and the paired comparisons."""
    claims = dynamics_claims(pd.read_csv(dpo), pd.read_csv(ppo), read_records(ppo_records, seeds), cfg.claims)
    if comparisons is not None:
        table = pd.read_csv(comparisons)
        if not table.empty:
            claims += ablation_claims(table)
    preamble = ("Each claim from the paper's abstract and captions is turned into a statistic of this experiment's "
                "gradient-alignment tables (`dynamics/*.csv`) and PPO records, pooled over seeds, and compared with "
                "the threshold in the config's `claims` section; the ablation claims compare each variant's final "
                "win rate with its baseline's, paired over prompts (`tables/comparisons.csv`). Thresholds are fixed in "
                "advance; a claim that does not reproduce is reported as such, and so is 'no significant difference'.")
    write_claims(claims, out, csv_out, preamble)
    return claims
