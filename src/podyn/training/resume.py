"""What a Lightning checkpoint needs beyond weights and optimiser for a resumed run to be
bit-identical to an uninterrupted one: the random number generators of every process (PPO
samples its rollouts and shuffles its mini-batches with torch's global generator), and a
checkpoint file that a kill can never leave half-written. The data order is
:mod:`podyn.training.loader`'s."""

from __future__ import annotations

import random
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ..io import TORCH_LOAD_ERRORS, DataError, atomic_path, unreadable_torch
from .distributed import all_gather_objects


def rng_states() -> dict[str, Any]:
    """The states of torch's CPU (and current CUDA device's) generator, numpy's and python's."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    numpy_state = (kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached))
    # tensors and plain python values only: Lightning loads checkpoints with weights_only=True
    states: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["torch.cuda"] = torch.cuda.get_rng_state()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    random.setstate(states["python"])
    if "torch.cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["torch.cuda"])


class RNGStateCheckpoint(L.Callback):
    """Saves every process's generator states in the checkpoint and restores them when
    training (re)starts, after Lightning has restored everything else (hooks such as
    ``on_fit_start`` that run before that cannot disturb the restored states)."""

    def __init__(self) -> None:
        self._to_restore: list[dict[str, Any]] | None = None

    def state_dict(self) -> dict[str, Any]:
        # called on every rank while the checkpoint is assembled; rank 0 writes it
        return {"per_rank": all_gather_objects(rng_states())}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._to_restore = state_dict["per_rank"]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._to_restore is None:
            return
        if len(self._to_restore) != trainer.world_size:
            raise RuntimeError(
                f"the checkpoint holds the random states of {len(self._to_restore)} processes, this run has "
                f"{trainer.world_size}; resume with the same trainer.devices"
            )
        set_rng_states(self._to_restore[trainer.global_rank])
        self._to_restore = None


RESTART_HINT = "; if it is damaged, delete it to restart this run from step 0"


def check_checkpoint(path: Path) -> None:
    """Refuse a checkpoint that is not a whole torch file (``torch.save`` writes a zip archive,
    whose directory is at its end): a truncated copy or a damaged disk gets this error, naming
    the file, before Lightning's restore reads it; only the file's tail is read. Every strategy
    podyn uses writes ``last.ckpt`` as one such file (FSDP with ``state_dict_type="full"``)."""
    if path.is_dir():
        raise DataError(f"{path}: a directory, not a checkpoint file; move it away to restart this run from step 0")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not a complete checkpoint (no zip directory at its end: truncated?){RESTART_HINT}")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint beside its path and renames it into place, so that a job killed
    while saving keeps the previous ``last.ckpt`` intact; a checkpoint that cannot be read is
    an error naming the file. (FSDP's restore reads its full checkpoint without this class: there
    :func:`check_checkpoint` catches a truncated file, and damage inside it is Lightning's error.)"""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        with atomic_path(Path(path)) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)

    def load_checkpoint(self, path, *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return super().load_checkpoint(path, *args, **kwargs)
        except TORCH_LOAD_ERRORS as err:
            raise unreadable_torch(path, err, RESTART_HINT) from err
