"""The synthetic task: determinism from the seed, the gold reward on hand examples, the
train/test distribution shift and the Bradley-Terry labels."""

from __future__ import annotations

from collections import Counter

import pytest

from podyn.data.synthetic import (
    FAMILIES,
    TaskConfig,
    format_prompt,
    generate_task,
    gold_reward,
    parse_prompt,
    target,
    vocabulary,
)
from podyn.models import build_word_tokenizer

SMALL = TaskConfig(seed=0, n_sft=200, n_pref_train=150, n_pref_heldout=20, n_test=50)


def test_same_seed_same_splits():
    a, b = generate_task(SMALL), generate_task(SMALL)
    assert set(a) == {"sft", "prefs_train", "prefs_heldout", "test"}
    assert a == b
    assert [len(a[k]) for k in ("sft", "prefs_train", "prefs_heldout", "test")] == [200, 150, 20, 50]


def test_different_seed_different_splits():
    a, c = generate_task(SMALL), generate_task(SMALL.model_copy(update={"seed": 1}))
    for split in a:
        assert a[split] != c[split], split


def test_rows_have_trl_columns_and_hh_format():
    task = generate_task(SMALL)
    assert all(set(r) == {"prompt", "completion"} for r in task["sft"])
    assert all(set(r) == {"prompt", "chosen", "rejected"} for r in task["prefs_train"] + task["prefs_heldout"])
    assert all(set(r) == {"prompt"} for r in task["test"])
    for r in task["prefs_train"]:
        assert r["prompt"].startswith("\n\nHuman: ") and r["prompt"].endswith("\n\nAssistant:")
        assert r["chosen"] != r["rejected"]
        assert r["chosen"].startswith(" ")


def test_gold_reward_hand_examples():
    p = "\n\nHuman: reverse three one four\n\nAssistant:"
    assert parse_prompt(p) == ("reverse", ["three", "one", "four"])
    assert gold_reward(p, " four one three") == 1.0
    assert gold_reward(p, " three one four") == pytest.approx(1 / 3)  # the lazy copy: only the middle word
    assert gold_reward(p, " four one") == pytest.approx(2 / 3 - 0.2)  # stops early
    assert gold_reward(p, " four one three two") == pytest.approx(1.0 - 0.2)  # rambles on
    assert gold_reward(p, " four one three two", length_penalty=0.5) == pytest.approx(0.5)
    assert gold_reward(p, "") == pytest.approx(0.0 - 0.2 * 3)
    s = "\n\nHuman: sort five two two\n\nAssistant:"
    assert target("sort", ["five", "two", "two"]) == ["two", "two", "five"]
    assert gold_reward(s, " two two five") == 1.0
    assert gold_reward(s, " two five two") == pytest.approx(1 / 3)
    c = format_prompt("copy", ["nine", "zero", "one", "one"])
    assert gold_reward(c, " nine zero one one") == 1.0
    assert gold_reward(c, " nine zero one seven") == pytest.approx(0.75)
    with pytest.raises(ValueError):
        parse_prompt("\n\nHuman: shuffle one two\n\nAssistant:")


def test_train_and_test_prompts_differ_in_family_mix():
    cfg = TaskConfig(seed=0, n_sft=3000, n_pref_train=1, n_pref_heldout=1, n_test=3000)
    task = generate_task(cfg)
    train = Counter(parse_prompt(r["prompt"])[0] for r in task["sft"])
    test = Counter(parse_prompt(r["prompt"])[0] for r in task["test"])
    assert set(train) == set(test) == set(FAMILIES)
    for family in FAMILIES:
        # each empirical frequency is within 3 points of its configured mix (n = 3000: sd < 1 point)
        assert train[family] / 3000 == pytest.approx(cfg.train_mix[family], abs=0.03)
        assert test[family] / 3000 == pytest.approx(cfg.test_mix[family], abs=0.03)
    assert test["copy"] / 3000 < train["copy"] / 3000 - 0.08


def test_sft_demonstrator_is_imperfect_and_graded():
    task = generate_task(TaskConfig(seed=0, n_sft=1000, n_pref_train=1, n_pref_heldout=1, n_test=1))
    rewards = {f: [] for f in FAMILIES}
    for r in task["sft"]:
        rewards[parse_prompt(r["prompt"])[0]].append(gold_reward(r["prompt"], r["completion"]))
    mean = {f: sum(v) / len(v) for f, v in rewards.items()}
    assert mean["copy"] > 0.85  # copy is easy for the demonstrator
    assert mean["reverse"] < 0.75 and mean["sort"] < 0.75  # the lazy copy leaves headroom
    assert len({round(x, 6) for v in rewards.values() for x in v}) >= 5  # graded, not 0/1


def test_bradley_terry_labels():
    noiseless = generate_task(
        TaskConfig(seed=0, n_sft=1, n_pref_train=400, n_pref_heldout=1, n_test=1, bt_temperature=1e-6)
    )
    gaps = [
        gold_reward(r["prompt"], r["chosen"]) - gold_reward(r["prompt"], r["rejected"])
        for r in noiseless["prefs_train"]
    ]
    assert all(g >= 0 for g in gaps)  # an annotator without noise never prefers the worse answer
    assert sum(g > 0 for g in gaps) > 300
    noisy = generate_task(
        TaskConfig(seed=0, n_sft=1, n_pref_train=400, n_pref_heldout=1, n_test=1, bt_temperature=1.0)
    )
    gaps = [
        gold_reward(r["prompt"], r["chosen"]) - gold_reward(r["prompt"], r["rejected"]) for r in noisy["prefs_train"]
    ]
    flipped = sum(g < 0 for g in gaps) / len(gaps)
    assert 0.1 < flipped < 0.5  # label noise, but still better than chance


def test_word_tokenizer_round_trip():
    tok = build_word_tokenizer(vocabulary())
    text = "\n\nHuman: sort three one two\n\nAssistant: one two three"
    ids = tok(text, add_special_tokens=False).input_ids
    assert tok.unk_token_id not in ids
    assert tok.convert_ids_to_tokens(ids) == [
        "\n\n",
        "Human",
        ":",
        "sort",
        "three",
        "one",
        "two",
        "\n\n",
        "Assistant",
        ":",
        "one",
        "two",
        "three",
    ]
    assert tok.decode(tok(" one two three", add_special_tokens=False).input_ids) == "one two three"
