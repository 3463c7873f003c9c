"""The Snakemake workflow: the dry-run DAG, config validation at start-up, and the whole DAG
end to end on the tiny config with the output contract checked."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from conftest import run_cmd, snakemake, write_config

SINGLE_JOBS = ("prepare_data", "base_model", "sft", "reward_model", "reference_logps", "sft_generations", "winrates", "all")


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.MULTILINE)}


def expected_steps(total: int, every: int) -> list[int]:
    return (list(range(every, total, every)) if every > 0 else []) + [total]


def test_dry_run_shows_the_dag(tmp_path, tiny_raw, tiny_cfg, env):
    proc = run_cmd(snakemake(tmp_path, "-n"), env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = job_counts(proc.stdout + proc.stderr)
    for job in SINGLE_JOBS:
        assert counts.get(job) == 1, (job, counts)
    n_runs = len(tiny_cfg.runs) * len(tiny_cfg.seeds)
    assert counts["train"] == n_runs and counts["judge"] == n_runs
    assert not (tmp_path / "results").exists()  # a dry run writes nothing

    # one job per run and seed
    three_seeds = write_config(tmp_path / "seeds.yaml", dict(tiny_raw, seeds=[0, 1, 2]))
    proc = run_cmd(snakemake(tmp_path, "-n", configfile=three_seeds), env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts["train"] == 3 * len(tiny_cfg.runs) and counts["judge"] == 3 * len(tiny_cfg.runs)
    assert counts["sft"] == 1


def test_snakemake_rejects_a_bad_config(tmp_path, tiny_raw, env):
    bad = dict(tiny_raw, dpo={**tiny_raw["dpo"], "beta": -1})
    config = write_config(tmp_path / "bad.yaml", bad)
    proc = run_cmd(snakemake(tmp_path, "-n", configfile=config), env, cwd=tmp_path)
    assert proc.returncode != 0
    assert "invalid value at 'dpo.beta'" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_e2e_output_contract(e2e, tiny_cfg):
    _, results = e2e
    root = results / tiny_cfg.experiment
    table = pd.read_csv(root / "eval" / "winrates.csv")
    assert list(table.columns) == ["run", "seed", "step", "judge", "n_prompts", "win_rate", "ci_low", "ci_high"]

    expected = set()
    for run, spec in tiny_cfg.runs.items():
        hyper = getattr(tiny_cfg, spec.objective)
        total = hyper.max_steps if spec.objective == "dpo" else hyper.iterations
        for seed in tiny_cfg.seeds:
            expected |= {(run, seed, step) for step in expected_steps(total, hyper.eval_every)}
    got = list(zip(table["run"], table["seed"], table["step"]))
    assert len(got) == len(set(got)) and set(got) == expected

    n = tiny_cfg.data.synthetic.n_test
    assert (table["n_prompts"] == n).all()
    assert (table["judge"] == "gold").all()
    assert ((table["win_rate"] >= 0) & (table["win_rate"] <= 1)).all()
    assert (table["ci_low"] <= table["win_rate"]).all() and (table["win_rate"] <= table["ci_high"]).all()
    # a win rate is a mean of 1 / 0.5 / 0 scores over n prompts: a multiple of 1 / (2n)
    assert ((table["win_rate"] * 2 * n).round(9) % 1 == 0).all()

    rm = pd.read_csv(root / "eval" / "reward_model.csv")
    assert len(rm) == 1
    assert 0.0 <= float(rm["accuracy"].iloc[0]) <= 1.0
    assert int(rm["n_pairs"].iloc[0]) == tiny_cfg.data.synthetic.n_pref_heldout

    # every run wrote its declared outputs, Lightning's CSV metrics and a log
    for run in tiny_cfg.runs:
        out = root / "runs" / run / "seed0"
        for name in ("generations.jsonl", "records.csv", "metrics.csv"):
            assert (out / name).stat().st_size > 0, out / name
        assert (root / "logs" / "train" / f"{run}_seed0.log").exists()
    metrics = pd.read_csv(root / "runs" / "dpo" / "seed0" / "metrics.csv")
    assert {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected"} <= set(metrics.columns)
    metrics = pd.read_csv(root / "runs" / "ppo" / "seed0" / "metrics.csv")
    assert {"objective/kl", "policy/clipfrac_avg", "val/ratio"} <= set(metrics.columns)
    for model in ("base", "sft", "reward"):
        assert (root / "models" / model / "config.json").exists()


@pytest.mark.slow
def test_e2e_rerun_has_nothing_to_do(e2e, env):
    workdir, results = e2e
    proc = run_cmd(snakemake(workdir, "-n", "--config", f"results_dir={results}"), env, cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr
