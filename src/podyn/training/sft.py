"""Supervised fine-tuning: NLL of the demonstration's response tokens."""

from __future__ import annotations

import lightning as L
import torch

from ..config import SupervisedConfig
from ..models import token_logps
from .common import adamw_with_schedule


class SFTModule(L.LightningModule):
    def __init__(self, model: torch.nn.Module, cfg: SupervisedConfig) -> None:
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
