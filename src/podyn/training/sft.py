"""Supervised fine-tuning: NLL of the demonstration's response tokens."""

from __future__ import annotations

import torch

from ..config import SupervisedConfig
from ..models import token_logps
from .common import TrainingModule, adamw_with_schedule, metrics_kept
from .distributed import global_sum, rank_and_world


class SFTModule(TrainingModule):
    def __init__(self, model: torch.nn.Module, cfg: SupervisedConfig) -> None:
        super().__init__()
        self.model = model.train()  # from_pretrained returns eval mode
        self.cfg = cfg

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logps = token_logps(self.model, batch["input_ids"], batch["attention_mask"])
        mask = batch["response_mask"][:, 1:].to(logps.dtype)
        # the mean over the GLOBAL batch's tokens: with W processes each contributes
        # W * (its token sum) / (global token count), and DDP averages the W gradients
        tokens = global_sum(mask.sum())
        _, world = rank_and_world()
        loss = -(logps * mask).sum() * world / tokens
        if metrics_kept(self):
            self.log("train/loss", loss, prog_bar=True, sync_dist=world > 1)
            self.log("train/tokens", tokens, reduce_fx="sum")
        return loss

    def configure_optimizers(self):
        return adamw_with_schedule(self.model.parameters(), self.cfg)
