"""Supervised fine-tuning: NLL of the demonstration's response tokens."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from ..batching import encode_prompt, encode_response, prompt_response_batch
from ..models import token_logps
from .common import adamw_with_schedule


class SFTModule(L.LightningModule):
    def __init__(self, model: torch.nn.Module, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.model = model.train()  # from_pretrained returns eval mode
        self.cfg = cfg

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logps = token_logps(self.model, batch["input_ids"], batch["attention_mask"])
        mask = batch["response_mask"][:, 1:].to(logps.dtype)
        loss = -(logps * mask).sum() / mask.sum()
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/tokens", mask.sum(), reduce_fx="sum")
        return loss

    def configure_optimizers(self):
        return adamw_with_schedule(self.model.parameters(), self.cfg)


def sft_collator(tokenizer, max_prompt_tokens: int | None, max_response_tokens: int | None):
    def collate(rows: list[dict]) -> dict[str, torch.Tensor]:
        prompts = [encode_prompt(tokenizer, r["prompt"], max_prompt_tokens) for r in rows]
        responses = [encode_response(tokenizer, r["completion"], max_response_tokens) for r in rows]
        return prompt_response_batch(prompts, responses, tokenizer.pad_token_id)

    return collate
