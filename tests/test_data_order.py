"""The training data order (podyn.training.loader): the shuffled batches of a plain seeded
DataLoader, resumable from a saved position, and shared out over processes."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils.data import DataLoader

from podyn.training import loader as loader_mod
from podyn.training.loader import GlobalBatchSampler, resumable_loader


def test_same_batches_as_a_seeded_dataloader():
    rows = list(range(37))
    plain = DataLoader(rows, batch_size=8, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(5))
    # 4 epochs of 4 batches, each epoch ended after len(plain) batches, as Lightning does
    epochs = (itertools.islice(iter(plain), len(plain)) for _ in range(4))
    expected = [batch.tolist() for batch in itertools.chain.from_iterable(epochs)]
    ours = resumable_loader(rows, 8, len(expected), lambda b: b, seed=5, name="batch_size")
    assert len(ours) == 16
    assert [list(batch) for batch in ours] == expected


def test_resumes_at_the_saved_position():
    full = list(GlobalBatchSampler(30, 7, 11, seed=1))
    first = GlobalBatchSampler(30, 7, 11, seed=1)
    taken = list(itertools.islice(iter(first), 6))
    state = first.state_dict()
    second = GlobalBatchSampler(30, 7, 11, seed=1)
    second.load_state_dict(state)
    assert taken + list(second) == full
    with pytest.raises(ValueError, match="seed=1, this run 2"):
        GlobalBatchSampler(30, 7, 11, seed=2).load_state_dict(state)


def test_each_process_draws_its_share_of_the_global_batch(monkeypatch):
    whole = list(GlobalBatchSampler(40, 12, 9, seed=3))
    shares = []
    for rank in range(3):
        monkeypatch.setattr(loader_mod, "rank_and_world", lambda rank=rank: (rank, 3))
        shares.append(list(GlobalBatchSampler(40, 12, 9, seed=3)))
    assert [sum(parts, []) for parts in zip(*shares)] == whole
    monkeypatch.setattr(loader_mod, "rank_and_world", lambda: (0, 5))
    with pytest.raises(ValueError, match="dpo.batch_size: the global batch of 12 rows does not split evenly over 5"):
        list(GlobalBatchSampler(40, 12, 9, seed=3, name="dpo.batch_size"))
