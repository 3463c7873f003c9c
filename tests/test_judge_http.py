"""The LLM judge over real HTTP: the official ``openai`` client against a local
OpenAI-compatible server (``podyn.judge_server``) that answers from the synthetic task's gold
reward and injects faults on demand. Checks method.md §6's rules (both orders, random order,
identical responses, invalid prompts), errors by kind, the weighted template, concurrency,
the experiment-wide cache, cost control, kill-and-rerun, and that the key leaks nowhere."""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import subprocess
import time

import numpy as np
import pandas as pd
import pytest

from conftest import podyn_exe, start_judge_server
from podyn.config import Config, validate_config
from podyn.data.synthetic import Demonstrator, format_prompt
from podyn.evaluation import judge_run
from podyn.io import write_jsonl
from podyn.judge_server import JudgeServerState
from podyn.judges import Comparison, GoldJudge, JudgeError, make_judge
from podyn.registry import stage_config

KEY_ENV = "PODYN_TEST_JUDGE_KEY"
SECRET = "sk-podyn-test-3f9a1c77e2b04d1b"
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@pytest.fixture(scope="module")
def server():
    """One server for the module's unit tests; counters and faults are reset for each test."""
    handle = start_judge_server("--stall", "2", "--retry-after", "1", "--models", "gpt-4")
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def srv(server, monkeypatch):
    server.configure(
        fault_rate=0.0, persistent=False, faults=["429", "500", "503", "stall", "drop", "malformed", "no_verdict"]
    )
    server.reset()
    monkeypatch.setenv(KEY_ENV, SECRET)
    return server


def llm_raw(tiny_raw: dict, url: str, **judge) -> dict:
    options = {
        "type": "openai",
        "base_url": url,
        "api_key_env": KEY_ENV,
        "timeout": 1.0,
        "backoff_base": 0.01,
        "backoff_max": 0.05,
        "concurrency": 4,
    }
    return {**copy.deepcopy(tiny_raw), "judge": {**options, **judge}}


def llm_cfg(tiny_raw: dict, url: str, **judge) -> Config:
    """The tiny config with an LLM judge at ``url`` (short timeouts and backoff for tests)."""
    return validate_config(llm_raw(tiny_raw, url, **judge), "test")


def synthetic_generations(n_prompts: int = 24, steps=(5, 10), seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(method generations at ``steps``, SFT baseline): the baseline is often lazy (copies the
    list), the method's responses are a mix of right, lazy and noisy answers, and some equal
    the baseline's (identical responses)."""
    rng = np.random.default_rng(seed)
    families = ("copy", "reverse", "sort")
    prompts = []
    for i in range(n_prompts):
        family, items = families[i % 3], [WORDS[k] for k in rng.integers(10, size=3 + i % 3)]
        prompts.append((family, items, format_prompt(family, items)))
    lazy = Demonstrator({"copy": 0.0, "reverse": 0.7, "sort": 0.7}, token_noise=0.05)
    baseline = [
        {"step": 0, "prompt_index": i, "prompt": p, "response": lazy.respond(f, it, rng)}
        for i, (f, it, p) in enumerate(prompts)
    ]
    gens = []
    for step in steps:
        policy = Demonstrator({"copy": 0.0, "reverse": 0.3, "sort": 0.3}, token_noise=0.15, length_noise=0.3)
        for i, (f, it, p) in enumerate(prompts):
            response = baseline[i]["response"] if rng.random() < 0.2 else policy.respond(f, it, rng)
            gens.append({"step": step, "prompt_index": i, "prompt": p, "response": response})
    return gens, baseline


def comparisons_of(gens, baseline) -> list[Comparison]:
    return [Comparison(g["prompt"], g["response"], baseline[g["prompt_index"]]["response"]) for g in gens]


REVERSE = format_prompt("reverse", ["three", "one", "four"])


# ----------------------------------------------------------------------------- faults, one at a time


@pytest.mark.parametrize("fault", ["429", "500", "503", "stall", "drop", "malformed", "no_verdict", "wrong_types"])
def test_each_transient_fault_is_retried(srv, tiny_raw, tmp_path, fault):
    srv.fault_next(fault)
    judge = make_judge(llm_cfg(tiny_raw, srv.url, order="random", concurrency=1), tmp_path / "cache" / "job.jsonl")
    assert judge.compare(REVERSE, " four one three", " three one four") == 1.0  # the gold answer
    stats = srv.stats()
    assert stats["requests"] == 2 and stats["outcomes"] == {fault: 1, "answered": 1}
    event = {"stall": "timeout", "drop": "connection", "wrong_types": "malformed"}.get(fault, fault)
    assert judge.events == {event: 1}
    if fault == "429":  # Retry-After: 1 was honoured
        (t0, _, first), (t1, _, second) = stats["events"]
        assert (first, second) == ("429", "answered") and t1 - t0 >= 1.0


def test_a_reply_with_wrong_types_is_malformed_in_both_templates(srv, tiny_raw, tmp_path):
    """A list as the message content (it crashed the job with AttributeError) and a log-probability
    of 1000 (OverflowError) are retried like any malformed reply; NaN and the two log-probabilities
    -inf give no verdict instead of a wrong one or a ZeroDivisionError."""
    from podyn.llm_judge import parse_weighted

    srv.fault_next("wrong_types")
    cfg = llm_cfg(tiny_raw, srv.url, order="random", concurrency=1, template="weighted")
    judge = make_judge(cfg, tmp_path / "cache" / "job.jsonl")
    assert judge.compare(REVERSE, " four one three", " three one four") > 0.5
    assert judge.events == {"malformed": 1}
    with pytest.raises(ValueError, match="not a number <= 0"):
        parse_weighted([("A", float("nan")), ("B", -1.0)])
    assert parse_weighted([("A", -math.inf), ("B", -math.inf)]) is None
    assert parse_weighted([("A", -800.0), ("B", -801.0)]) == pytest.approx(1 / (1 + math.exp(-1)))  # exp underflows


def test_persistent_faults_make_invalid_prompts_never_ties(srv, tiny_raw, tiny_cfg, tmp_path):
    """A request that fails every attempt leaves its prompt out (n_invalid), and the valid
    prompts' scores are the gold judge's; more invalid than max_invalid_fraction fails the job."""
    gens, baseline = synthetic_generations()
    write_jsonl(tmp_path / "gens.jsonl", gens)
    write_jsonl(tmp_path / "sft.jsonl", baseline)
    srv.configure(fault_rate=0.15, faults=["no_verdict", "503"], persistent=True)
    cfg = llm_cfg(tiny_raw, srv.url, max_retries=2, parse_retries=1, max_invalid_fraction=0.5)
    frame = judge_run(
        cfg,
        run="dpo",
        seed=0,
        generations=tmp_path / "gens.jsonl",
        baseline=tmp_path / "sft.jsonl",
        out=tmp_path / "j.csv",
        cache=tmp_path / "cache" / "a.jsonl",
        scores_out=tmp_path / "s.csv",
    )
    gold = judge_run(
        tiny_cfg,
        run="dpo",
        seed=0,
        generations=tmp_path / "gens.jsonl",
        baseline=tmp_path / "sft.jsonl",
        out=tmp_path / "g.csv",
        cache=tmp_path / "unused.jsonl",
        scores_out=tmp_path / "gs.csv",
    )
    scores, gold_scores = pd.read_csv(tmp_path / "s.csv"), pd.read_csv(tmp_path / "gs.csv")
    invalid = scores["score"].isna()
    assert 0 < invalid.sum() < len(scores)
    assert (gold["n_invalid"] == 0).all() and frame["n_invalid"].sum() == invalid.sum()
    assert (frame["n_prompts"] + frame["n_invalid"] == 24).all()
    np.testing.assert_array_equal(scores["score"][~invalid], gold_scores["score"][~invalid])
    for step, row in frame.set_index("step").iterrows():
        valid_gold = gold_scores[(gold_scores["step"] == step) & ~invalid.to_numpy()]["score"]
        assert row["win_rate"] == pytest.approx(valid_gold.mean())
    # every attempt of a persistently faulted request was spent: 1 + retries of its kind
    outcomes = srv.stats()["outcomes"]
    assert outcomes.get("no_verdict", 0) % 2 == 0 and outcomes.get("503", 0) % 3 == 0

    strict = llm_cfg(tiny_raw, srv.url, max_retries=2, parse_retries=1, max_invalid_fraction=0.01)
    with pytest.raises(JudgeError, match="judge.max_invalid_fraction"):
        judge_run(
            strict,
            run="dpo",
            seed=0,
            generations=tmp_path / "gens.jsonl",
            baseline=tmp_path / "sft.jsonl",
            out=tmp_path / "j2.csv",
            cache=tmp_path / "cache2" / "a.jsonl",
        )


def test_unauthorised_fails_at_once_naming_the_setting(srv, tiny_raw, tmp_path):
    srv.fault_next("401")
    judge = make_judge(llm_cfg(tiny_raw, srv.url, order="random", concurrency=1), tmp_path / "c" / "j.jsonl")
    with pytest.raises(JudgeError, match="judge.api_key_env") as info:
        judge.judge([Comparison(REVERSE, " four one three", " three one four")])
    assert KEY_ENV in str(info.value) and SECRET not in str(info.value)
    assert srv.stats()["requests"] == 1  # not retried


def test_a_web_page_at_the_base_url_fails_at_once_naming_the_setting(srv, tiny_raw, tmp_path):
    srv.fault_next("html")  # a 200 with an HTML page: base_url points at a web server, not the API
    judge = make_judge(llm_cfg(tiny_raw, srv.url, order="random", concurrency=1), tmp_path / "c" / "j.jsonl")
    with pytest.raises(JudgeError, match=r"judge.base_url = .*not JSON \('<!doctype html>.*API root"):
        judge.judge([Comparison(REVERSE, " four one three", " three one four")])
    assert srv.stats()["requests"] == 1  # not retried


def test_text_replies_parsed_retried_or_refused():
    """A body the server did not label JSON: JSON anyway is read, an empty one is retried as
    malformed, anything else (a web page) stops the judge."""
    from podyn.llm_judge import MalformedReply, NotAPIReply, _parsed_text_reply

    assert _parsed_text_reply('{"choices": []}') == {"choices": []}
    with pytest.raises(MalformedReply):
        _parsed_text_reply(" \n")
    with pytest.raises(NotAPIReply):
        _parsed_text_reply("<!doctype html><html></html>")


def test_wrong_key_and_bad_model_fail_at_once(judge_server, tiny_raw, tmp_path, monkeypatch):
    monkeypatch.setenv("PODYN_SERVER_KEY", "sk-the-right-one")
    server = judge_server("--api-key-env", "PODYN_SERVER_KEY", "--models", "gpt-4", env=dict(os.environ))
    monkeypatch.setenv(KEY_ENV, SECRET)
    judge = make_judge(llm_cfg(tiny_raw, server.url, order="random", concurrency=1), tmp_path / "c" / "j.jsonl")
    with pytest.raises(JudgeError, match="401.*PODYN_TEST_JUDGE_KEY"):
        judge.compare(REVERSE, " four one three", " one")
    monkeypatch.setenv(KEY_ENV, "sk-the-right-one")
    judge = make_judge(
        llm_cfg(tiny_raw, server.url, order="random", concurrency=1, model="gpt-nonexistent"),
        tmp_path / "c" / "j.jsonl",
    )
    with pytest.raises(JudgeError, match="judge.model = 'gpt-nonexistent'"):
        judge.compare(REVERSE, " four one three", " one")
    assert server.stats()["requests"] == 2


def test_missing_key_names_the_variable(tiny_raw, tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(JudgeError, match=KEY_ENV):
        make_judge(llm_cfg(tiny_raw, "http://127.0.0.1:9/v1"), tmp_path / "c.jsonl")


# ----------------------------------------------------------------------------- orders, ties, templates


def test_both_orders_identical_responses_and_gold_agreement(srv, tiny_raw, tmp_path):
    gens, baseline = synthetic_generations()
    comparisons = comparisons_of(gens, baseline)
    scores = make_judge(llm_cfg(tiny_raw, srv.url), tmp_path / "c" / "j.jsonl").judge(comparisons)
    assert scores == GoldJudge().judge(comparisons)  # gold ties become inconsistent pairs: ties
    identical = {c for c in comparisons if c.response.strip() == c.baseline.strip()}
    distinct = {c for c in comparisons if c not in identical}
    assert identical and srv.stats()["requests"] == 2 * len(distinct)  # no call for identical responses


def test_random_order_asks_once_in_a_seeded_order(srv, tiny_raw, tmp_path):
    gens, baseline = synthetic_generations()
    comparisons = [
        c for c in comparisons_of(gens, baseline) if GoldJudge().compare(c.prompt, c.response, c.baseline) != 0.5
    ]
    distinct = set(comparisons)
    cfg = llm_cfg(tiny_raw, srv.url, order="random")
    scores = make_judge(cfg, tmp_path / "c" / "j.jsonl").judge(comparisons)
    assert scores == GoldJudge().judge(comparisons)
    assert srv.stats()["requests"] == len(distinct)
    first = set(srv.stats()["attempts"])
    srv.reset()
    make_judge(cfg, tmp_path / "other" / "j.jsonl").judge(comparisons)  # another cache: asked again, same orders
    assert set(srv.stats()["attempts"]) == first
    judge = make_judge(cfg, tmp_path / "x.jsonl")
    orders = [judge.plan(c)[0][1] for c in distinct]
    assert 0 < sum(orders) < len(orders)  # both orders occur


def test_weighted_template_scores_probabilities(srv, tiny_raw, tmp_path):
    from podyn.llm_judge import parse_weighted

    assert parse_weighted([("A", np.log(0.75)), ("B", np.log(0.25)), ("C", -1.0)]) == pytest.approx(0.75)
    assert parse_weighted([(" B", -0.1)]) == 0.0 and parse_weighted([("x", -0.1)]) is None
    comparisons = [
        Comparison(REVERSE, " four one three", " three one four"),
        Comparison(REVERSE, " three one four", " four one three"),
        Comparison(REVERSE, " three one four", " one one one"),
    ]
    scores = make_judge(llm_cfg(tiny_raw, srv.url, template="weighted"), tmp_path / "c" / "j.jsonl").judge(comparisons)
    assert scores == pytest.approx([0.99, 0.01, 0.5])  # the server's P(better) = 0.99; a gold tie: 0.5 each way
    assert (
        all(e[2] == "answered" for e in srv.stats()["events"]) and srv.stats()["requests"] == 4
    )  # the first two share their requests


def test_longer_verdict_judges_real_text(srv, tiny_raw, tmp_path):
    """--verdict longer: real dialogues (no gold reward) are answered by length, in both orders;
    equal lengths are a position-biased 'A', so a tie."""
    prompt = "\n\nHuman: Can you help me plan a picnic?\n\nAssistant: Sure.\n\nHuman: What food?\n\nAssistant:"
    comparisons = [
        Comparison(prompt, " Sandwiches, fruit and lemonade.", " Food."),
        Comparison(prompt, " Bread.", " Bread, cheese and some grapes."),
        Comparison(prompt, " Cold pasta salad.", " Crackers with hummus."),
    ]
    srv.configure(verdict="longer")
    try:
        for template, expected in (("dpo", [1.0, 0.0, 0.5]), ("weighted", [0.99, 0.01, 0.5])):
            judge = make_judge(llm_cfg(tiny_raw, srv.url, template=template), tmp_path / template / "j.jsonl")
            assert judge.judge(comparisons) == pytest.approx(expected)
        assert set(srv.stats()["outcomes"]) == {"answered"}
    finally:
        srv.configure(verdict="gold")
    with pytest.raises(ValueError, match="unknown verdict"):
        JudgeServerState(verdict="shortest")


# ----------------------------------------------------------------------------- concurrency, cache, cost


def test_results_do_not_depend_on_concurrency(srv, tiny_raw, tmp_path):
    gens, baseline = synthetic_generations(n_prompts=16)
    comparisons = comparisons_of(gens, baseline)
    srv.configure(fault_rate=0.3)  # first attempts of 30% of the requests fail, in every kind
    results, caches = [], []
    for c in (1, 8):
        cache = tmp_path / f"c{c}" / "j.jsonl"
        results.append(make_judge(llm_cfg(tiny_raw, srv.url, concurrency=c), cache).judge(comparisons))
        caches.append({row["key"]: row["verdict"] for row in map(json.loads, cache.read_text().splitlines())})
    assert results[0] == results[1] == GoldJudge().judge(comparisons)
    assert caches[0] == caches[1]


def test_experiment_wide_cache_torn_lines_and_cost_estimate(srv, tiny_raw, tmp_path, capsys):
    gens, baseline = synthetic_generations()
    comparisons = comparisons_of(gens, baseline)
    folder = tmp_path / "cache" / "judge"
    first = make_judge(llm_cfg(tiny_raw, srv.url), folder / "dpo_seed0.jsonl").judge(comparisons[:30])
    sent = srv.stats()["requests"]
    assert f"{sent} calls still needed" in capsys.readouterr().out
    # a kill mid-write: a torn last line in the first job's file
    with open(folder / "dpo_seed0.jsonl", "ab") as handle:
        handle.write(b'{"key": "0123ab", "verd')
    srv.reset()
    # another job (its own file, same folder) asks only what is not cached yet
    judge = make_judge(llm_cfg(tiny_raw, srv.url), folder / "ppo_seed0.jsonl")
    assert "0123ab" not in judge.cache.answers and judge.cache.skipped_lines == 0  # a partial last line waits
    second = judge.judge(comparisons)
    assert second[:30] == first and second == GoldJudge().judge(comparisons)
    out = capsys.readouterr().out
    needed = srv.stats()["requests"]
    assert f"{needed} calls still needed" in out and "input +" in out and "output tokens" in out
    assert needed == 2 * len(
        {c for c in comparisons[30:] if c.response.strip() != c.baseline.strip()} - set(comparisons[:30])
    )
    # appending after a torn line seals it first: both files read back whole, nothing asked
    srv.reset()
    make_judge(llm_cfg(tiny_raw, srv.url), folder / "dpo_seed0.jsonl").cache.add("fresh", "A")
    lines = (folder / "dpo_seed0.jsonl").read_text().splitlines()
    assert json.loads(lines[-1]) == {"key": "fresh", "verdict": "A"}
    again = make_judge(llm_cfg(tiny_raw, srv.url), folder / "new.jsonl")
    assert again.judge(comparisons) == second and srv.stats()["requests"] == 0
    assert again.cache.skipped_lines == 1 and again.cache.skipped == {folder / "dpo_seed0.jsonl": 1}


def test_cache_lines_that_are_not_verdicts_are_asked_again(srv, tiny_raw, tmp_path, capsys):
    """A damaged cache line (a verdict no judge gives, or garbage) costs a call, never a wrong score;
    the message names the file; a directory named like a cache file is not read."""
    from podyn.judge_cache import JudgeCache, is_verdict

    assert is_verdict("A") and is_verdict(0.25) and is_verdict(1)
    assert not any(is_verdict(v) for v in (None, "banana", True, 1.5, -0.1, [0.5]))
    comparison = Comparison(REVERSE, " one one one", " four one three")  # gold: the baseline wins, score 0
    folder = tmp_path / "cache" / "judge"
    judge = make_judge(llm_cfg(tiny_raw, srv.url), folder / "j.jsonl")
    assert judge.judge([comparison]) == [0.0]
    keys = [json.loads(line)["key"] for line in (folder / "j.jsonl").read_text().splitlines()]
    damaged = folder / "damaged.jsonl"
    damaged.write_text("".join(json.dumps({"key": k, "verdict": v}) + "\n" for k, v in zip(keys, [None, "banana"])))
    (folder / "j.jsonl").unlink()
    (folder / "dir.jsonl").mkdir()
    srv.reset()
    again = make_judge(llm_cfg(tiny_raw, srv.url), folder / "k.jsonl")
    assert again.cache.skipped == {damaged: len(keys)} and again.judge([comparison]) == [0.0]
    assert srv.stats()["requests"] == len(keys)  # asked again
    assert f"{damaged} ({len(keys)})" in capsys.readouterr().out
    assert len(JudgeCache(folder / "k.jsonl")) == len(keys)


def test_parallel_jobs_reuse_each_others_answers(srv, tiny_raw, tmp_path):
    """A job that started before another job answered a shared comparison reads that answer
    from the other job's file before asking (re-read at most every second)."""
    gens, baseline = synthetic_generations()
    comparisons = comparisons_of(gens, baseline)
    folder = tmp_path / "cache" / "judge"
    late = make_judge(llm_cfg(tiny_raw, srv.url), folder / "ppo_seed0.jsonl")  # its start-up read finds nothing
    early = make_judge(llm_cfg(tiny_raw, srv.url), folder / "dpo_seed0.jsonl")
    assert early.judge(comparisons) == GoldJudge().judge(comparisons)
    asked = srv.stats()["requests"]
    time.sleep(1.1)
    assert late.judge(comparisons) == GoldJudge().judge(comparisons)
    assert srv.stats()["requests"] == asked and late.events["answered by a parallel job"] == asked
    assert not (folder / "ppo_seed0.jsonl").exists()  # nothing new to write


def test_max_calls(srv, tiny_raw, tmp_path):
    gens, baseline = synthetic_generations()
    comparisons = comparisons_of(gens, baseline)
    with pytest.raises(JudgeError, match="judge.max_calls = 3, but .* calls are still needed"):
        make_judge(llm_cfg(tiny_raw, srv.url, max_calls=3), tmp_path / "c" / "j.jsonl").judge(comparisons)
    assert srv.stats()["requests"] == 0  # stopped before the first call
    srv.fault_next("500", "500")
    one = [Comparison(REVERSE, " four one three", " three one four")]
    with pytest.raises(JudgeError, match="judge.max_calls = 2 requests sent"):
        make_judge(
            llm_cfg(tiny_raw, srv.url, max_calls=2, order="random", concurrency=1), tmp_path / "d" / "j.jsonl"
        ).judge(one)
    assert srv.stats()["requests"] == 2


def test_retry_delay_backoff_and_retry_after():
    import random

    from podyn.llm_judge import parse_retry_after, retry_delay

    rng = random.Random(0)
    for attempt in range(1, 8):
        d = min(8.0, 0.5 * 2 ** (attempt - 1))
        delays = [retry_delay(attempt, 0.5, 8.0, None, rng) for _ in range(200)]
        assert d / 2 <= min(delays) and max(delays) <= d and max(delays) - min(delays) > d / 10  # jittered
    assert all(3.0 <= retry_delay(1, 0.5, 1.0, 3.0, rng) <= 3.3 for _ in range(50))  # Retry-After beats the cap
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "150", "retry-after": "2"}) == 0.15
    assert parse_retry_after({}) is None


# ----------------------------------------------------------------------------- the stage: kill and rerun, secrets


def test_kill_and_rerun_asks_nothing_cached(judge_server, tiny_raw, tiny_cfg, tmp_path, env, monkeypatch):
    """SIGKILL the judge stage mid-way; the rerun sends no request whose answer is cached and
    writes the same table as an uninterrupted gold-judge run."""
    gens, baseline = synthetic_generations(n_prompts=24, steps=(5, 10, 15))
    write_jsonl(tmp_path / "gens.jsonl", gens)
    write_jsonl(tmp_path / "sft.jsonl", baseline)
    server = judge_server("--latency", "0.05")
    cfg = llm_cfg(tiny_raw, server.url, concurrency=2)
    cache = tmp_path / "cache" / "judge" / "dpo_seed0.jsonl"
    stage_env = {**env, KEY_ENV: SECRET}
    monkeypatch.setenv(KEY_ENV, SECRET)

    def stage(out: str) -> list[str]:
        return [
            *podyn_exe(),
            "judge",
            "--config",
            stage_config(cfg, "judge"),
            "--run",
            "dpo",
            "--seed",
            "0",
            "--generations",
            str(tmp_path / "gens.jsonl"),
            "--baseline",
            str(tmp_path / "sft.jsonl"),
            "--out",
            str(tmp_path / out),
            "--scores-out",
            str(tmp_path / f"s_{out}"),
            "--cache",
            str(cache),
        ]

    proc = subprocess.Popen(stage("j.csv"), env=stage_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and (not cache.exists() or len(cache.read_bytes().splitlines()) < 10):
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert not (tmp_path / "j.csv").exists()
    judge = make_judge(cfg, cache.parent / "probe.jsonl")
    cached = set(judge.cache.answers)
    assert len(cached) >= 10
    requests = {req.key: req.text for c in comparisons_of(gens, baseline) for req, _ in judge.plan(c)}
    assert cached < set(requests)
    import hashlib

    cached_texts = {hashlib.sha256(requests[k].encode()).hexdigest() for k in cached}
    server.reset()
    done = subprocess.run(stage("j.csv"), env=stage_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    asked = set(server.stats()["attempts"])
    assert not asked & cached_texts  # nothing that was cached was asked again
    assert len(asked) == len(requests) - len(cached)
    gold = judge_run(
        tiny_cfg,
        run="dpo",
        seed=0,
        generations=tmp_path / "gens.jsonl",
        baseline=tmp_path / "sft.jsonl",
        out=tmp_path / "g.csv",
        cache=tmp_path / "u.jsonl",
        scores_out=tmp_path / "s_g.csv",
    )
    table = pd.read_csv(tmp_path / "j.csv")
    cols = ["step", "n_prompts", "n_invalid", "win_rate", "ci_low", "ci_high", "lc_win_rate"]
    pd.testing.assert_frame_equal(table[cols], gold[cols])
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "s_j.csv"), pd.read_csv(tmp_path / "s_g.csv"))
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(errors="replace"), path
    assert SECRET not in done.stdout + done.stderr
