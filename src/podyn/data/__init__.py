"""Tasks and loaders. Every split is written as JSON lines with TRL's column names
(``prompt``/``completion`` for SFT, ``prompt``/``chosen``/``rejected`` for preferences)
and read back through ``datasets``, for the synthetic task and real data alike."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..io import read_jsonl

if TYPE_CHECKING:
    import datasets

SPLIT_FIELDS = {
    "sft": {"prompt": str, "completion": str},
    "prefs_train": {"prompt": str, "chosen": str, "rejected": str},
    "prefs_heldout": {"prompt": str, "chosen": str, "rejected": str},
    "test": {"prompt": str},
    "judge_prefs": {"prompt": str, "chosen": str, "rejected": str},
}


def load_split(data_dir: str | Path, split: str) -> datasets.Dataset:
    """One prepared split as a ``datasets.Dataset``, after checking every row's fields."""
    import datasets  # here, so that judging and plotting jobs need not import it

    path = Path(data_dir) / f"{split}.jsonl"
    read_jsonl(path, SPLIT_FIELDS[split])  # raises DataError naming the line of a bad row
    return datasets.load_dataset("json", data_files=str(path), split="train")
