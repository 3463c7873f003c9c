"""What every training stage shares: the Lightning Trainer, resuming from the last
checkpoint, optimisers, and the per-step records that figures read."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger

from ..config import DPOConfig, SupervisedConfig, TrainerConfig
from ..io import write_csv


def make_trainer(workdir: Path, trainer: TrainerConfig, max_steps: int, callbacks: list | None = None) -> L.Trainer:
    """A Trainer whose checkpoints live in ``workdir/lightning`` (outside Snakemake's declared
    outputs, so a failed or killed job keeps them and the rerun resumes)."""
    checkpoint = ModelCheckpoint(
        dirpath=workdir / "lightning", every_n_train_steps=trainer.checkpoint_every_n_steps, save_last=True, save_top_k=0
    )
    return L.Trainer(
        accelerator=trainer.accelerator,
        devices=trainer.devices,
        precision=trainer.precision,
        max_steps=max_steps,
        max_epochs=-1,
        logger=CSVLogger(workdir, name="", version="csv"),
        log_every_n_steps=trainer.log_every_n_steps,
        callbacks=[checkpoint, TQDMProgressBar(refresh_rate=trainer.progress_refresh), *(callbacks or [])],
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        deterministic=trainer.deterministic,
        default_root_dir=workdir,
    )


def prepare_workdir(workdir: Path, settings: dict[str, Any], inputs: list[Path]) -> None:
    """Keep a work directory (and so resume from it) only if it was made by the same settings
    from the same inputs; otherwise start afresh, so that a changed config or a retrained
    upstream model is never silently continued from a stale checkpoint."""
    workdir = Path(workdir)
    files = sorted(f for path in map(Path, inputs) for f in ([path] if path.is_file() else path.rglob("*")) if f.is_file())
    stamp = json.dumps({"settings": settings, "inputs": {str(f): [f.stat().st_size, f.stat().st_mtime_ns] for f in files}}, sort_keys=True, default=str)
    stamp_file = workdir / "stamp.json"
    if workdir.exists() and (not stamp_file.exists() or stamp_file.read_text() != stamp):
        print(f"[podyn] {workdir} was made by other settings or inputs; starting afresh", flush=True)
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    stamp_file.write_text(stamp)


def fit_resumable(trainer: L.Trainer, module: L.LightningModule, dataloader, workdir: Path) -> None:
    """Fit, resuming from ``workdir/lightning/last.ckpt`` when an earlier attempt left one."""
    last = workdir / "lightning" / "last.ckpt"
    if last.exists():
        print(f"[podyn] resuming from {last}", flush=True)
        metrics = workdir / "csv" / "metrics.csv"
        if metrics.exists():  # Lightning's CSVLogger would overwrite the interrupted attempt's rows
            metrics.rename(metrics.with_name(f"metrics.part{len(list(metrics.parent.glob('metrics.part*.csv')))}.csv"))
    trainer.fit(module, train_dataloaders=dataloader, ckpt_path=str(last) if last.exists() else None)


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int, schedule: str = "cosine"):
    """Linear warm-up, then cosine decay to 0 (``schedule: cosine``) or a constant rate."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        if schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def adamw_with_schedule(parameters, cfg: SupervisedConfig | DPOConfig) -> dict[str, Any]:
    """``configure_optimizers``' answer: AdamW with linear warm-up then ``cfg.lr_schedule``."""
    opt = torch.optim.AdamW(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = warmup_cosine(opt, cfg.warmup_steps, cfg.max_steps, cfg.lr_schedule)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def grad_norm(parameters) -> float:
    """L2 norm of the gradients of ``parameters`` (before clipping)."""
    norms = [p.grad.detach().float().norm() for p in parameters if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


class StepRecords:
    """Per-step scalars (gradient norms, advantage means) that must survive a resume: kept in
    the Lightning checkpoint and written as one CSV at the end."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, **row: Any) -> None:
        self.rows.append(row)

    def state_dict(self) -> list[dict]:
        return list(self.rows)

    def load_state_dict(self, rows: list[dict]) -> None:
        self.rows = list(rows)

    def write(self, path: Path) -> None:
        write_csv(path, pd.DataFrame(self.rows))


def copy_metrics(workdir: Path, dest: Path) -> None:
    """Lightning's CSV metrics of the run, as a declared output. The rows of interrupted
    attempts come first, each cut where the next attempt resumed."""
    folder = workdir / "csv"
    parts = sorted(folder.glob("metrics.part*.csv"), key=lambda p: int(p.stem.removeprefix("metrics.part")))
    files = [p for p in [*parts, folder / "metrics.csv"] if p.exists() and p.stat().st_size > 0]
    frames = [pd.read_csv(p) for p in files]
    kept = [f[f["step"] < nxt["step"].min()] for f, nxt in zip(frames, frames[1:])] + frames[-1:]
    if kept:
        write_csv(dest, pd.concat(kept, ignore_index=True))
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text("")
