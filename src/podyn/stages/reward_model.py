"""Stage ``reward-model``: a Bradley-Terry reward model initialised from the SFT model, and
its accuracy on the held-out pairs with a bootstrap interval."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pandas as pd
from torch.utils.data import DataLoader

from .. import data as data_mod
from ..batching import pair_collator
from ..config import Config
from ..io import save_pretrained_atomic, write_csv
from ..models import inference_device, load_scalar_model, load_tokenizer
from ..statistics import bootstrap_ci
from ..training.common import fit_resumable, layer_classes, make_trainer, prepare_workdir, trained_model
from ..training.loader import resumable_loader
from ..training.reward import RewardModule, pairwise_hits


def reward_model(
    cfg: Config, *, data: Path, sft: Path, out: Path, metrics: Path, workdir: Path, split: str | None = None
) -> None:
    """Trained on ``split`` (default ``prefs_train``, for PPO; ``judge_prefs`` for the
    reward-model judge); accuracy on ``prefs_heldout``."""
    split = split or "prefs_train"
    settings = {
        "seed": cfg.seed,
        **{k: getattr(cfg, k).model_dump(mode="json") for k in ("model", "trainer", "generation", "reward_model")},
    }
    prepare_workdir(workdir, settings, [Path(data) / f"{split}.jsonl", sft])
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    tokenizer = load_tokenizer(sft)
    model = load_scalar_model(sft, cfg.model)
    gen = cfg.generation
    collate = pair_collator(tokenizer, gen.max_prompt_tokens, gen.max_response_tokens)
    rm_cfg = cfg.reward_model
    prefs = data_mod.load_split(data, split)
    loader = resumable_loader(prefs, rm_cfg.batch_size, rm_cfg.max_steps, collate, cfg.seed, "reward_model.batch_size")
    trainer = make_trainer(
        Path(workdir),
        cfg.trainer,
        rm_cfg.max_steps,
        wrap_layers=layer_classes(model),
        max_grad_norm=rm_cfg.max_grad_norm,
    )
    fit_resumable(trainer, RewardModule(model, rm_cfg), loader, Path(workdir))
    if not trainer.is_global_zero:
        return
    model = trained_model(trainer, model, "model.", lambda: load_scalar_model(sft, cfg.model))
    heldout = DataLoader(data_mod.load_split(data, "prefs_heldout"), batch_size=rm_cfg.batch_size, collate_fn=collate)
    hits = pairwise_hits(model.to(inference_device(cfg.trainer)), heldout).cpu().numpy()
    accuracy, low, high = bootstrap_ci(hits, cfg.winrate.bootstrap_samples, cfg.winrate.confidence, cfg.seed)
    row = {"split": "prefs_heldout", "n_pairs": len(hits), "accuracy": accuracy, "ci_low": low, "ci_high": high}
    write_csv(metrics, pd.DataFrame([row]))
    save_pretrained_atomic(out, model, tokenizer)
