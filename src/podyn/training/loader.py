"""The training data order: shuffled global batches whose position is part of the Lightning
checkpoint, so that a resumed run draws exactly the batches an uninterrupted run would, and
that several processes each draw their share of the same global batch.

Lightning saves ``state_dict()`` of a train loader that has one (``loops.fit_loop
.state_dict.combined_loader``) and hands it back to ``load_state_dict`` before iterating on
resume. The loader's length is the number of batches the whole run consumes (one Lightning
"epoch"), so Lightning never pre-fetches a batch and the saved position is exactly the number
of batches trained on."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

from .distributed import rank_and_world


class GlobalBatchSampler:
    """Yields this process's rows of each global batch.

    Data epoch ``e`` is a permutation drawn from ``torch.Generator().manual_seed(seed)``;
    global batch ``b`` is the ``b % per_epoch``-th slice of ``batch_size`` rows of epoch
    ``b // per_epoch`` (incomplete last slices are dropped). The permutations are the ones
    ``DataLoader(shuffle=True, drop_last=True, generator=Generator().manual_seed(seed))`` draws
    (it takes one int64 from the generator for its workers' seed before each epoch), so a
    one-process run sees the batches it saw before this sampler existed. With ``W``
    processes, rank ``r`` gets rows ``[r*B/W, (r+1)*B/W)`` of every global batch."""

    def __init__(self, n_rows: int, batch_size: int, num_batches: int, seed: int, name: str = "batch_size") -> None:
        if batch_size > n_rows:
            raise ValueError(f"{name}: a batch of {batch_size} rows is larger than the {n_rows} rows of the data")
        self.n_rows = n_rows
        self.batch_size = batch_size
        self.num_batches = num_batches
        self.seed = seed
        self.name = name
        self.batches_done = 0

    def __len__(self) -> int:
        return self.num_batches

    def _permutations(self) -> Iterator[torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        while True:
            torch.empty((), dtype=torch.int64).random_(generator=generator)  # DataLoader's worker base seed
            yield torch.randperm(self.n_rows, generator=generator)

    def share(self) -> tuple[int, int]:
        """(first row, row count) of this process within a global batch."""
        rank, world = rank_and_world()
        if self.batch_size % world:
            raise ValueError(
                f"{self.name}: the global batch of {self.batch_size} rows does not split evenly over {world} processes"
            )
        size = self.batch_size // world
        return rank * size, size

    def __iter__(self) -> Iterator[list[int]]:
        start, size = self.share()
        if self.batches_done >= self.num_batches:
            # Lightning wants more batches than the run's steps consume: it would loop over empty epochs
            raise RuntimeError(
                f"{self.name}: all {self.num_batches} batches of the run were drawn before max_steps was reached"
            )
        per_epoch = self.n_rows // self.batch_size
        permutations = self._permutations()
        epoch, permutation = -1, None
        while self.batches_done < self.num_batches:
            wanted, slot = divmod(self.batches_done, per_epoch)
            while epoch < wanted:
                permutation, epoch = next(permutations), epoch + 1
            first = slot * self.batch_size + start
            self.batches_done += 1
            yield permutation[first : first + size].tolist()

    def state_dict(self) -> dict[str, Any]:
        return {
            "batches_done": self.batches_done,
            "n_rows": self.n_rows,
            "batch_size": self.batch_size,
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("n_rows", "batch_size", "seed"):
            if state[key] != getattr(self, key):
                raise ValueError(f"the checkpoint's data order has {key}={state[key]}, this run {getattr(self, key)}")
        self.batches_done = state["batches_done"]


class ResumableLoader(DataLoader):
    """A DataLoader over a :class:`GlobalBatchSampler` whose position Lightning checkpoints."""

    def __init__(self, dataset, sampler: GlobalBatchSampler, collate_fn: Callable) -> None:
        # a private generator: the DataLoader's per-epoch seed draw must not touch the global RNG
        super().__init__(dataset, batch_sampler=sampler, collate_fn=collate_fn, generator=torch.Generator())
        self.global_sampler = sampler

    def state_dict(self) -> dict[str, Any]:
        return self.global_sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.global_sampler.load_state_dict(state)


def resumable_loader(
    dataset, batch_size: int, num_batches: int, collate: Callable, seed: int, name: str
) -> ResumableLoader:
    """Shuffled batches of ``batch_size`` rows (global, over all processes) for a run of
    ``num_batches`` batches; ``name`` is the config key of the batch size, for error messages."""
    return ResumableLoader(dataset, GlobalBatchSampler(len(dataset), batch_size, num_batches, seed, name), collate)
