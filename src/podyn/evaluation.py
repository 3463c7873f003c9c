"""Judged win rates against the SFT model, per run, seed and judged step (docs/method.md §6)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from .config import Config
from .io import DataError, read_jsonl, write_csv
from .judges import Comparison, GoldJudge, JudgeError, make_judge
from .length_control import length_controlled_win_rate
from .statistics import bootstrap_ci

WINRATE_COLUMNS = [
    "run",
    "seed",
    "step",
    "judge",
    "n_prompts",
    "n_invalid",
    "win_rate",
    "ci_low",
    "ci_high",
    "lc_win_rate",
]
GENERATION_FIELDS = {"step": int, "prompt_index": int, "prompt": str, "response": str}


def judge_run(
    cfg: Config,
    *,
    run: str,
    seed: int,
    generations: Path,
    baseline: Path,
    out: Path,
    cache: Path,
    scores_out: Path | None = None,
    judge_model: Path | None = None,
) -> pd.DataFrame:
    """Win rate of every judged step of a run against the SFT baseline's responses.

    ``n_prompts`` counts the prompts in the win rate; ``n_invalid`` those left out because the
    judge gave no valid answer (method.md §6); the job fails if the invalid share exceeds
    ``judge.max_invalid_fraction``. The per-prompt scores (1 win, 0.5 tie, 0 loss, or a
    probability; empty when invalid) and length differences go to ``scores_out`` for paired
    comparisons and the tables; ``judge_model`` is the reward-model judge's directory. Every
    comparison of the run is handed to the judge at once, so
    an LLM judge can keep ``judge.concurrency`` requests in flight across steps."""
    judge = make_judge(cfg, cache, judge_model)
    base = {row["prompt_index"]: row for row in read_jsonl(baseline, GENERATION_FIELDS)}
    rows = sorted(read_jsonl(generations, GENERATION_FIELDS), key=lambda r: (r["step"], r["prompt_index"]))
    for r in rows:
        if r["prompt_index"] not in base or base[r["prompt_index"]]["prompt"] != r["prompt"]:
            raise DataError(
                f"{generations}: prompt {r['prompt_index']} at step {r['step']} has no matching baseline response "
                f"in {baseline}"
            )
    comparisons = [Comparison(r["prompt"], r["response"], base[r["prompt_index"]]["response"]) for r in rows]
    all_scores = np.array([np.nan if s is None else s for s in judge.judge(comparisons)], dtype=float)
    length_diff = np.array([len(c.response.strip()) - len(c.baseline.strip()) for c in comparisons], dtype=float)
    check_invalid_share(cfg, run, seed, all_scores)

    records, per_prompt = [], []
    steps = np.array([r["step"] for r in rows])
    for step in sorted(set(steps.tolist())):
        at = np.flatnonzero(steps == step)
        scores, valid = all_scores[at], ~np.isnan(all_scores[at])
        per_prompt += [
            {
                "step": step,
                "prompt_index": rows[i]["prompt_index"],
                "score": all_scores[i],
                "length_diff": length_diff[i],
            }
            for i in at
        ]
        win, low, high = (np.nan,) * 3
        if valid.any():
            win, low, high = bootstrap_ci(
                scores[valid], cfg.winrate.bootstrap_samples, cfg.winrate.confidence, seed=seed * 100003 + step
            )
        record = {
            "run": run,
            "seed": seed,
            "step": step,
            "judge": judge.name,
            "n_prompts": int(valid.sum()),
            "n_invalid": int((~valid).sum()),
            "win_rate": win,
            "ci_low": low,
            "ci_high": high,
            "lc_win_rate": length_controlled_win_rate(scores, length_diff[at]),
        }
        if isinstance(judge, GoldJudge):
            record["gold_reward"] = float(np.mean([judge.reward(rows[i]["prompt"], rows[i]["response"]) for i in at]))
            record["sft_gold_reward"] = float(
                np.mean([judge.reward(rows[i]["prompt"], base[rows[i]["prompt_index"]]["response"]) for i in at])
            )
        records.append(record)
    frame = pd.DataFrame(records)
    write_csv(out, frame)
    if scores_out is not None:
        write_csv(scores_out, pd.DataFrame(per_prompt, columns=["step", "prompt_index", "score", "length_diff"]))
    return frame


def check_invalid_share(cfg: Config, run: str, seed: int, scores: np.ndarray) -> None:
    """Fail when more than ``judge.max_invalid_fraction`` of the comparisons are invalid."""
    n_invalid = int(np.isnan(scores).sum())
    if not n_invalid:
        return
    limit = cfg.judge.max_invalid_fraction
    print(f"judge: {n_invalid} of {len(scores)} comparisons invalid (left out of the win rates)", flush=True)
    if n_invalid / len(scores) > limit:
        raise JudgeError(
            f"run {run} seed {seed}: {n_invalid} of {len(scores)} comparisons ({n_invalid / len(scores):.1%}) have "
            f"no valid judgement, more than judge.max_invalid_fraction = {limit}. The valid answers are cached; see "
            "the log for the failures, then rerun (or raise judge.max_invalid_fraction)."
        )


def collect_winrates(*, inputs: Iterable[Path], out: Path, gold_out: Path | None = None) -> pd.DataFrame:
    """Concatenate per-run judgements (``inputs``) into the output contract ``winrates.csv``;
    gold rewards (synthetic task only) go to a file of their own."""
    frame = pd.concat([pd.read_csv(p) for p in inputs], ignore_index=True).sort_values(["run", "seed", "step"])
    write_csv(out, frame[WINRATE_COLUMNS])
    if gold_out is not None:
        gold_cols = [c for c in ("gold_reward", "sft_gold_reward") if c in frame]
        write_csv(gold_out, frame[["run", "seed", "step", *gold_cols]])
    return frame


def concat_tables(*, inputs: Iterable[Path], out: Path) -> pd.DataFrame:
    frame = pd.concat([pd.read_csv(p) for p in inputs], ignore_index=True)
    write_csv(out, frame)
    return frame
