"""Stage ``sft``: supervised fine-tuning of the base model on the demonstrations."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from .. import data as data_mod
from ..batching import sft_collator, shuffled_loader
from ..config import Config
from ..io import save_pretrained_atomic
from ..models import load_policy, load_tokenizer
from ..training.common import fit_resumable, make_trainer, prepare_workdir
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
    loader = shuffled_loader(data_mod.load_split(data, "sft"), cfg.sft.batch_size, collate, cfg.seed)
    trainer = make_trainer(Path(workdir), cfg.trainer, cfg.sft.max_steps)
    fit_resumable(trainer, SFTModule(model, cfg.sft), loader, Path(workdir))
    save_pretrained_atomic(out, model, tokenizer)
