"""Resilience: a training stage killed midway (SIGKILL) resumes from its last Lightning
checkpoint when the same command is rerun, instead of starting again from step 0."""

from __future__ import annotations

import copy
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import podyn_exe, run_cmd, train_cmd, write_config


def kill_once_checkpointed(cmd: list[str], env: dict, workdir: Path, log: Path, timeout: float = 240) -> None:
    """Start ``cmd``; SIGKILL it (this process only) as soon as ``workdir/lightning/last.ckpt``
    exists. Fails if the command finishes first."""
    last = workdir / "lightning" / "last.ckpt"
    with open(log, "w") as handle:
        proc = subprocess.Popen(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        try:
            while not last.exists():
                if proc.poll() is not None:
                    pytest.fail(
                        f"the first run ended (rc {proc.returncode}) before writing {last}:\n{log.read_text()[-3000:]}"
                    )
                if time.monotonic() > deadline:
                    pytest.fail(f"no checkpoint after {timeout} s")
                time.sleep(0.02)
            assert proc.poll() is None, "the run finished before it could be killed; give it more steps"
        finally:
            proc.kill()  # SIGKILL
            proc.wait()
    assert proc.returncode == -9


def checkpoint(workdir: Path) -> dict:
    return torch.load(workdir / "lightning" / "last.ckpt", map_location="cpu", weights_only=False)


def logged_steps(workdir: Path) -> list[int]:
    frame = pd.read_csv(workdir / "csv" / "metrics.csv")
    return sorted(frame["step"].dropna().astype(int).unique())


def rerun_resumes(cmd: list[str], env: dict, workdir: Path, max_steps: int) -> tuple[int, subprocess.CompletedProcess]:
    killed_at = checkpoint(workdir)["global_step"]
    assert 0 < killed_at < max_steps
    # forget what the first attempt logged: what remains afterwards is what the rerun logged
    (workdir / "csv" / "metrics.csv").unlink(missing_ok=True)
    proc = run_cmd(cmd, env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"resuming from {workdir / 'lightning' / 'last.ckpt'}" in proc.stdout + proc.stderr
    steps = logged_steps(workdir)
    assert steps[0] >= killed_at, f"the rerun logged step {steps[0]} < {killed_at}: it restarted from scratch"
    assert steps[-1] == max_steps - 1
    assert checkpoint(workdir)["global_step"] == max_steps
    return killed_at, proc


def test_sft_resumes_after_sigkill(tmp_path, tiny_raw, assets, env):
    cfg = copy.deepcopy(tiny_raw)
    max_steps = 400
    cfg["sft"].update(max_steps=max_steps, batch_size=16)
    cfg["trainer"].update(checkpoint_every_n_steps=10, log_every_n_steps=5)
    config = write_config(tmp_path / "sft.yaml", cfg)
    workdir, out = tmp_path / "work", tmp_path / "sft_model"
    cmd = [
        *podyn_exe(),
        "sft",
        "--config",
        str(config),
        "--data",
        str(assets["data"]),
        "--base",
        str(assets["base"]),
        "--out",
        str(out),
        "--workdir",
        str(workdir),
    ]

    kill_once_checkpointed(cmd, env, workdir, tmp_path / "first.log")
    assert not out.exists()  # the killed run left no output that looks complete
    rerun_resumes(cmd, env, workdir, max_steps)
    assert (out / "config.json").exists() and (out / "tokenizer.json").exists()


def test_dpo_train_resumes_after_sigkill(tmp_path, tiny_raw, assets, env):
    cfg = copy.deepcopy(tiny_raw)
    max_steps = 200
    cfg["dpo"].update(max_steps=max_steps, checkpoint_every=0, eval_every=0)
    cfg["trainer"].update(checkpoint_every_n_steps=10, log_every_n_steps=5)
    config = write_config(tmp_path / "dpo.yaml", cfg)
    workdir, out = tmp_path / "work", tmp_path / "out"
    cmd = train_cmd("dpo", 0, config, assets, tmp_path)

    kill_once_checkpointed(cmd, env, workdir, tmp_path / "first.log")
    assert not (out / "generations.jsonl").exists()
    killed_at = checkpoint(workdir)["global_step"]
    assert len([r for r in checkpoint(workdir)["podyn_records"] if r["kind"] == "grad_norm"]) == killed_at
    rerun_resumes(cmd, env, workdir, max_steps)

    # the per-step records survived the kill: exactly one gradient norm per step, no step twice
    records = pd.read_csv(out / "records.csv")
    assert records.loc[records["kind"] == "grad_norm", "step"].tolist() == list(range(max_steps))
    generations = pd.read_json(out / "generations.jsonl", lines=True)
    assert generations["step"].unique().tolist() == [max_steps]
    assert len(generations) == tiny_raw["data"]["synthetic"]["n_test"]

    # a checkpoint cut short (a partial copy) is an error naming it, not a zip reader's traceback
    last = workdir / "lightning" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:4096])
    proc = run_cmd(cmd, env, timeout=300)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"podyn train: error: {last}: not a complete checkpoint" in proc.stderr
