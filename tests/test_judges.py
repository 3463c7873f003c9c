"""Judges and win-rate arithmetic (docs/method.md §6): the gold judge, the bootstrap CI, the
per-run judgement table and the winrates.csv contract, the length-controlled win rate and
the LLM judge's reply parsing."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from podyn.config import Config
from podyn.evaluation import WINRATE_COLUMNS, collect_winrates, judge_run
from podyn.io import DataError, write_jsonl
from podyn.judges import GoldJudge, JudgeError, make_judge
from podyn.length_control import length_controlled_win_rate
from podyn.llm_judge import parse_choice
from podyn.statistics import bootstrap_ci

REVERSE = "\n\nHuman: reverse three one four\n\nAssistant:"
SORT = "\n\nHuman: sort five two two\n\nAssistant:"
COPY = "\n\nHuman: copy nine zero one\n\nAssistant:"


# ----------------------------------------------------------------------------- gold judge


def test_gold_judge_win_tie_loss():
    judge = GoldJudge()
    assert judge.compare(REVERSE, " four one three", " three one four") == 1.0
    assert judge.compare(REVERSE, " three one four", " four one three") == 0.0
    assert judge.compare(REVERSE, " four one three", " four one three") == 0.5
    # different answers with the same gold reward tie: 1/3 each
    assert judge.compare(REVERSE, " three one four", " one one one") == 0.5
    # tie margin: 1/3 vs 2/3 - 0.2 = 0.4667 is a win at the default margin, a tie at 0.2
    assert judge.compare(REVERSE, " four one", " three one four") == 1.0
    assert GoldJudge(tie_margin=0.2).compare(REVERSE, " four one", " three one four") == 0.5
    assert judge.reward(REVERSE, " four one three") == 1.0


# ----------------------------------------------------------------------------- bootstrap CI


def test_bootstrap_ci_constant_vector():
    for c in (0.0, 0.5, 1.0):
        mean, low, high = bootstrap_ci(np.full(37, c), samples=500)
        assert mean == low == high == c


def test_bootstrap_ci_mean_and_coverage():
    scores = np.array([1, 1, 1, 0, 0.5, 1, 0, 1, 0.5, 1] * 5, dtype=float)
    mean, low, high = bootstrap_ci(scores, samples=2000, confidence=0.95, seed=3)
    assert mean == pytest.approx(scores.sum() / 50)  # 35 / 50
    assert mean == pytest.approx(0.7)
    assert low < mean < high
    # the normal-approximation interval: sd of the mean = sd / sqrt(n)
    half = 1.96 * scores.std() / np.sqrt(len(scores))
    assert low == pytest.approx(mean - half, abs=0.03)
    assert high == pytest.approx(mean + half, abs=0.03)
    # deterministic given the seed, and a wider confidence gives a wider interval
    assert bootstrap_ci(scores, 2000, 0.95, seed=3) == (mean, low, high)
    _, low99, high99 = bootstrap_ci(scores, 2000, 0.99, seed=3)
    assert low99 <= low and high99 >= high


# ----------------------------------------------------------------------------- judge_run and winrates.csv


def _gens(rows):
    return [{"step": s, "prompt_index": i, "prompt": p, "response": r} for s, i, p, r in rows]


def test_judge_run_and_collect_winrates(tmp_path):
    prompts = [REVERSE, SORT, COPY, REVERSE]
    baseline = tmp_path / "sft.jsonl"
    write_jsonl(
        baseline,
        _gens(
            [
                (0, i, p, r)
                for i, (p, r) in enumerate(
                    zip(prompts, [" three one four", " two five two", " nine zero one", " four one three"])
                )
            ]
        ),
    )
    generations = tmp_path / "gens.jsonl"
    # step 5: win, win, tie (both right), loss  -> (1 + 1 + 0.5 + 0) / 4 = 0.625
    # step 10: win, loss, tie, tie              -> (1 + 0 + 0.5 + 0.5) / 4 = 0.5
    step5 = [" four one three", " two two five", " nine zero one", " three one four"]
    step10 = [" four one three", " five", " nine zero one", " four one three"]
    write_jsonl(
        generations,
        _gens(
            [(5, i, p, r) for i, (p, r) in enumerate(zip(prompts, step5))]
            + [(10, i, p, r) for i, (p, r) in enumerate(zip(prompts, step10))]
        ),
    )
    cfg = Config.model_validate(
        {"judge": {"type": "gold", "tie_margin": 1e-9}, "winrate": {"bootstrap_samples": 500, "confidence": 0.95}}
    )
    frame = judge_run(
        cfg,
        run="dpo",
        seed=0,
        generations=generations,
        baseline=baseline,
        out=tmp_path / "j_dpo.csv",
        cache=tmp_path / "cache.jsonl",
    )
    assert frame["step"].tolist() == [5, 10]
    assert frame["win_rate"].tolist() == pytest.approx([0.625, 0.5])
    assert (frame["n_prompts"] == 4).all() and (frame["judge"] == "gold").all()
    assert (frame["ci_low"] <= frame["win_rate"]).all() and (frame["win_rate"] <= frame["ci_high"]).all()
    # the SFT baseline's mean gold reward: (1/3 + 1/3 + 1 + 1) / 4
    assert frame["sft_gold_reward"].tolist() == pytest.approx([(1 / 3 + 1 / 3 + 2) / 4] * 2)

    other = judge_run(
        cfg,
        run="ppo",
        seed=1,
        generations=baseline,
        baseline=baseline,
        out=tmp_path / "j_ppo.csv",
        cache=tmp_path / "cache2.jsonl",
    )
    assert other["win_rate"].tolist() == [0.5]  # the baseline against itself: all ties

    out = tmp_path / "eval" / "winrates.csv"
    collect_winrates(
        inputs=[tmp_path / "j_ppo.csv", tmp_path / "j_dpo.csv"], out=out, gold_out=tmp_path / "eval" / "gold.csv"
    )
    table = pd.read_csv(out)
    assert (
        list(table.columns)
        == WINRATE_COLUMNS
        == ["run", "seed", "step", "judge", "n_prompts", "n_invalid", "win_rate", "ci_low", "ci_high", "lc_win_rate"]
    )
    assert (table["n_invalid"] == 0).all()  # the gold judge always answers
    assert list(zip(table["run"], table["seed"], table["step"])) == [("dpo", 0, 5), ("dpo", 0, 10), ("ppo", 1, 0)]


def test_judge_run_rejects_mismatched_baseline(tmp_path):
    baseline, generations = tmp_path / "sft.jsonl", tmp_path / "gens.jsonl"
    write_jsonl(baseline, _gens([(0, 0, REVERSE, " four one three")]))
    write_jsonl(generations, _gens([(3, 0, SORT, " two two five")]))
    cfg = Config.model_validate({"judge": {"type": "gold"}, "winrate": {"bootstrap_samples": 10, "confidence": 0.95}})
    with pytest.raises(DataError, match="no matching baseline"):
        judge_run(
            cfg,
            run="dpo",
            seed=0,
            generations=generations,
            baseline=baseline,
            out=tmp_path / "out.csv",
            cache=tmp_path / "cache.jsonl",
        )


# ----------------------------------------------------------------------------- LLM judge: parsing
# (the HTTP path is tested in test_judge_http.py)


def test_parse_choice():
    assert parse_choice('Comparison: blah\nMore helpful: "B"') == "B"
    assert parse_choice("Comparison: blah\nMore helpful: A.") == "A"
    assert parse_choice("More helpful: C") is None
    assert parse_choice("no verdict") is None


def test_unknown_judge_type_names_the_setting(tmp_path):
    with pytest.raises(JudgeError, match="judge.type: unknown judge 'oracle'"):
        make_judge(SimpleNamespace(judge=SimpleNamespace(type="oracle")), tmp_path / "c.jsonl")


# ----------------------------------------------------------------------------- length-controlled win rate


def _lc_reference(y, d, ridge=1e-3):
    """The same penalised logistic fit by a general-purpose optimiser."""
    from scipy.optimize import minimize

    x = d / d.std()

    def loss(t):
        z = t[0] + t[1] * x
        return np.mean(np.logaddexp(0, z) - y * z) + 0.5 * ridge * t[1] ** 2

    res = minimize(loss, np.zeros(2), method="BFGS", options={"gtol": 1e-10})
    return 1 / (1 + np.exp(-res.x[0]))


def test_length_controlled_win_rate():
    rng = np.random.default_rng(0)
    y = rng.choice([0.0, 0.5, 1.0], size=200, p=[0.3, 0.2, 0.5])
    # no length difference, or one independent of the judgement (mirrored): the raw win rate
    assert length_controlled_win_rate(y, np.zeros(200)) == pytest.approx(y.mean(), abs=1e-9)
    assert length_controlled_win_rate(
        np.tile(y, 2), np.concatenate([np.full(200, 7.0), np.full(200, -7.0)])
    ) == pytest.approx(y.mean(), abs=1e-9)
    # wins explained by length: longer responses win 90%, shorter ones 10%, 80% are longer
    longer = rng.random(400) < 0.8
    d = np.where(longer, rng.integers(5, 30, 400), -rng.integers(5, 30, 400)).astype(float)
    y2 = (rng.random(400) < np.where(longer, 0.9, 0.1)).astype(float)
    lc = length_controlled_win_rate(y2, d)
    assert y2.mean() > 0.7 and abs(lc - 0.5) < 0.15
    assert lc == pytest.approx(_lc_reference(y2, d), abs=1e-6)
    # fractional judgements (a weighted judge) and invalid prompts (NaN, left out)
    p = np.clip(0.5 + d / 80 + rng.normal(0, 0.1, 400), 0, 1)
    assert length_controlled_win_rate(p, d) == pytest.approx(_lc_reference(p, d), abs=1e-6)
    with_nan = np.concatenate([p, [np.nan] * 5])
    assert length_controlled_win_rate(with_nan, np.concatenate([d, [1e6] * 5])) == pytest.approx(
        length_controlled_win_rate(p, d)
    )
    # all wins, all losses: the limit
    assert length_controlled_win_rate(np.ones(5), np.arange(5.0)) == 1.0
    assert length_controlled_win_rate(np.zeros(5), np.arange(5.0)) == 0.0


def test_tables_leave_out_invalid_prompts_and_report_lc(tmp_path):
    from podyn.config import WinrateConfig
    from podyn.results import read_scores
    from podyn.winrate_tables import winrate_table, write_tables

    wr_cfg = WinrateConfig(bootstrap_samples=200)
    for seed, scores in ((0, [1.0, 0.0, np.nan, 1.0]), (1, [1.0, 0.5, 0.0, np.nan])):
        frame = pd.DataFrame(
            {"step": 10, "prompt_index": range(4), "score": scores, "length_diff": [3.0, -2.0, 5.0, 0.0]}
        )
        (tmp_path / "dpo").mkdir(exist_ok=True)
        frame.to_csv(tmp_path / "dpo" / f"seed{seed}_scores.csv", index=False)
    scores = read_scores(sorted((tmp_path / "dpo").glob("*.csv")), ["dpo", "dpo"], [0, 1])
    assert len(scores) == 6 and not scores["score"].isna().any()  # the invalid prompts are left out
    table = winrate_table(scores, {}, wr_cfg)
    valid = scores["score"].to_numpy()
    assert table["final_lc_win_rate"].iloc[0] == pytest.approx(
        length_controlled_win_rate(valid, scores["length_diff"].to_numpy())
    )
    write_tables(table, tmp_path / "tables" / "winrates")
    assert "final LC win rate" in (tmp_path / "tables" / "winrates.md").read_text()
