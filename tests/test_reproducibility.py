"""Seeded reproducibility on CPU: two ``podyn train`` runs with the same seed, in separate
processes, write identical generations, per-step records and metrics."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from conftest import TINY_CONFIG, train_cmd


def run_concurrently(cmds: list[list[str]], env: dict, logs: list[Path]) -> None:
    procs = []
    for cmd, log in zip(cmds, logs):
        handle = open(log, "w")
        procs.append((subprocess.Popen(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT), handle, log))
    for proc, handle, log in procs:
        proc.wait(timeout=300)
        handle.close()
        assert proc.returncode == 0, log.read_text()[-3000:]


@pytest.mark.parametrize("run", ["dpo", "ppo"])
def test_same_seed_same_run(run, tmp_path, assets, env):
    roots = [tmp_path / "a", tmp_path / "b"]
    run_concurrently(
        [train_cmd(run, 7, TINY_CONFIG, assets, r) for r in roots], env, [tmp_path / "a.log", tmp_path / "b.log"]
    )

    a, b = (r / "out" for r in roots)
    generations = (a / "generations.jsonl").read_text()
    assert generations and generations == (b / "generations.jsonl").read_text()
    assert (a / "records.csv").read_text() == (b / "records.csv").read_text()
    assert (a / "metrics.csv").read_text() == (b / "metrics.csv").read_text()
    # the recorded training batch of the last analysis checkpoint is the same batch
    last = sorted((roots[0] / "work" / "analysis").iterdir(), key=lambda p: int(p.name.split("_")[1]))[-1]
    batch_a = torch.load(last / "batch.pt", weights_only=False)
    batch_b = torch.load(roots[1] / "work" / "analysis" / last.name / "batch.pt", weights_only=False)
    key = "indices" if run == "dpo" else "sequences"
    assert torch.equal(batch_a[key], batch_b[key])
