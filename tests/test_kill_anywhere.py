"""Bit-identical resume: every training stage (SFT, reward model, DPO, PPO), SIGKILLed at
random moments and rerun until it finishes, writes byte for byte what an uninterrupted run
writes: its declared outputs, its analysis checkpoints and judged responses, and (for DPO
and PPO) the judged win rates.

The first attempt is killed just after a random one of its first resume checkpoints, so that
every stage really resumes mid-run; later attempts at a uniformly random moment of a whole
run (start-up, training, checkpoint writing or the final writes). Set
``PODYN_KILL_SEED`` to replay the kill moments of a failure (they are in its message)."""

from __future__ import annotations

import copy
import os
import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import podyn_exe, train_cmd, write_config

KILLS = 2  # attempts killed per stage, before the rerun that finishes
# resume checkpoints written before the last step with stage_config's settings
MID_RUN_SAVES = {"sft": 13, "reward-model": 7, "train-dpo": 5, "train-ppo": 1}
COMPARED_WORK = ("analysis", "generations", "final")  # work-directory parts that later stages read


def stage_command(stage: str, config: Path, assets: dict, root: Path) -> list[str]:
    out, work = root / "out", root / "work"
    common = ["--config", str(config), "--data", str(assets["data"]), "--workdir", str(work)]
    if stage == "sft":
        return [*podyn_exe(), "sft", *common, "--base", str(assets["base"]), "--out", str(out / "model")]
    if stage == "reward-model":
        outputs = ["--out", str(out / "model"), "--metrics", str(out / "rm.csv")]
        return [*podyn_exe(), "reward-model", *common, "--sft", str(assets["base"]), *outputs]
    return train_cmd(stage.removeprefix("train-"), 3, config, assets, root)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every output file and the work-directory files that later stages read, by path."""
    folders = [root / "out", *(root / "work" / name for name in COMPARED_WORK)]
    files = [f for d in folders if d.exists() for f in sorted(d.rglob("*")) if f.is_file()]
    # timing.csv holds wall-clock times: the one output that differs between identical runs
    return {str(f.relative_to(root)): f.read_bytes() for f in files if f.name != "timing.csv"}


def run_to_end(cmd: list[str], env: dict, log: Path) -> float:
    start = time.monotonic()
    with open(log, "w") as handle:
        proc = subprocess.run(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT, timeout=300)
    assert proc.returncode == 0, log.read_text()[-3000:]
    return time.monotonic() - start


def kill_at(cmd: list[str], env: dict, log: Path, delay: float, last: Path | None = None, saves: int = 0) -> str:
    """Start ``cmd``; SIGKILL it ``delay`` seconds after its start, or after it has written
    ``last`` ``saves`` times (each atomic save renames a new file into place). Returns what
    happened, for the failure message."""
    with open(log, "w") as handle:
        proc = subprocess.Popen(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT)
        try:
            seen, inode, deadline = 0, None, time.monotonic() + 300
            while seen < saves:
                ended = f"ended (rc {proc.returncode}) after {seen} of {saves} saves"
                assert proc.poll() is None, f"{ended}:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline
                try:
                    now = last.stat().st_ino
                except FileNotFoundError:
                    now = None
                if now is not None and now != inode:
                    seen, inode = seen + 1, now
                time.sleep(0.002)
            try:
                proc.wait(timeout=delay)
                assert proc.returncode == 0, log.read_text()[-3000:]
                return f"finished before {delay:.2f} s (after {saves} saves)"
            except subprocess.TimeoutExpired:
                return f"killed {delay:.2f} s after {saves} saves"
        finally:
            proc.kill()  # SIGKILL; this process only
            proc.wait()


def stage_config(tiny_raw: dict, tmp_path: Path) -> Path:
    cfg = copy.deepcopy(tiny_raw)
    cfg["sft"].update(max_steps=40)
    cfg["reward_model"].update(max_steps=24)
    cfg["dpo"].update(max_steps=16, checkpoint_every=4, eval_every=8)
    cfg["ppo"].update(iterations=6, checkpoint_every=2, eval_every=3)
    # every 3 optimizer steps: PPO's iterations take 2, so it saves after iterations 3 and 6;
    # SFT's 40 steps end after its last checkpoint (39), so a kill after fit retrains a step
    cfg["trainer"].update(checkpoint_every_n_steps=3, log_every_n_steps=2)
    return write_config(tmp_path / "config.yaml", cfg)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["sft", "reward-model", "train-dpo", "train-ppo"])
def test_killed_anywhere_resumes_bit_identically(stage, tmp_path, tiny_raw, assets, env):
    seed = int(os.environ.get("PODYN_KILL_SEED", random.randrange(10**6)))
    rng = random.Random(seed)
    config = stage_config(tiny_raw, tmp_path)
    root = tmp_path / "run"
    cmd = stage_command(stage, config, assets, root)

    duration = run_to_end(cmd, env, tmp_path / "reference.log")
    expected = snapshot(root)
    assert any(name.startswith("work/") for name in expected) or stage in ("sft", "reward-model")
    shutil.copytree(root / "out", tmp_path / "reference_out")
    shutil.rmtree(root)

    last = root / "work" / "lightning" / "last.ckpt"
    saves = rng.randint(1, max(1, MID_RUN_SAVES[stage] // 2))
    story = [kill_at(cmd, env, tmp_path / "attempt0.log", rng.uniform(0, 0.05), last, saves)]
    assert story[0].startswith("killed"), f"the first attempt {story[0]}; give the stage more steps"
    for attempt in range(1, KILLS):
        story.append(kill_at(cmd, env, tmp_path / f"attempt{attempt}.log", rng.uniform(0, duration)))
    run_to_end(cmd, env, tmp_path / "final.log")
    resumed = [log.name for log in sorted(tmp_path.glob("*.log")) if f"resuming from {last}" in log.read_text()]

    where = f"PODYN_KILL_SEED={seed}: attempts {story}; resumed in {resumed}"
    assert resumed, where
    actual = snapshot(root)
    assert sorted(actual) == sorted(expected), where
    differing = [name for name in expected if actual[name] != expected[name]]
    assert not differing, f"{where}; differing files: {differing}"
    if stage.startswith("train-"):
        resumed_judgement = judged(root / "out", tmp_path / "judge_a", tiny_raw, assets)
        assert resumed_judgement == judged(tmp_path / "reference_out", tmp_path / "judge_b", tiny_raw, assets)


def judged(out: Path, folder: Path, tiny_raw: dict, assets: dict) -> tuple[bytes, bytes]:
    """The gold judge's win-rate table and per-prompt scores for a run's responses."""
    from podyn.config import validate_config
    from podyn.evaluation import judge_run
    from podyn.stages.generate import generate_responses

    cfg = validate_config(copy.deepcopy(tiny_raw), "tiny")
    baseline = folder / "baseline.jsonl"
    generate_responses(cfg, data=assets["data"], model=assets["base"], out=baseline)
    judge_run(
        cfg,
        run="run",
        seed=3,
        generations=out / "generations.jsonl",
        baseline=baseline,
        out=folder / "winrate.csv",
        cache=folder / "cache",
        scores_out=folder / "scores.csv",
    )
    return (folder / "winrate.csv").read_bytes(), (folder / "scores.csv").read_bytes()
