"""Batching: tokenisation and padding of prompt/response rows into model-ready tensors, the
collators that turn dataset rows into batches (SFT rows, preference pairs), and the seeded
shuffling loader every training stage uses."""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence

import torch
from transformers import PreTrainedTokenizerBase


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str, max_tokens: int | None = None) -> list[int]:
    """Prompt token ids, keeping the *end* of a too-long prompt (the last turn matters most)."""
    ids = tokenizer(prompt, add_special_tokens=False).input_ids
    return ids[-max_tokens:] if max_tokens else ids


def encode_response(tokenizer: PreTrainedTokenizerBase, response: str, max_tokens: int | None = None) -> list[int]:
    """Response token ids followed by EOS (a truncated response keeps no EOS)."""
    ids = tokenizer(response, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    return ids[:max_tokens] if max_tokens else ids


class TokenIds:
    """Token ids of texts, memoised: a training run draws each row several times (one batch per
    step, several epochs), and tokenising them one call per text was a tenth of a small model's
    DPO step on the CPU. The texts of a call that are not yet known are tokenised in one batched
    call, which gives each text the ids a call of its own gives (``add_special_tokens=False``, no
    padding or truncation). The memo holds at most ``max_tokens`` ids (4 bytes each, 64 MiB by
    default, beside their texts): past that, new texts are tokenised each time they come."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_tokens: int = 2**24) -> None:
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self._ids: dict[str, array] = {}
        self._held = 0

    def __call__(self, texts: Sequence[str]) -> list[list[int]]:
        new = [t for t in dict.fromkeys(texts) if t not in self._ids]
        fresh = dict(zip(new, self.tokenizer(new, add_special_tokens=False).input_ids)) if new else {}
        for text, ids in fresh.items():
            if self._held + len(ids) > self.max_tokens:
                break
            self._ids[text] = array("i", ids)
            self._held += len(ids)
        return [list(fresh[t]) if t in fresh else self._ids[t].tolist() for t in texts]  # a list of its own each

    def prompts(self, texts: Sequence[str], max_tokens: int | None = None) -> list[list[int]]:
        """As :func:`encode_prompt`, for each text."""
        return [ids[-max_tokens:] if max_tokens else ids for ids in self(texts)]

    def responses(self, texts: Sequence[str], max_tokens: int | None = None) -> list[list[int]]:
        """As :func:`encode_response`, for each text."""
        eos = [self.tokenizer.eos_token_id]
        return [(ids + eos)[:max_tokens] if max_tokens else ids + eos for ids in self(texts)]


def pad_right(sequences: Sequence[Sequence[int]], pad_value: int) -> torch.Tensor:
    width = max(len(s) for s in sequences)
    return torch.tensor([list(s) + [pad_value] * (width - len(s)) for s in sequences], dtype=torch.long)


def pad_left(sequences: Sequence[Sequence[int]], pad_value: int) -> torch.Tensor:
    width = max(len(s) for s in sequences)
    return torch.tensor([[pad_value] * (width - len(s)) + list(s) for s in sequences], dtype=torch.long)


def prompt_response_batch(
    prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int
) -> dict[str, torch.Tensor]:
    """Right-padded ``prompt + response`` rows with ``attention_mask`` and a ``response_mask``
    that selects the response tokens only."""
    rows = [list(p) + list(r) for p, r in zip(prompts, responses)]
    masks = [[0] * len(p) + [1] * len(r) for p, r in zip(prompts, responses)]
    input_ids = pad_right(rows, pad_id)
    return {
        "input_ids": input_ids,
        "attention_mask": pad_right([[1] * len(r) for r in rows], 0),
        "response_mask": pad_right(masks, 0),
    }


def left_padded_prompts(prompts: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    return {"input_ids": pad_left(prompts, pad_id), "attention_mask": pad_left([[1] * len(p) for p in prompts], 0)}


def sft_collator(
    tokenizer, max_prompt_tokens: int | None, max_response_tokens: int | None
) -> Callable[[list[dict]], dict[str, torch.Tensor]]:
    """SFT rows (prompt, completion) as one right-padded batch with a response mask."""

    token_ids = TokenIds(tokenizer)

    def collate(rows: list[dict]) -> dict[str, torch.Tensor]:
        prompts = token_ids.prompts([r["prompt"] for r in rows], max_prompt_tokens)
        responses = token_ids.responses([r["completion"] for r in rows], max_response_tokens)
        return prompt_response_batch(prompts, responses, tokenizer.pad_token_id)

    return collate


def pair_collator(
    tokenizer, max_prompt_tokens: int | None, max_response_tokens: int | None
) -> Callable[[list[dict]], dict[str, torch.Tensor]]:
    """Preference pairs: chosen rows first, then rejected rows, in one right-padded batch (one
    forward pass). Optional ``index``, ``ref_chosen`` and ``ref_rejected`` columns are kept."""

    token_ids = TokenIds(tokenizer)

    def collate(rows: list[dict]) -> dict[str, torch.Tensor]:
        prompts = token_ids.prompts([r["prompt"] for r in rows], max_prompt_tokens)
        responses = token_ids.responses([r[key] for key in ("chosen", "rejected") for r in rows], max_response_tokens)
        batch = prompt_response_batch(prompts + prompts, responses, tokenizer.pad_token_id)
        if "index" in rows[0]:
            batch["index"] = torch.tensor([r["index"] for r in rows])
        for key in ("ref_chosen", "ref_rejected"):
            if key in rows[0]:
                batch[key] = torch.tensor([r[key] for r in rows], dtype=torch.float64)
        return batch

    return collate
