"""The collators' memoised, batched tokenisation gives every row the ids that tokenising it on
its own gives: the synthetic task's word tokenizer and a byte-level BPE tokenizer on real
HH-RLHF text, with and without truncation, and on repeated calls (the cache)."""

from __future__ import annotations

import gzip
import json

import pytest
import torch

from conftest import REPO
from podyn.batching import TokenIds, encode_prompt, encode_response, pair_collator, sft_collator
from podyn.data.synthetic import TaskConfig, generate_task, vocabulary
from podyn.models import build_word_tokenizer

HH_FILE = REPO.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"


def per_row_pair_batch(tokenizer, rows, max_prompt, max_response):
    """pair_collator's batch with one tokenizer call per text (the implementation it replaced)."""
    from podyn.batching import prompt_response_batch

    prompts = [encode_prompt(tokenizer, r["prompt"], max_prompt) for r in rows]
    responses = [encode_response(tokenizer, r[k], max_response) for k in ("chosen", "rejected") for r in rows]
    return prompt_response_batch(prompts + prompts, responses, tokenizer.pad_token_id)


def check_tokenizer(tokenizer, pairs: list[dict]) -> None:
    texts = [t for r in pairs for t in (r["prompt"], r["chosen"], r["rejected"])]
    for ids in (TokenIds(tokenizer), TokenIds(tokenizer, max_tokens=200)):  # the memo full after a few texts
        for limit in (None, 3, 40, None):
            assert ids.prompts(texts, limit) == [encode_prompt(tokenizer, t, limit) for t in texts]
            assert ids.responses(texts, limit) == [encode_response(tokenizer, t, limit) for t in texts]
        assert ids._held <= ids.max_tokens
    for limits in ((None, None), (5, 4)):
        collate = pair_collator(tokenizer, *limits)
        for start in range(0, len(pairs), 16):
            rows = pairs[start : start + 16]
            expected = per_row_pair_batch(tokenizer, rows, *limits)
            for _ in range(2):  # the second call is served from the cache
                batch = collate(rows)
                assert all(torch.equal(batch[k], expected[k]) for k in expected)


def test_word_tokenizer_ids_unchanged():
    task = generate_task(TaskConfig(n_sft=64, n_pref_train=96, n_pref_heldout=8, n_test=8, seed=3))
    tokenizer = build_word_tokenizer(vocabulary())
    check_tokenizer(tokenizer, task["prefs_train"])
    collate = sft_collator(tokenizer, None, 5)
    rows = task["sft"][:32]
    batch = collate(rows)
    prompts = [encode_prompt(tokenizer, r["prompt"]) for r in rows]
    responses = [encode_response(tokenizer, r["completion"], 5) for r in rows]
    assert batch["input_ids"].tolist() == [
        [*p, *r] + [tokenizer.pad_token_id] * (batch["input_ids"].shape[1] - len(p) - len(r))
        for p, r in zip(prompts, responses)
    ]


@pytest.mark.skipif(not HH_FILE.exists(), reason=f"{HH_FILE} not present")
def test_bpe_tokenizer_on_real_text_ids_unchanged():
    from podyn.pythia import train_bpe_tokenizer

    with gzip.open(HH_FILE, "rt", encoding="utf-8") as handle:
        raw = [json.loads(line) for _, line in zip(range(96), handle)]
    # the prompt is the dialogue up to its last "Assistant:", the responses are whole dialogues
    prompts = [r["chosen"][: r["chosen"].rfind("Assistant:") + len("Assistant:")] for r in raw]
    pairs = [{"prompt": p, "chosen": r["chosen"], "rejected": r["rejected"]} for p, r in zip(prompts, raw)]
    tokenizer = train_bpe_tokenizer([r["chosen"] for r in raw], vocab_size=512)
    check_tokenizer(tokenizer, pairs)
