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

from ..config import ConfigError, DPOConfig, SupervisedConfig, TrainerConfig
from ..io import write_csv, write_text
from .distributed import is_launched_worker
from .resume import AtomicCheckpointIO, RNGStateCheckpoint, check_checkpoint


def make_strategy(trainer: TrainerConfig, wrap_layers: set[type] | None = None):
    """Lightning's strategy for ``trainer.strategy``: ``auto`` (one process), ``ddp`` (one
    process per device, gradients all-reduced) or ``fsdp`` (parameters, gradients and optimiser
    state sharded over devices; ``wrap_layers`` are the transformer layer classes each
    wrapped as one FSDP unit). Several processes are always started by Lightning's own launcher
    (``LightningEnvironment``), also inside a Slurm job of one task."""
    from lightning.fabric.plugins.environments import LightningEnvironment
    from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy

    name = trainer.strategy
    io = AtomicCheckpointIO()
    if name == "ddp":
        return DDPStrategy(cluster_environment=LightningEnvironment(), checkpoint_io=io)
    if name == "fsdp":
        return FSDPStrategy(
            cluster_environment=LightningEnvironment(),
            checkpoint_io=io,
            auto_wrap_policy=wrap_layers,
            activation_checkpointing_policy=wrap_layers if trainer.fsdp_activation_checkpointing else None,
            sharding_strategy=trainer.fsdp_sharding,
            cpu_offload=trainer.fsdp_cpu_offload,
            state_dict_type="full",  # one last.ckpt file, written atomically, like the other strategies
        )
    if name != "auto":
        raise ConfigError(f"trainer.strategy: {name!r} is not one of auto, ddp, fsdp")
    if str(trainer.devices) != "1":
        raise ConfigError(f"trainer.devices: {trainer.devices!r} devices need trainer.strategy ddp or fsdp")
    return "auto"


def make_trainer(
    workdir: Path,
    trainer: TrainerConfig,
    max_steps: int,
    callbacks: list | None = None,
    wrap_layers: set[type] | None = None,
    max_grad_norm: float | None = None,
) -> L.Trainer:
    """A Trainer whose checkpoints live in ``workdir/lightning`` (outside Snakemake's declared
    outputs, so a failed or killed job keeps them and the rerun resumes). A checkpoint holds
    the data order (:mod:`.loader`) and every process's random states (:mod:`.resume`), so the
    rerun continues exactly where the killed job was. ``max_grad_norm`` clips by norm
    (automatic optimisation only; PPO clips its own minibatches)."""
    checkpoint = ModelCheckpoint(
        dirpath=workdir / "lightning",
        every_n_train_steps=trainer.checkpoint_every_n_steps,
        save_last=True,
        save_top_k=0,
    )
    strategy = make_strategy(trainer, wrap_layers)
    return L.Trainer(
        accelerator=trainer.accelerator,
        devices=trainer.devices,
        strategy=strategy,
        plugins=[AtomicCheckpointIO()] if strategy == "auto" else None,
        use_distributed_sampler=False,  # the loaders shard each global batch themselves
        precision=trainer.precision,
        max_steps=max_steps,
        max_epochs=-1,
        gradient_clip_val=max_grad_norm,
        gradient_clip_algorithm="norm" if max_grad_norm else None,
        logger=CSVLogger(workdir, name="", version="csv"),
        log_every_n_steps=trainer.log_every_n_steps,
        callbacks=[
            checkpoint,
            MetricRows(trainer.log_every_n_steps),
            RNGStateCheckpoint(),
            TQDMProgressBar(refresh_rate=trainer.progress_refresh),
            *([FullWeightsAtEnd()] if trainer.strategy == "fsdp" else []),
            *(callbacks or []),
        ],
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        deterministic=trainer.deterministic,
        default_root_dir=workdir,
    )


def layer_classes(model: torch.nn.Module) -> set[type]:
    """The classes of a transformers model's decoder layers (its ``_no_split_modules``)."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    return {type(m) for m in model.modules() if type(m).__name__ in names}


def prepare_workdir(workdir: Path, settings: dict[str, Any], inputs: list[Path]) -> None:
    """Keep a work directory (and so resume from it) only if it was made by the same settings
    from the same inputs; otherwise start afresh, so that a changed config or a retrained
    upstream model is never silently continued from a stale checkpoint. Processes that
    Lightning started for ranks > 0 leave it to rank 0."""
    workdir = Path(workdir)
    if is_launched_worker():
        return
    files = sorted(
        f for path in map(Path, inputs) for f in ([path] if path.is_file() else path.rglob("*")) if f.is_file()
    )
    stamp = json.dumps(
        {"settings": settings, "inputs": {str(f): [f.stat().st_size, f.stat().st_mtime_ns] for f in files}},
        sort_keys=True,
        default=str,
    )
    stamp_file = workdir / "stamp.json"
    if workdir.exists() and (not stamp_file.exists() or stamp_file.read_text() != stamp):
        print(f"[podyn] {workdir} was made by other settings or inputs; starting afresh", flush=True)
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    write_text(stamp_file, stamp)


def fit_resumable(trainer: L.Trainer, module: L.LightningModule, dataloader, workdir: Path) -> None:
    """Fit, resuming from ``workdir/lightning/last.ckpt`` when an earlier attempt left one."""
    last = workdir / "lightning" / "last.ckpt"
    if last.exists():
        check_checkpoint(last)
        if not is_launched_worker():
            print(f"[podyn] resuming from {last}", flush=True)
            metrics = workdir / "csv" / "metrics.csv"
            if metrics.exists():  # Lightning's CSVLogger would overwrite the interrupted attempt's rows
                part = len(list(metrics.parent.glob("metrics.part*.csv")))
                metrics.rename(metrics.with_name(f"metrics.part{part}.csv"))
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


def adamw(params, **kwargs: Any) -> torch.optim.AdamW:
    """AdamW with torch's fused kernel where every parameter is on a CUDA device (one kernel
    launch for all tensors; what TRL's default uses), and torch's default implementation
    elsewhere (on the CPU the fused kernel changes results in the last bits and is no faster
    at the embedded default's size). ``params``: parameters or param-group dicts."""
    groups = [{**g, "params": list(g["params"])} if isinstance(g, dict) else g for g in params]
    tensors = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
    fused = bool(tensors) and all(p.is_cuda and p.is_floating_point() for p in tensors)
    return torch.optim.AdamW(groups, fused=fused or None, **kwargs)


def clip_grad_norm(module: L.LightningModule, optimizer: torch.optim.Optimizer, max_norm: float) -> None:
    """Clip the gradients of ``optimizer``'s parameters to a global L2 norm of ``max_norm``.

    Lightning's own clipping (``module.clip_gradients``) refuses two of podyn's GPU settings: the
    fused AdamW of :func:`adamw` under mixed precision (it cannot tell that bf16 autocast has no
    loss scale to undo) and FSDP (torch's ``clip_grad_norm_`` would see only this rank's shard).
    Those two are handled here; every other case takes Lightning's path, so CPU runs are unchanged."""
    from lightning.fabric.plugins.precision.amp import _optimizer_handles_unscaling
    from lightning.pytorch.strategies import FSDPStrategy

    inner = getattr(optimizer, "optimizer", optimizer)  # manual optimisation hands a LightningOptimizer
    trainer = module._trainer  # None when a test drives the module without a Trainer
    fused = _optimizer_handles_unscaling(inner)
    fsdp = trainer is not None and isinstance(trainer.strategy, FSDPStrategy)
    if not (fused or fsdp):
        module.clip_gradients(optimizer, gradient_clip_val=max_norm, gradient_clip_algorithm="norm")
        return
    scaler = getattr(trainer.precision_plugin, "scaler", None) if trainer is not None else None
    if scaler is not None and fused:
        scaler.unscale_(inner)  # fp16: a fused step unscales only inside itself, so clip the true gradients
    if fsdp:
        trainer.strategy.model.clip_grad_norm_(max_norm)  # the root FSDP unit: norm over every shard
    else:
        torch.nn.utils.clip_grad_norm_([p for group in inner.param_groups for p in group["params"]], max_norm)


class TrainingModule(L.LightningModule):
    """The base of podyn's LightningModules: ``Trainer(gradient_clip_val=...)`` clips through
    :func:`clip_grad_norm`, so clipping works with the fused optimiser and with FSDP."""

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None, gradient_clip_algorithm=None
    ) -> None:
        if gradient_clip_val:
            clip_grad_norm(self, optimizer, float(gradient_clip_val))


def adamw_with_schedule(parameters, cfg: SupervisedConfig | DPOConfig) -> dict[str, Any]:
    """``configure_optimizers``' answer: AdamW with linear warm-up then ``cfg.lr_schedule``."""
    opt = adamw(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)
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


def record_weights(records: StepRecords, step: int, weights, source) -> None:
    """The component weights a step applied and, when the weight source measured G at this step
    (Coordinated PO), what it measured. How long that took is a timing, not a result: it goes to
    the run's timing file, so that records stay byte-identical across runs and resumes."""
    for name, value in vars(weights).items():
        records.add(step=step, kind=f"weight/{name}", value=float(value))
    history = getattr(source, "history", None)
    if history and history[-1]["step"] == step:
        for key, value in history[-1].items():
            if key not in ("step", "seconds"):
                records.add(step=step, kind=f"controller/{key}", value=float(value))


class MetricRows(L.Callback):
    """The logged metrics of every ``log_every_n_steps``-th training batch, as rows kept in
    the checkpoint: a resumed run's table is the uninterrupted run's. (Lightning's CSV logger,
    kept in ``workdir/csv`` for watching a run, appends the row of a batch only after that
    batch's checkpoint, so a kill can lose it.) ``step`` is the batch's index."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.rows: list[dict[str, Any]] = []

    def keeps(self, trainer: L.Trainer) -> bool:
        """Whether the metrics of the batch being trained are kept (every ``every``-th and the last)."""
        step = trainer.fit_loop.epoch_loop.batch_progress.total.completed  # not yet incremented for this batch
        return not ((step + 1) % self.every and step + 1 < trainer.num_training_batches)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if not self.keeps(trainer):
            return
        step = trainer.fit_loop.epoch_loop.batch_progress.total.completed
        values = {name: float(value) for name, value in sorted(trainer.callback_metrics.items())}
        self.rows.append({"step": step, **values})

    def state_dict(self) -> dict[str, Any]:
        return {"rows": list(self.rows)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])

    def write(self, path: Path) -> None:
        write_csv(path, pd.DataFrame(self.rows))


def metric_rows(trainer: L.Trainer) -> MetricRows:
    return next(c for c in trainer.callbacks if isinstance(c, MetricRows))


def metrics_kept(module: L.LightningModule) -> bool:
    """Whether the training modules log this batch's metrics: only on the batches whose metrics
    :class:`MetricRows` keeps (also the only ones Lightning's own loggers write, every
    ``log_every_n_steps``-th), or on every batch under a Trainer without it. ``self.log`` costs
    about a millisecond a call, 5% of a small model's DPO step on the CPU; the kept values are the
    same, since each kept batch logs every metric afresh."""
    trainer = module._trainer  # None outside a Trainer (a module called by hand)
    rows = next((c for c in trainer.callbacks if isinstance(c, MetricRows)), None) if trainer is not None else None
    return rows is None or rows.keeps(trainer)


class FullWeightsAtEnd(L.Callback):
    """Under FSDP each process holds a shard of the weights: gather the module's full state
    dict on rank 0 when training ends (every process takes part)."""

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] | None = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.state = trainer.strategy.lightning_module_state_dict()


def trained_model(trainer: L.Trainer, model: torch.nn.Module, prefix: str, fresh) -> torch.nn.Module:
    """The trained ``model`` (the LightningModule's attribute ``prefix``) on rank 0: itself,
    or under FSDP ``fresh()`` loaded with the gathered full weights."""
    gathered = next((c for c in trainer.callbacks if isinstance(c, FullWeightsAtEnd)), None)
    if gathered is None:
        return model
    unwrapped = fresh()
    unwrapped.load_state_dict({k.removeprefix(prefix): v for k, v in gathered.state.items() if k.startswith(prefix)})
    return unwrapped
