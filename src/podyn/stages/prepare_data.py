"""Stage ``prepare-data``: every data split as JSON lines (``sft``, ``prefs_train``,
``prefs_heldout``, ``test``, and ``judge_prefs`` for the reward-model judge), generated
(synthetic task) or loaded (``hf``, ``local``: :mod:`podyn.data.sources`)."""

from __future__ import annotations

from pathlib import Path

from ..config import Config
from ..data.synthetic import TaskConfig, generate_task
from ..io import DataError, write_jsonl


def prepare_data(cfg: Config, *, out: Path) -> None:
    if cfg.data.source == "synthetic":
        splits = generate_task(TaskConfig(**dict(cfg.data.synthetic), seed=cfg.seed))
    else:
        from ..data.sources import load_splits

        splits = load_splits(cfg.data, cfg.seed, cfg.model.name_or_path)
        check_judge_pairs_disjoint(splits)
    for name, rows in splits.items():
        write_jsonl(Path(out) / f"{name}.jsonl", rows)


def check_judge_pairs_disjoint(splits: dict[str, list[dict]]) -> None:
    """The reward-model judge must not have seen the policy's training pairs."""
    if "judge_prefs" not in splits:
        return
    policy = {(r["prompt"], r["chosen"], r["rejected"]) for r in splits["prefs_train"]}
    shared = sum((r["prompt"], r["chosen"], r["rejected"]) in policy for r in splits["judge_prefs"])
    if shared:
        raise DataError(
            f"data.roles.judge_prefs shares {shared} pairs with data.roles.prefs_train; give them disjoint "
            "rows (start/n)"
        )
