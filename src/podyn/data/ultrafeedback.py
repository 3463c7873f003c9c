"""UltraFeedback (binarized, as ``HuggingFaceH4/ultrafeedback_binarized``): chat messages
turned into the HH-RLHF dialogue format that every stage of podyn reads."""

from __future__ import annotations

from typing import Any

ROLE_NAMES = {"user": "Human", "assistant": "Assistant", "system": "Human"}


def dialogue_prompt(messages: list[dict[str, Any]]) -> str:
    """'\\n\\nHuman: ...\\n\\nAssistant: ...\\n\\nAssistant:' for the turns before the reply."""
    turns = "".join(f"\n\n{ROLE_NAMES[m['role']]}: {m['content'].strip()}" for m in messages)
    return turns + "\n\nAssistant:"


def to_preference_row(row: dict[str, Any]) -> dict[str, str]:
    """A binarized row (``chosen``/``rejected`` are message lists ending in the reply)."""
    context = row["chosen"][:-1]
    return {
        "prompt": dialogue_prompt(context),
        "chosen": " " + row["chosen"][-1]["content"].strip(),
        "rejected": " " + row["rejected"][-1]["content"].strip(),
    }


def to_sft_row(row: dict[str, Any]) -> dict[str, str]:
    messages = row["messages"]
    return {"prompt": dialogue_prompt(messages[:-1]), "completion": " " + messages[-1]["content"].strip()}
