"""The paper's run grid (issue 4): names, step scaling, and the Snakemake jobs it expands to."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from podyn.config import resolve_run, validate_config
from podyn.schedules import weights_at

REPO = Path(__file__).resolve().parents[1]
GRID = [
    "dpo",
    "dpo_wo_neg_early",
    "dpo_wo_pos_late",
    "cdpo_1",
    "cdpo_2",
    "cdpo_3",
    "ppo",
    "ppo_wo_top",
    "ppo_wo_mid",
    "cppo_top_1",
    "cppo_top_2",
    "cppo_top_3",
    "cppo_mid_1",
    "cppo_mid_2",
    "cppo_mid_3",
    "hppo_1",
    "hppo_2",
    "hppo_3",
    "copo_dpo",
    "copo_ppo",
]


@pytest.fixture(scope="module")
def config():
    return validate_config(yaml.safe_load((REPO / "config.yaml").read_text()), "config.yaml")


def test_default_config_holds_the_papers_grid(config):
    assert list(config.runs) == GRID


@pytest.mark.parametrize("run,t1,t2", [("cdpo_1", 2500, 5500), ("cdpo_2", 2500, 6500), ("cdpo_3", 3000, 8000)])
def test_cdpo_cases_use_scaled_paper_steps(config, run, t1, t2):
    scale = config.dpo.step_scale
    weights = resolve_run(config, run).weights
    a, b = t1 * scale, t2 * scale
    assert (weights_at(weights, a - 1).pos, weights_at(weights, a - 1).neg) == (1.0, 0.0)  # POS only
    assert (weights_at(weights, a).pos, weights_at(weights, a).neg) == (1.0, 1.0)  # plain DPO
    assert (weights_at(weights, b).pos, weights_at(weights, b).neg) == (1.0, 1.0)
    assert (weights_at(weights, b + 1).pos, weights_at(weights, b + 1).neg) == (0.0, 1.0)  # NEG only


def test_dpo_ablations_use_scaled_paper_steps(config):
    scale = config.dpo.step_scale
    wo_neg = resolve_run(config, "dpo_wo_neg_early").weights
    wo_pos = resolve_run(config, "dpo_wo_pos_late").weights
    assert weights_at(wo_neg, 3000 * scale - 1).neg == 0.0 and weights_at(wo_neg, 3000 * scale).neg == 1.0
    assert weights_at(wo_pos, 6000 * scale).pos == 1.0 and weights_at(wo_pos, 6000 * scale + 1).pos == 0.0


@pytest.mark.parametrize(
    "run,group,value",
    [
        ("cppo_top_1", "top", 0.3),
        ("cppo_top_2", "top", 0.7),
        ("cppo_top_3", "top", 0.9),
        ("cppo_mid_1", "mid", 0.7),
        ("cppo_mid_2", "mid", 0.5),
        ("cppo_mid_3", "mid", 0.9),
        ("ppo_wo_top", "top", 0.0),
        ("ppo_wo_mid", "mid", 0.0),
    ],
)
def test_cppo_cases_weight_one_group(config, run, group, value):
    weights = weights_at(resolve_run(config, run).weights, 7)
    assert getattr(weights, group) == value
    assert all(getattr(weights, g) == 1.0 for g in ("pos", "neg", "top", "mid", "bot") if g != group)


@pytest.mark.parametrize("run,period,amplitude", [("hppo_2", 5, 0.05), ("hppo_3", 20, 0.01)])
def test_hppo_cases_oscillate(config, run, period, amplitude):
    weights = resolve_run(config, run).weights
    pos = [weights_at(weights, t).pos for t in range(4 * period)]
    neg = [weights_at(weights, t).neg for t in range(4 * period)]
    assert max(pos) == pytest.approx(1 + amplitude, rel=0.05) and min(pos) == pytest.approx(1 - amplitude, rel=0.05)
    assert [p + n for p, n in zip(pos, neg)] == pytest.approx([2.0] * len(pos))
    assert pos[:period] == pytest.approx(pos[period : 2 * period])


def _dry_run_jobs(tmp_path: Path, *config_args: str) -> dict[str, int]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-n",
        "--cores",
        "2",
        "--directory",
        str(REPO),
        "--snakefile",
        str(REPO / "Snakefile"),
        "--config",
        f"results_dir={tmp_path}",
        *config_args,
    ]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    table = out.stdout.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_grid_expands_to_one_job_per_run_and_seed(tmp_path):
    jobs = _dry_run_jobs(tmp_path)
    assert jobs["train"] == 20 and jobs["judge"] == 20 and jobs["coordination"] == 1
    assert jobs["dynamics"] == 2 and jobs["final_responses"] == 2
    assert jobs["sft"] == 1 and jobs["reward_model"] == 1 and jobs["ablations"] == 1


def test_seeds_multiply_the_grid(tmp_path):
    jobs = _dry_run_jobs(tmp_path, "seeds=[0,1,2]")
    assert jobs["train"] == 60 and jobs["judge"] == 60 and jobs["dynamics"] == 6
    assert jobs["sft"] == 1  # data, SFT and the reward model are shared by every seed
