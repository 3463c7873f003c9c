"""Stage ``sft``: supervised fine-tuning of the base model on the demonstrations."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from .. import data as data_mod
from ..batching import sft_collator
from ..config import Config
from ..io import save_pretrained_atomic
from ..models import load_policy, load_tokenizer
from ..training.common import fit_resumable, layer_classes, make_trainer, prepare_workdir, trained_model
from ..training.loader import resumable_loader
from ..training.sft import SFTModule


def sft(cfg: Config, *, data: Path, base: Path, out: Path, workdir: Path) -> None:
    settings = {
        "seed": cfg.seed,
        **{k: getattr(cfg, k).model_dump(mode="json") for k in ("model", "trainer", "generation", "sft")},
    }
    prepare_workdir(workdir, settings, [Path(data) / "sft.jsonl", base])
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    tokenizer = load_tokenizer(base)
    model = load_policy(base, cfg.model)
    gen = cfg.generation
    collate = sft_collator(tokenizer, gen.max_prompt_tokens, gen.max_response_tokens)
    steps = cfg.sft.max_steps
    rows = data_mod.load_split(data, "sft")
    loader = resumable_loader(rows, cfg.sft.batch_size, steps, collate, cfg.seed, "sft.batch_size")
    trainer = make_trainer(Path(workdir), cfg.trainer, steps, wrap_layers=layer_classes(model))
    fit_resumable(trainer, SFTModule(model, cfg.sft), loader, Path(workdir))
    if not trainer.is_global_zero:
        return
    trained = trained_model(trainer, model, "model.", lambda: load_policy(base, cfg.model))
    save_pretrained_atomic(out, trained, tokenizer)
