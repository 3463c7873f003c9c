"""Judged win rates against the SFT model, per run, seed and judged step (method.md §6)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from .config import Config
from .io import DataError, read_jsonl, write_csv
from .judges import GoldJudge, make_judge
from .statistics import bootstrap_ci

WINRATE_COLUMNS = ["run", "seed", "step", "judge", "n_prompts", "win_rate", "ci_low", "ci_high"]
GENERATION_FIELDS = {"step": int, "prompt_index": int, "prompt": str, "response": str}


def judge_run(
    cfg: Config, *, run: str, seed: int, generations: Path, baseline: Path, out: Path, cache: Path, scores_out: Path | None = None
) -> pd.DataFrame:
    """Win rate of every judged step of a run against the SFT baseline's responses; the
    per-prompt scores (1 win, 0.5 tie, 0 loss) go to ``scores_out`` for paired comparisons."""
    judge = make_judge(cfg.judge, cache, cfg.data.synthetic.length_penalty)
    base = {row["prompt_index"]: row for row in read_jsonl(baseline, GENERATION_FIELDS)}
    rows = read_jsonl(generations, GENERATION_FIELDS)
    records, per_prompt = [], []
    for step in sorted({r["step"] for r in rows}):
        at_step = [r for r in rows if r["step"] == step]
        for r in at_step:
            if r["prompt_index"] not in base or base[r["prompt_index"]]["prompt"] != r["prompt"]:
                raise DataError(f"{generations}: prompt {r['prompt_index']} at step {step} has no matching baseline response in {baseline}")
        scores = np.array([judge.compare(r["prompt"], r["response"], base[r["prompt_index"]]["response"]) for r in at_step])
        per_prompt += [{"step": step, "prompt_index": r["prompt_index"], "score": x} for r, x in zip(at_step, scores)]
        win, low, high = bootstrap_ci(scores, cfg.winrate.bootstrap_samples, cfg.winrate.confidence, seed=seed * 100003 + step)
        record = {"run": run, "seed": seed, "step": step, "judge": judge.name, "n_prompts": len(scores), "win_rate": win, "ci_low": low, "ci_high": high}
        if isinstance(judge, GoldJudge):
            record["gold_reward"] = float(np.mean([judge.reward(r["prompt"], r["response"]) for r in at_step]))
            record["sft_gold_reward"] = float(np.mean([judge.reward(r["prompt"], base[r["prompt_index"]]["response"]) for r in at_step]))
        records.append(record)
    frame = pd.DataFrame(records)
    write_csv(out, frame)
    if scores_out is not None:
        write_csv(scores_out, pd.DataFrame(per_prompt))
    return frame


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
