"""Judges and win-rate arithmetic (method.md §6): the gold judge, the bootstrap CI, the
per-run judgement table and the winrates.csv contract, and the OpenAI judge's position swap,
tie rule, on-disk cache and error reporting (with a fake client: no network)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from podyn.evaluation import WINRATE_COLUMNS, collect_winrates, judge_run
from podyn.io import DataError, write_jsonl
from podyn.config import Config
from podyn.judges import GoldJudge, JudgeError, OpenAIJudge, parse_choice
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
    write_jsonl(baseline, _gens([(0, i, p, r) for i, (p, r) in enumerate(zip(prompts, [" three one four", " two five two", " nine zero one", " four one three"]))]))
    generations = tmp_path / "gens.jsonl"
    # step 5: win, win, tie (both right), loss  -> (1 + 1 + 0.5 + 0) / 4 = 0.625
    # step 10: win, loss, tie, tie              -> (1 + 0 + 0.5 + 0.5) / 4 = 0.5
    step5 = [" four one three", " two two five", " nine zero one", " three one four"]
    step10 = [" four one three", " five", " nine zero one", " four one three"]
    write_jsonl(generations, _gens([(5, i, p, r) for i, (p, r) in enumerate(zip(prompts, step5))] + [(10, i, p, r) for i, (p, r) in enumerate(zip(prompts, step10))]))
    cfg = Config.model_validate({"judge": {"type": "gold", "tie_margin": 1e-9}, "winrate": {"bootstrap_samples": 500, "confidence": 0.95}})
    frame = judge_run(cfg, run="dpo", seed=0, generations=generations, baseline=baseline, out=tmp_path / "j_dpo.csv", cache=tmp_path / "cache.jsonl")
    assert frame["step"].tolist() == [5, 10]
    assert frame["win_rate"].tolist() == pytest.approx([0.625, 0.5])
    assert (frame["n_prompts"] == 4).all() and (frame["judge"] == "gold").all()
    assert (frame["ci_low"] <= frame["win_rate"]).all() and (frame["win_rate"] <= frame["ci_high"]).all()
    # the SFT baseline's mean gold reward: (1/3 + 1/3 + 1 + 1) / 4
    assert frame["sft_gold_reward"].tolist() == pytest.approx([(1 / 3 + 1 / 3 + 2) / 4] * 2)

    other = judge_run(cfg, run="ppo", seed=1, generations=baseline, baseline=baseline, out=tmp_path / "j_ppo.csv", cache=tmp_path / "cache2.jsonl")
    assert other["win_rate"].tolist() == [0.5]  # the baseline against itself: all ties

    out = tmp_path / "eval" / "winrates.csv"
    collect_winrates(inputs=[tmp_path / "j_ppo.csv", tmp_path / "j_dpo.csv"], out=out, gold_out=tmp_path / "eval" / "gold.csv")
    table = pd.read_csv(out)
    assert list(table.columns) == WINRATE_COLUMNS == ["run", "seed", "step", "judge", "n_prompts", "win_rate", "ci_low", "ci_high"]
    assert list(zip(table["run"], table["seed"], table["step"])) == [("dpo", 0, 5), ("dpo", 0, 10), ("ppo", 1, 0)]


def test_judge_run_rejects_mismatched_baseline(tmp_path):
    baseline, generations = tmp_path / "sft.jsonl", tmp_path / "gens.jsonl"
    write_jsonl(baseline, _gens([(0, 0, REVERSE, " four one three")]))
    write_jsonl(generations, _gens([(3, 0, SORT, " two two five")]))
    cfg = Config.model_validate({"judge": {"type": "gold"}, "winrate": {"bootstrap_samples": 10, "confidence": 0.95}})
    with pytest.raises(DataError, match="no matching baseline"):
        judge_run(cfg, run="dpo", seed=0, generations=generations, baseline=baseline, out=tmp_path / "out.csv", cache=tmp_path / "cache.jsonl")


# ----------------------------------------------------------------------------- OpenAI judge (fake client)


class FakeClient:
    """Mimics ``openai.OpenAI().chat.completions.create``. ``decide(prompt_text)`` returns 'A'
    or 'B' (or raises); every request's text is recorded."""

    def __init__(self, decide):
        self.decide = decide
        self.requests: list[str] = []
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self._create))

    def _create(self, model, messages, temperature):
        text = messages[0]["content"]
        self.requests.append(text)
        choice = self.decide(text)
        content = f"Comparison: one is better.\nMore helpful: {choice}"
        return SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content=content))])


def _responses(text: str) -> tuple[str, str]:
    a = text.split("Response A:\n", 1)[1].split("\n\nResponse B:", 1)[0]
    b = text.split("Response B:\n", 1)[1].split("\n\nFIRST", 1)[0]
    return a, b


def prefers(word):
    """A consistent judge: prefers whichever response contains ``word``."""
    return lambda text: "A" if word in _responses(text)[0] else "B"


def test_openai_judge_position_swap(tmp_path):
    client = FakeClient(prefers("good"))
    judge = OpenAIJudge("gpt-4", tmp_path / "cache.jsonl", client=client, max_retries=0)
    assert judge.compare("Say hi", "good answer", "bad answer") == 1.0
    assert len(client.requests) == 2
    # asked in both orders: the method's response first as A, then as B
    assert _responses(client.requests[0]) == ("good answer", "bad answer")
    assert _responses(client.requests[1]) == ("bad answer", "good answer")
    assert "Query: Say hi" in client.requests[0]
    assert judge.compare("Say hi", "bad answer", "good answer") == 0.0


def test_openai_judge_inconsistent_pair_is_tie(tmp_path):
    always_a = FakeClient(lambda text: "A")  # position bias
    assert OpenAIJudge("gpt-4", tmp_path / "a.jsonl", client=always_a, max_retries=0).compare("q", "x", "y") == 0.5
    unparsable = FakeClient(lambda text: "neither")
    assert OpenAIJudge("gpt-4", tmp_path / "b.jsonl", client=unparsable, max_retries=0).compare("q", "x", "y") == 0.5
    assert parse_choice("Comparison: blah\nMore helpful: \"B\"") == "B"
    assert parse_choice("no verdict") == "?"


def test_openai_judge_cache(tmp_path):
    cache = tmp_path / "cache" / "judge.jsonl"
    client = FakeClient(prefers("good"))
    judge = OpenAIJudge("gpt-4", cache, client=client, max_retries=0)
    assert judge.compare("q1", "good", "bad") == 1.0
    assert judge.compare("q1", "good", "bad") == 1.0
    assert len(client.requests) == 2  # the second comparison was served from the cache
    lines = [json.loads(x) for x in cache.read_text().splitlines()]
    assert [row["answer"] for row in lines] == ["A", "B"]

    def explode(text):
        raise AssertionError("cache miss: the API was called again")

    reopened = OpenAIJudge("gpt-4", cache, client=FakeClient(explode), max_retries=0)
    assert reopened.compare("q1", "good", "bad") == 1.0
    # a different model is a different cache key
    other = FakeClient(prefers("good"))
    assert OpenAIJudge("gpt-4o", cache, client=other, max_retries=0).compare("q1", "good", "bad") == 1.0
    assert len(other.requests) == 2


def test_openai_judge_failure_names_prompt(tmp_path):
    def down(text):
        raise ConnectionError("service unavailable")

    judge = OpenAIJudge("gpt-4", tmp_path / "cache.jsonl", client=FakeClient(down), max_retries=0)
    with pytest.raises(JudgeError, match="What is the capital of France") as info:
        judge.compare("What is the capital of France?", "Paris", "Lyon")
    assert "service unavailable" in str(info.value)
    assert not (tmp_path / "cache.jsonl").exists() or (tmp_path / "cache.jsonl").read_text() == ""


def test_openai_judge_without_key(tmp_path, monkeypatch):
    monkeypatch.delenv("PODYN_TEST_NO_SUCH_KEY", raising=False)
    with pytest.raises(JudgeError, match="PODYN_TEST_NO_SUCH_KEY"):
        OpenAIJudge("gpt-4", tmp_path / "c.jsonl", api_key_env="PODYN_TEST_NO_SUCH_KEY")
