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


def split_pair(chosen: str, rejected: str) -> tuple[str, str, str]:
    """(prompt, chosen response, rejected response). The prompt is the two dialogues' shared
    beginning, cut after its last assistant turn marker: a few HH-RLHF responses contain a
    "\n\nAssistant:" of their own, which a cut at the chosen dialogue's last marker would
    wrongly move into the prompt."""
    shared = chosen[: next((i for i, (a, b) in enumerate(zip(chosen, rejected)) if a != b), min(len(chosen), len(rejected)))]
    prompt, _ = split_dialogue(shared)
    return prompt, chosen[len(prompt) :], rejected[len(prompt) :]


def load_pairs(path: str | Path) -> list[dict]:
    """Preference pairs with a shared prompt. A row whose chosen and rejected dialogues share
    no assistant turn raises :class:`DataError` naming the line."""
    rows = read_jsonl(path, {"chosen": str, "rejected": str})
    pairs = []
    for lineno, row in enumerate(rows, start=1):
        try:
            prompt, chosen, rejected = split_pair(row["chosen"], row["rejected"])
        except ValueError as err:
            raise DataError(f"{path}: row {lineno}: chosen and rejected share no prompt ending in an assistant turn ({err})") from None
        pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return pairs


def load_prompts(path: str | Path) -> list[dict]:
    """The test prompts (the chosen dialogue's prompt), as the paper evaluates on."""
    return [{"prompt": p["prompt"]} for p in load_pairs(path)]
