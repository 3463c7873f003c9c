"""Stage ``reference-logps``: logp_ref(y+|x) and logp_ref(y-|x) of every training pair under
the SFT model, computed once for all DPO runs."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader

from .. import data as data_mod
from ..batching import pair_collator
from ..config import Config
from ..io import write_torch
from ..models import inference_device, load_policy, load_tokenizer, sequence_logps


@torch.no_grad()
def reference_logps(cfg: Config, *, data: Path, sft: Path, out: Path) -> None:
    """Batches of ``dpo.batch_size`` pairs, in file order; saved as float64 tensors."""
    tokenizer = load_tokenizer(sft)
    device = inference_device(cfg.trainer)
    model = load_policy(sft, cfg.model).eval().to(device)
    gen = cfg.generation
    collate = pair_collator(tokenizer, gen.max_prompt_tokens, gen.max_response_tokens)
    loader = DataLoader(data_mod.load_split(data, "prefs_train"), batch_size=cfg.dpo.batch_size, collate_fn=collate)
    chosen, rejected = [], []
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        c, r = (
            sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["response_mask"])
            .double()
            .cpu()
            .chunk(2)
        )
        chosen.append(c)
        rejected.append(r)
    write_torch(out, {"chosen": torch.cat(chosen), "rejected": torch.cat(rejected)})
