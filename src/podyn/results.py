"""Reading the workflow's result tables back, for the figures, the claims report and the
win-rate tables. The run and seed of a file are passed in by the caller (the rule knows
them), never parsed from its path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .io import DataError


def _check_lengths(paths: Sequence[Path], keys: Sequence, what: str) -> None:
    if len(paths) != len(keys):
        raise DataError(f"{len(paths)} {what} files but {len(keys)} run/seed labels: pass one label per file")


def read_records(paths: Sequence[Path], seeds: Sequence[int]) -> pd.DataFrame:
    """One run's per-step records (``runs/<run>/seed<s>/records.csv``), one file per seed in
    ``seeds``, with a ``seed`` column."""
    _check_lengths(paths, seeds, "records")
    return pd.concat([pd.read_csv(path).assign(seed=int(seed)) for path, seed in zip(paths, seeds)], ignore_index=True)


def read_scores(paths: Sequence[Path], runs: Sequence[str], seeds: Sequence[int]) -> pd.DataFrame:
    """Per-prompt judge scores (``eval/judgements/<run>/seed<s>_scores.csv``), one file per
    (run, seed) pair, with ``run`` and ``seed`` columns; invalid prompts (no score, method.md §6)
    are left out."""
    _check_lengths(paths, runs, "scores")
    _check_lengths(paths, seeds, "scores")
    frame = pd.concat(
        [pd.read_csv(path).assign(run=run, seed=int(seed)) for path, run, seed in zip(paths, runs, seeds)],
        ignore_index=True,
    )
    return frame.dropna(subset=["score"]).reset_index(drop=True)
