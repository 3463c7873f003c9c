"""Anthropic HH-RLHF: full dialogues in ``chosen``/``rejected``, split into TRL's
``prompt`` (up to and including the last "\\n\\nAssistant:") and the two responses."""

from __future__ import annotations

from pathlib import Path

from ..io import DataError, read_jsonl

ASSISTANT = "\n\nAssistant:"


def split_dialogue(dialogue: str) -> tuple[str, str]:
    """(prompt, response) of a dialogue, cut after its last assistant turn marker."""
    cut = dialogue.rfind(ASSISTANT)
    if cut < 0:
        raise ValueError("no '\\n\\nAssistant:' turn")
    cut += len(ASSISTANT)
    return dialogue[:cut], dialogue[cut:]


def load_pairs(path: str | Path) -> list[dict]:
    """Preference pairs with a shared prompt. Rows whose chosen and rejected dialogues do not
    share their prompt raise :class:`DataError` naming the line."""
    rows = read_jsonl(path, {"chosen": str, "rejected": str})
    pairs = []
    for lineno, row in enumerate(rows, start=1):
        try:
            prompt, chosen = split_dialogue(row["chosen"])
            prompt_r, rejected = split_dialogue(row["rejected"])
        except ValueError as err:
            raise DataError(f"{path}: row {lineno}: {err}") from None
        if prompt != prompt_r:
            raise DataError(f"{path}: row {lineno}: chosen and rejected have different prompts")
        pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return pairs


def load_prompts(path: str | Path) -> list[dict]:
    """The test prompts (the chosen dialogue's prompt), as the paper evaluates on."""
    return [{"prompt": p["prompt"]} for p in load_pairs(path)]
