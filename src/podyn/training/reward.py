"""Reward model: Bradley-Terry on preference pairs, scored at the response's last token."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import SupervisedConfig
from ..models import last_token_index, score_at
from .common import TrainingModule, adamw_with_schedule, metrics_kept
from .distributed import is_distributed


def pair_scores(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    scores = score_at(model, batch["input_ids"], batch["attention_mask"], last_token_index(batch["attention_mask"]))
    return scores.chunk(2)


class RewardModule(TrainingModule):
    def __init__(self, model: torch.nn.Module, cfg: SupervisedConfig) -> None:
        super().__init__()
        self.model = model.train()  # from_pretrained returns eval mode
        self.cfg = cfg

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        chosen, rejected = pair_scores(self.model, batch)
        loss = -F.logsigmoid(chosen - rejected).mean()
        distributed = is_distributed()  # each process's mean over equal shares: the global mean
        if metrics_kept(self):
            self.log("train/loss", loss, prog_bar=True, sync_dist=distributed)
            self.log("train/accuracy", (chosen > rejected).float().mean(), prog_bar=True, sync_dist=distributed)
        return loss

    def configure_optimizers(self):
        return adamw_with_schedule(self.model.parameters(), self.cfg)


@torch.no_grad()
def pairwise_hits(model: torch.nn.Module, loader) -> torch.Tensor:
    """1 for each pair whose chosen response scores higher than its rejected one, else 0."""
    model.eval()
    device = next(model.parameters()).device
    batches = ({k: v.to(device) for k, v in batch.items()} for batch in loader)
    hits = [(chosen > rejected).float() for chosen, rejected in (pair_scores(model, batch) for batch in batches)]
    return torch.cat(hits)
