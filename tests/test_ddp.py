"""Several training processes (Lightning DDP, 2 gloo processes on the CPU): each draws its
share of the same global batch, so a DPO run's loss curve is the one-process run's; PPO
whitens advantages and forms its TOP/MID/BOT tertiles over the global rollout batch; only
rank 0 writes the analysis checkpoints and records, holding the global batch."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import run_cmd, train_cmd, write_config


def train(run: str, cfg: dict, root: Path, assets: dict, env: dict) -> Path:
    config = write_config(root.with_suffix(".yaml"), cfg)
    cmd = train_cmd(run, 0, config, assets, root)
    proc = run_cmd(cmd, env, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    if cfg["trainer"].get("devices", 1) == 2:
        assert "MEMBER: 2/2" in proc.stdout + proc.stderr  # rank 1 joined
    return root


def ddp(cfg: dict) -> dict:
    cfg = copy.deepcopy(cfg)
    cfg["trainer"].update(strategy="ddp", devices=2, accelerator="cpu")
    return cfg


@pytest.mark.slow
def test_dpo_two_processes_match_one(tmp_path, tiny_raw, assets, env):
    cfg = copy.deepcopy(tiny_raw)
    cfg["dpo"].update(max_steps=8, batch_size=16, checkpoint_every=4, eval_every=4)
    cfg["trainer"].update(log_every_n_steps=1)
    one = train("dpo", cfg, tmp_path / "one", assets, env)
    two = train("dpo", ddp(cfg), tmp_path / "two", assets, env)

    curve_one = pd.read_csv(one / "out" / "metrics.csv")
    curve_two = pd.read_csv(two / "out" / "metrics.csv")
    assert curve_two["step"].tolist() == list(range(8))
    for column in ("loss", "rewards/margins", "logps/chosen", "grad_norm"):
        two_processes, one_process = torch.tensor(curve_two[column].values), torch.tensor(curve_one[column].values)
        torch.testing.assert_close(two_processes, one_process, rtol=1e-5, atol=0)
    # the analysis checkpoints hold the global batch (rank 0's rows, then rank 1's): the same pairs
    for step in (0, 4):
        batch_one = torch.load(one / "work" / "analysis" / f"step_{step}" / "batch.pt", weights_only=False)
        batch_two = torch.load(two / "work" / "analysis" / f"step_{step}" / "batch.pt", weights_only=False)
        assert torch.equal(batch_one["indices"], batch_two["indices"]) and len(batch_two["indices"]) == 16
    records = pd.read_csv(two / "out" / "records.csv")
    assert records.loc[records["kind"] == "grad_norm", "step"].tolist() == list(range(8))  # written once, by rank 0
    generations = pd.read_json(two / "out" / "generations.jsonl", lines=True)
    assert sorted(generations["step"].unique()) == [4, 8]
    assert len(generations) == 2 * tiny_raw["data"]["synthetic"]["n_test"]


@pytest.mark.slow
def test_ppo_two_processes_use_global_batch_statistics(tmp_path, tiny_raw, assets, env):
    from podyn.config import validate_config
    from podyn.models import load_policy
    from podyn.objectives import masked_mean, masked_whiten, tertile_groups
    from podyn.training.ppo import response_logps

    cfg = copy.deepcopy(tiny_raw)
    cfg["ppo"].update(iterations=2, rollout_batch_size=16, mini_batch_size=8, checkpoint_every=1, eval_every=2)
    root = train("ppo", ddp(cfg), tmp_path / "two", assets, env)

    records = pd.read_csv(root / "out" / "records.csv")
    for step in (0, 1):
        batch = torch.load(root / "work" / "analysis" / f"step_{step}" / "batch.pt", weights_only=False)
        mask = batch["response_mask"]
        assert mask.shape[0] == 16  # both processes' rollouts
        # whitened over the global batch ...
        whitened = masked_whiten(batch["raw_advantages"], mask)
        torch.testing.assert_close(batch["advantages"], whitened, rtol=1e-5, atol=1e-5)
        # ... not per process
        half = slice(0, 8)
        per_process = masked_whiten(batch["raw_advantages"][half], mask[half])
        assert not torch.allclose(batch["advantages"][half], per_process, atol=1e-3)
        assert torch.equal(batch["groups"], tertile_groups(batch["advantages"].abs(), mask))
        # the figure-3 records are the global groups' mean raw advantages (and mean |raw advantage|)
        for group_id, name in enumerate(("top", "mid", "bot")):
            in_group = (batch["groups"] == group_id).float() * mask
            raw = batch["raw_advantages"]
            for kind, values in (("raw_advantage", raw), ("abs_raw_advantage", raw.abs())):
                at = (records["step"] == step) & (records["kind"] == f"{kind}/{name}")
                value = records.loc[at, "value"].item()
                assert value == pytest.approx(float(masked_mean(values, in_group)), rel=1e-5, abs=1e-6)
        # the re-padded global rollout gives the log-probs the processes sampled with
        typed = validate_config(copy.deepcopy(cfg), "ppo")
        policy = load_policy(root / "work" / "analysis" / f"step_{step}", typed.model)
        with torch.no_grad():
            logps = response_logps(policy, batch, typed.ppo.temperature) * mask
        torch.testing.assert_close(logps, batch["old_logps"], rtol=1e-4, atol=1e-5)
    assert records.loc[records["kind"] == "grad_norm", "step"].tolist() == [0, 0, 1, 1]


@pytest.mark.slow
def test_ppo_two_processes_share_one_reward_normalisation(tmp_path, tiny_raw, assets, env):
    """ppo.normalize_reward under DDP: the gain and bias are fitted once, on both processes'
    SFT rollouts, and every process normalises its rollouts with that same pair (before, each
    process fitted its own on its own random stream)."""
    from podyn.config import validate_config
    from podyn.models import load_scalar_model, score_at

    cfg = copy.deepcopy(tiny_raw)
    cfg["ppo"].update(
        iterations=1, rollout_batch_size=16, mini_batch_size=8, checkpoint_every=1, eval_every=1,
        normalize_reward=True, reward_norm_prompts=32, reward_norm_mean=0.5, reward_norm_std=2.0,
    )  # fmt: skip
    cfg["trainer"].update(checkpoint_every_n_steps=1)
    root = train("ppo", ddp(cfg), tmp_path / "two", assets, env)

    checkpoint = torch.load(root / "work" / "lightning" / "last.ckpt", weights_only=False, map_location="cpu")
    gain, bias = checkpoint["podyn_reward_norm"]  # rank 0's pair
    assert gain != pytest.approx(1.0) and bias != pytest.approx(0.0)  # a fitted normalisation, not the identity
    batch = torch.load(root / "work" / "analysis" / "step_0" / "batch.pt", weights_only=False)
    assert batch["sequences"].shape[0] == 16  # rank 0's 8 rollouts, then rank 1's
    typed = validate_config(copy.deepcopy(cfg), "ppo")
    reward = load_scalar_model(assets["reward"], typed.model).eval()
    last = batch["prompt_width"] + batch["response_mask"].sum(1).long() - 1
    with torch.no_grad():
        raw = score_at(reward, batch["sequences"], batch["attention_mask"], last)
    penalty = typed.ppo.missing_eos_penalty * (~batch["ended"]).float()
    for rows in (slice(0, 8), slice(8, 16)):  # each process's rollouts, normalised with rank 0's gain and bias
        expected = gain * raw[rows] + bias - penalty[rows]
        torch.testing.assert_close(batch["scores"][rows], expected.to(batch["scores"].dtype), rtol=1e-4, atol=1e-4)
