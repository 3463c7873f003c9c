"""DPO as a weighted sum of its components (docs/method.md §2). Plain DPO, the ablations and cDPO
differ only in the run's weight schedule."""

from __future__ import annotations

import torch

from ..config import DPOConfig
from ..controller import WeightSource, as_weight_source
from ..dynamics import DPOBatch
from ..models import disable_dropout, sequence_logps
from ..objectives import dpo_component_loss, dpo_terms
from ..schedules import Weights
from .checkpoints import RunRecorder
from .common import StepRecords, TrainingModule, adamw_with_schedule, grad_norm, metrics_kept, record_weights
from .distributed import full_weights, gather_rows, global_tertile_groups, is_distributed


class DPOModule(TrainingModule):
    """DPO's training step; ``hyper`` is the run's ``dpo`` section (with its overrides) and
    ``weights`` its component-weight schedules or a weight source (:mod:`podyn.controller`:
    Coordinated PO's controller)."""

    def __init__(
        self,
        policy: torch.nn.Module,
        hyper: DPOConfig,
        weights: Weights | WeightSource,
        recorder: RunRecorder | None,
        logps_options: dict[str, int | bool] | None = None,
    ) -> None:
        super().__init__()
        # train mode (from_pretrained returns eval mode), without dropout unless the config keeps it
        self.policy = (disable_dropout(policy) if hyper.disable_dropout else policy).train()
        self.hyper = hyper
        self.weight_source = as_weight_source(weights)
        self.recorder = recorder
        self.records = StepRecords()
        self.logps_options = logps_options or {}  # chunked / packed log-probs (models.sequence_logps)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        step = self.global_step
        if self.recorder is not None and self.recorder.records_at(step):
            indices = gather_rows(batch["index"])  # the global batch, rank by rank
            weights_state = full_weights(self.trainer, "policy.")
            if self.trainer.is_global_zero:
                self.recorder.at_step(step, self.policy, {"step": step, "indices": indices}, weights_state)
        ref_chosen, ref_rejected = batch["ref_chosen"], batch["ref_rejected"]

        def probe():
            fields = (batch["input_ids"], batch["attention_mask"], batch["response_mask"], ref_chosen, ref_rejected)
            return self.policy, DPOBatch(*fields, self.hyper.beta)

        weights = self.weight_source(step, probe)
        record_weights(self.records, step, weights, self.weight_source)
        logps = sequence_logps(
            self.policy,
            batch["input_ids"],
            batch["attention_mask"],
            batch["response_mask"],
            **self.logps_options,
        )
        chosen, rejected = logps.chunk(2)
        ref_chosen, ref_rejected = ref_chosen.to(logps.dtype), ref_rejected.to(logps.dtype)
        terms = dpo_terms(chosen, rejected, ref_chosen, ref_rejected, beta=self.hyper.beta)
        groups = global_tertile_groups(terms.omega)  # tertiles of the global batch
        loss = dpo_component_loss(chosen, rejected, terms.omega, groups, weights)
        if metrics_kept(self):
            self._log_step(terms, chosen, rejected, ref_chosen, ref_rejected, weights)
        return loss

    def _log_step(self, terms, chosen, rejected, ref_chosen, ref_rejected, weights) -> None:
        beta = self.hyper.beta
        reward_chosen = beta * (chosen - ref_chosen).detach()
        reward_rejected = beta * (rejected - ref_rejected).detach()
        distributed = is_distributed()  # means over equal shares: their mean is the global batch's
        self.log("loss", terms.loss, prog_bar=True, sync_dist=distributed)
        self.log_dict(
            {
                "rewards/chosen": reward_chosen.mean(),
                "rewards/rejected": reward_rejected.mean(),
                "rewards/margins": (reward_chosen - reward_rejected).mean(),
                "rewards/accuracies": (reward_chosen > reward_rejected).float().mean(),
                "logps/chosen": chosen.detach().mean(),
                "logps/rejected": rejected.detach().mean(),
                "weights/pos": weights.pos,
                "weights/neg": weights.neg,
            },
            sync_dist=distributed,
        )

    def on_before_optimizer_step(self, optimizer) -> None:
        norm = grad_norm(self.policy.parameters())
        if metrics_kept(self):
            self.log("grad_norm", norm)
        self.records.add(step=self.global_step, kind="grad_norm", value=norm)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["podyn_records"] = self.records.state_dict()
        checkpoint["podyn_weight_source"] = self.weight_source.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.records.load_state_dict(checkpoint.get("podyn_records", []))
        self.weight_source.load_state_dict(checkpoint.get("podyn_weight_source", {}))

    def configure_optimizers(self):
        return adamw_with_schedule(self.policy.parameters(), self.hyper)
