"""Row formats of preference data, mapped onto podyn's split rows.

Every format maps a raw row to one of three row kinds, by the role it plays:
``pref`` (``prompt``/``chosen``/``rejected``), ``sft`` (``prompt``/``completion``) and
``prompt`` (``prompt``). The formats:

- ``trl_standard``: TRL's standard format, strings: ``prompt``, ``chosen``, ``rejected``
  (SFT rows: ``prompt`` + ``completion``, or a preference row's ``chosen``).
- ``trl_conversational``: TRL's conversational format, lists of ``{role, content}``
  messages: ``prompt`` (the turns before the reply) and ``chosen``/``rejected`` (the reply,
  one assistant message); without ``prompt``, ``chosen``/``rejected`` are whole
  conversations whose shared turns are the prompt. SFT rows: ``messages``, or ``prompt`` +
  ``completion``, or a preference row.
- ``ultrafeedback_binarized``: ``HuggingFaceH4/ultrafeedback_binarized``: ``chosen`` and
  ``rejected`` are whole conversations ending in the reply (``prompt`` is the first user
  turn, ``score_chosen``/``score_rejected`` are not used); SFT rows (split ``train_sft``)
  have ``messages``.
- ``hh_rlhf``: ``Anthropic/hh-rlhf``: ``chosen``/``rejected`` are whole dialogues in the
  ``\\n\\nHuman: ... \\n\\nAssistant: ...`` text format that share every turn before the reply.

Message lists are rendered as the paper renders them (``\\n\\nHuman: ...\\n\\nAssistant:``
for the prompt, the reply after one space), or by a tokenizer's chat template
(``data.render: chat_template``). HH-RLHF dialogues are already text: in ``paper``
rendering they are cut, never re-rendered, so the rows keep the file's text exactly.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

ASSISTANT = "\n\nAssistant:"
ROLE_NAMES = {"user": "Human", "assistant": "Assistant", "system": "Human"}
FORMATS = ("trl_standard", "trl_conversational", "ultrafeedback_binarized", "hh_rlhf")
_TURN = re.compile(r"\n\n(Human|Assistant):")


class RowError(ValueError):
    """A bad row: ``field`` names the offending field, the message says what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"field '{field}': {message}")
        self.field = field
        self.reason = message


# ----------------------------------------------------------------------------- HH-RLHF text dialogues


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
    "\\n\\nAssistant:" of their own, which a cut at the chosen dialogue's last marker would
    wrongly move into the prompt."""
    differ = next((i for i, (a, b) in enumerate(zip(chosen, rejected)) if a != b), min(len(chosen), len(rejected)))
    prompt, _ = split_dialogue(chosen[:differ])
    return prompt, chosen[len(prompt) :], rejected[len(prompt) :]


def parse_dialogue(text: str) -> list[dict[str, str]]:
    """``\\n\\nHuman: a\\n\\nAssistant: b`` as messages; the empty last assistant turn of a
    prompt is left out."""
    parts = _TURN.split(text)
    if parts[0].strip():
        raise ValueError("text before the first '\\n\\nHuman:' turn")
    messages = [
        {"role": "user" if who == "Human" else "assistant", "content": body.strip()}
        for who, body in zip(parts[1::2], parts[2::2])
    ]
    if messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
        messages.pop()
    return messages


# ----------------------------------------------------------------------------- rendering


class Renderer:
    """Message lists to text: the paper's dialogue format, or a tokenizer's chat template."""

    def __init__(self, tokenizer: Any = None) -> None:
        self.tokenizer = tokenizer

    def prompt(self, messages: list[dict[str, str]]) -> str:
        if self.tokenizer is not None:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "".join(f"\n\n{ROLE_NAMES[m['role']]}: {m['content'].strip()}" for m in messages) + ASSISTANT

    def response(self, content: str) -> str:
        return content.strip() if self.tokenizer is not None else " " + content.strip()


# ----------------------------------------------------------------------------- checks


def _field(row: dict[str, Any], name: str) -> Any:
    if row.get(name) is None:
        raise RowError(name, "missing")
    return row[name]


def _text(row: dict[str, Any], name: str) -> str:
    value = _field(row, name)
    if not isinstance(value, str):
        raise RowError(name, f"should be a string, got {type(value).__name__}")
    return value


def _messages(row: dict[str, Any], name: str, value: Any = None) -> list[dict[str, str]]:
    value = _field(row, name) if value is None else value
    if not isinstance(value, list) or not value:
        raise RowError(name, f"should be a non-empty list of {{role, content}} messages, got {type(value).__name__}")
    for i, message in enumerate(value):
        if (
            not isinstance(message, dict)
            or not isinstance(message.get("content"), str)
            or message.get("role") not in ROLE_NAMES
        ):
            raise RowError(
                name,
                f"message {i} is not a {{role: system|user|assistant, content: string}} mapping: {str(message)[:80]}",
            )
    return value


def _reply(messages: list[dict[str, str]], name: str) -> str:
    if messages[-1]["role"] != "assistant":
        raise RowError(name, f"the last message should be the assistant's reply, got role '{messages[-1]['role']}'")
    return messages[-1]["content"]


def check_pref(row: dict[str, str]) -> dict[str, str]:
    """A mapped preference row: non-empty responses that differ."""
    for name in ("chosen", "rejected"):
        if not row[name].strip():
            raise RowError(name, "empty response")
    if row["chosen"] == row["rejected"]:
        raise RowError("rejected", "identical to 'chosen'")
    if not row["prompt"].strip():
        raise RowError("prompt", "empty prompt")
    return row


def check_sft(row: dict[str, str]) -> dict[str, str]:
    if not row["completion"].strip():
        raise RowError("completion", "empty response")
    if not row["prompt"].strip():
        raise RowError("prompt", "empty prompt")
    return row


# ----------------------------------------------------------------------------- formats


def _standard(row: dict[str, Any], kind: str, render: Renderer) -> dict[str, str]:
    prompt = _text(row, "prompt")
    if kind == "prompt":
        return {"prompt": prompt}
    if kind == "sft":
        completion = (
            _text(row, "completion") if "completion" in row and row["completion"] is not None else _text(row, "chosen")
        )
        return check_sft({"prompt": prompt, "completion": completion})
    return check_pref({"prompt": prompt, "chosen": _text(row, "chosen"), "rejected": _text(row, "rejected")})


def _shared_turns(chosen: list[dict], rejected: list[dict]) -> int:
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    return shared


def _conversation_pair(row: dict[str, Any]) -> tuple[list[dict], str, str]:
    """(prompt messages, chosen reply, rejected reply) of whole conversations."""
    chosen, rejected = _messages(row, "chosen"), _messages(row, "rejected")
    if len(chosen) < 2:
        raise RowError("chosen", "a whole conversation needs the prompt's turns before the reply")
    if chosen[:-1] != rejected[:-1]:
        raise RowError(
            "rejected",
            f"its turns before the reply differ from 'chosen' (they share {_shared_turns(chosen, rejected)})",
        )
    return chosen[:-1], _reply(chosen, "chosen"), _reply(rejected, "rejected")


def _conversational(row: dict[str, Any], kind: str, render: Renderer) -> dict[str, str]:
    if kind == "sft" and row.get("messages") is not None:
        messages = _messages(row, "messages")
        if len(messages) < 2:
            raise RowError("messages", "needs at least one turn before the reply")
        return check_sft(
            {"prompt": render.prompt(messages[:-1]), "completion": render.response(_reply(messages, "messages"))}
        )
    if row.get("prompt") is None:  # implicit prompt: whole conversations
        prompt, chosen, rejected = _conversation_pair(row)
    else:
        prompt = _messages(row, "prompt")
        if kind == "prompt":
            return {"prompt": render.prompt(prompt)}
        if kind == "sft" and row.get("completion") is not None:
            completion = _messages(row, "completion")
            return check_sft(
                {"prompt": render.prompt(prompt), "completion": render.response(_reply(completion, "completion"))}
            )
        chosen, rejected = _reply(_messages(row, "chosen"), "chosen"), _reply(_messages(row, "rejected"), "rejected")
    return _finish(prompt, chosen, rejected, kind, render)


def _finish(prompt: list[dict], chosen: str, rejected: str, kind: str, render: Renderer) -> dict[str, str]:
    if kind == "prompt":
        return {"prompt": render.prompt(prompt)}
    if kind == "sft":
        return check_sft({"prompt": render.prompt(prompt), "completion": render.response(chosen)})
    for name, reply in (("chosen", chosen), ("rejected", rejected)):
        if not reply.strip():
            raise RowError(name, "empty response")
    return check_pref(
        {"prompt": render.prompt(prompt), "chosen": render.response(chosen), "rejected": render.response(rejected)}
    )


def _ultrafeedback(row: dict[str, Any], kind: str, render: Renderer) -> dict[str, str]:
    if kind == "sft" and row.get("messages") is not None and row.get("chosen") is None:
        return _conversational({"messages": row["messages"]}, kind, render)
    if kind == "prompt" and row.get("chosen") is None:
        return {"prompt": render.prompt([{"role": "user", "content": _text(row, "prompt")}])}
    prompt, chosen, rejected = _conversation_pair(row)
    return _finish(prompt, chosen, rejected, kind, render)


def _hh_rlhf(row: dict[str, Any], kind: str, render: Renderer) -> dict[str, str]:
    chosen_text, rejected_text = _text(row, "chosen"), _text(row, "rejected")
    try:
        prompt, chosen, rejected = split_pair(chosen_text, rejected_text)
    except ValueError:
        raise RowError("rejected", "chosen and rejected share no prompt ending in an assistant turn") from None
    if render.tokenizer is not None:
        try:
            messages = parse_dialogue(prompt)
        except ValueError as err:
            raise RowError("chosen", str(err)) from None
        return _finish(messages, chosen, rejected, kind, render)
    if kind == "prompt":
        return {"prompt": prompt}
    if kind == "sft":
        return check_sft({"prompt": prompt, "completion": chosen})
    return check_pref({"prompt": prompt, "chosen": chosen, "rejected": rejected})


MAPPERS: dict[str, Callable[[dict[str, Any], str, Renderer], dict[str, str]]] = {
    "trl_standard": _standard,
    "trl_conversational": _conversational,
    "ultrafeedback_binarized": _ultrafeedback,
    "hh_rlhf": _hh_rlhf,
}


def map_row(row: dict[str, Any], fmt: str, kind: str, render: Renderer | None = None) -> dict[str, str]:
    """One raw row of format ``fmt`` as a row of ``kind`` (``pref``, ``sft`` or ``prompt``);
    raises :class:`RowError` naming the bad field."""
    if not isinstance(row, dict):
        raise RowError("<row>", f"expected a mapping, got {type(row).__name__}")
    return MAPPERS[fmt](row, kind, render or Renderer())
