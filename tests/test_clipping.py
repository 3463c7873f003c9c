"""Gradient clipping with a fused optimiser under mixed precision, the paper setting on a GPU.

Lightning's own clipping refuses it ("does not allow for gradient clipping because it performs
unscaling of gradients internally"); a fused AdamW ran into that on an H200 with bf16-mixed and
``max_grad_norm``. torch's fused AdamW also runs on the CPU, so the fix is tested here: one
Lightning step must equal autocast forward, backward, ``clip_grad_norm_`` and the fused step
done by hand."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch

from podyn.training.common import TrainingModule

MAX_NORM = 0.05


class Regression(TrainingModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x).float(), y)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-2, fused=True)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(32, 8, generator=g), 10 * torch.randn(32, 1, generator=g)


def fit_one_step(module: L.LightningModule) -> None:
    trainer = L.Trainer(
        accelerator="cpu",
        precision="bf16-mixed",
        max_steps=1,
        gradient_clip_val=MAX_NORM,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*batch()), batch_size=32)
    trainer.fit(module, train_dataloaders=loader)


def test_fused_adamw_clips_under_bf16_autocast_like_the_hand_computation():
    torch.manual_seed(0)
    module = Regression()
    reference = copy.deepcopy(module.net)
    fit_one_step(module)

    x, y = batch()
    opt = torch.optim.AdamW(reference.parameters(), lr=1e-2, fused=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = torch.nn.functional.mse_loss(reference(x).float(), y)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), MAX_NORM)
    assert norm > 10 * MAX_NORM  # the clip is active, so the comparison tests it
    opt.step()
    for ours, theirs in zip(module.net.parameters(), reference.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_lightning_alone_refuses_this_setting():
    """Why TrainingModule overrides the hook: Lightning's default clipping raises here."""

    class Plain(Regression):
        configure_gradient_clipping = L.LightningModule.configure_gradient_clipping

    torch.manual_seed(0)
    with pytest.raises(RuntimeError, match="performs unscaling of gradients internally"):
        fit_one_step(Plain())
