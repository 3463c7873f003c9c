"""Statistics over the GLOBAL batch when training runs in several processes (Lightning
``ddp``/``fsdp``): every process holds its share of the global batch, rows in rank order,
and the statistics that define the objective (advantage whitening, TOP/MID/BOT tertiles)
must be those of the whole batch, as in a one-process run. Without a process group every
function here is the one-process computation."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

from ..objectives import masked_mean, masked_whiten, tertile_groups


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_distributed() -> bool:
    return rank_and_world()[1] > 1


def is_launched_worker() -> bool:
    """True in the processes that Lightning's launcher started for ranks > 0 (it sets
    ``LOCAL_RANK`` for them only). They rerun the stage's command: they must neither prepare
    the work directory nor write the stage's outputs, which rank 0 does."""
    return os.environ.get("LOCAL_RANK", "0") != "0"


def all_gather_objects(obj: Any) -> list[Any]:
    """``obj`` of every process, in rank order (``[obj]`` in one process)."""
    rank, world = rank_and_world()
    if world == 1:
        return [obj]
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, obj)
    return gathered


def global_sum(value: torch.Tensor) -> torch.Tensor:
    """The sum of ``value`` over processes (a copy; no gradient flows through it)."""
    total = value.detach().clone()
    if is_distributed():
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def gather_rows(values: torch.Tensor) -> torch.Tensor:
    """Concatenate every process's rows (same shape beyond dim 0 on every process), in rank order."""
    if not is_distributed():
        return values
    parts = all_gather_objects(values.detach().cpu())
    return torch.cat(parts).to(values.device)


def global_masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """:func:`podyn.objectives.masked_mean` over the global batch."""
    if not is_distributed():
        return masked_mean(values, mask)
    total = global_sum(torch.stack([(values * mask).sum(), mask.sum()]).double())
    return (total[0] / total[1].clamp(min=1)).to(values.dtype)


def global_masked_whiten(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """:func:`podyn.objectives.masked_whiten` with the mean and unbiased variance of the
    masked elements of the global batch (TRL's whitening of advantages)."""
    if not is_distributed():
        return masked_whiten(values, mask)
    mean = global_masked_mean(values, mask)
    centered = values - mean
    total = global_sum(torch.stack([(centered.pow(2) * mask).sum(), mask.sum()]).double())
    var = (total[0] / (total[1] - 1).clamp(min=1)).to(values.dtype)
    return centered * torch.rsqrt(var + 1e-8) * mask


def global_tertile_groups(scores: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`podyn.objectives.tertile_groups` of the global batch, returned for this process's
    rows. Elements are ranked in global row-major order (rank by rank), so ties break as in a
    one-process batch whatever each process's padding width."""
    if not is_distributed():
        return tertile_groups(scores, mask)
    valid = torch.ones_like(scores, dtype=torch.bool) if mask is None else mask.bool()
    local = scores.detach()[valid]  # row-major order
    counts = [int(n) for n in all_gather_objects(local.numel())]
    everything = torch.cat(all_gather_objects(local.cpu()))
    rank, _ = rank_and_world()
    start = sum(counts[:rank])
    mine = tertile_groups(everything)[start : start + counts[rank]].to(scores.device)
    groups = torch.full(scores.shape, -1, dtype=torch.long, device=scores.device)
    groups[valid] = mine
    return groups


def gather_padded_rows(parts: list[torch.Tensor], pad_left: bool, pad_value: float = 0) -> torch.Tensor:
    """Concatenate 2-D tensors of different widths, padding each on the left or right."""
    width = max(p.shape[1] for p in parts)
    padded = []
    for p in parts:
        pad = torch.full((p.shape[0], width - p.shape[1]), pad_value, dtype=p.dtype)
        padded.append(torch.cat([pad, p] if pad_left else [p, pad], 1))
    return torch.cat(padded)


def full_weights(trainer, prefix: str) -> dict[str, torch.Tensor] | None:
    """Under FSDP: the full weights of the LightningModule's attribute ``prefix`` (e.g.
    ``"policy."``), gathered on rank 0 (every process must call this); otherwise None, as
    each process holds the whole model."""
    from lightning.pytorch.strategies import FSDPStrategy

    if not isinstance(trainer.strategy, FSDPStrategy):
        return None
    state = trainer.strategy.lightning_module_state_dict()
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
