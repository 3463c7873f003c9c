"""Stage ``prepare-data``: every data split as JSON lines (``sft``, ``prefs_train``,
``prefs_heldout``, ``test``), generated (synthetic task) or loaded (the paper's data)."""

from __future__ import annotations

from pathlib import Path

from ..config import Config, PaperDataConfig
from ..data.synthetic import TaskConfig, generate_task
from ..io import write_jsonl

SPLITS = ("sft", "prefs_train", "prefs_heldout", "test")


def prepare_data(cfg: Config, *, out: Path) -> None:
    if cfg.data.source == "synthetic":
        splits = generate_task(TaskConfig(**dict(cfg.data.synthetic), seed=cfg.seed))
    else:
        splits = paper_splits(cfg.data.paper, cfg.seed)
    for name in SPLITS:
        write_jsonl(Path(out) / f"{name}.jsonl", splits[name])


def paper_splits(paper: PaperDataConfig, seed: int) -> dict[str, list[dict]]:
    """UltraFeedback SFT and preference splits and HH-RLHF helpfulness test prompts."""
    import datasets

    from ..data import hh_rlhf, ultrafeedback

    def take(ds, n):
        return ds.shuffle(seed=seed).select(range(min(n, len(ds)))) if n else ds

    sft = take(datasets.load_dataset(paper.prefs_dataset, split=paper.sft_split), paper.n_sft)
    prefs = take(datasets.load_dataset(paper.prefs_dataset, split=paper.prefs_split), paper.n_pref_train)
    heldout = take(datasets.load_dataset(paper.prefs_dataset, split=paper.heldout_split), paper.n_pref_heldout)
    if paper.test_path:
        test = hh_rlhf.load_prompts(paper.test_path)
    else:
        rows = datasets.load_dataset(paper.test_dataset, data_dir=paper.test_data_dir, split="test")
        test = [{"prompt": hh_rlhf.split_pair(r["chosen"], r["rejected"])[0]} for r in rows]
    return {
        "sft": [ultrafeedback.to_sft_row(r) for r in sft],
        "prefs_train": [ultrafeedback.to_preference_row(r) for r in prefs],
        "prefs_heldout": [ultrafeedback.to_preference_row(r) for r in heldout],
        "test": test[: paper.n_test],
    }
