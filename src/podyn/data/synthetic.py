"""The embedded default's task: list transformations with a known gold reward.

A prompt asks for one of three transformations of a short list of number words,
formatted as an HH-RLHF dialogue::

    \\n\\nHuman: reverse three one four\\n\\nAssistant: four one three

The gold reward r*(x, y) gives partial credit: the fraction of target positions
the response gets right, minus ``length_penalty`` per missing or extra word.

Demonstrators are imperfect in a *systematic* way: on ``reverse`` and ``sort``
prompts a "lazy" demonstrator copies the list instead of transforming it. When
the lazy answer is the demonstrator's mode, the SFT model's greedy answer is
wrong too, which leaves headroom that preference optimization can recover
(i.i.d. token noise would not: greedy decoding removes it on its own; see
``docs/method.md`` §11).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from ..config import SyntheticDataConfig

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FAMILIES = ("copy", "reverse", "sort")
_RANK = {w: i for i, w in enumerate(WORDS)}
_PROMPT_RE = re.compile(r"^\n\nHuman: (\w+) ([\w ]+)\n\nAssistant:$")


def format_prompt(family: str, items: list[str]) -> str:
    return f"\n\nHuman: {family} {' '.join(items)}\n\nAssistant:"


def parse_prompt(prompt: str) -> tuple[str, list[str]]:
    """Recover (family, items) from a prompt made by :func:`format_prompt`."""
    match = _PROMPT_RE.match(prompt)
    if match is None or match.group(1) not in FAMILIES:
        raise ValueError(f"not a synthetic-task prompt: {prompt!r}")
    return match.group(1), match.group(2).split()


def target(family: str, items: list[str]) -> list[str]:
    if family == "copy":
        return list(items)
    if family == "reverse":
        return list(reversed(items))
    if family == "sort":
        return sorted(items, key=_RANK.__getitem__)
    raise ValueError(f"unknown family {family!r}")


def gold_reward(prompt: str, response: str, length_penalty: float = 0.2) -> float:
    """r*(x, y) = (#positions equal to the target) / len(target) - length_penalty * |len(y) - len(target)|."""
    family, items = parse_prompt(prompt)
    wanted = target(family, items)
    said = response.split()
    hits = sum(a == b for a, b in zip(said, wanted))
    return hits / len(wanted) - length_penalty * abs(len(said) - len(wanted))


@dataclass(frozen=True)
class Demonstrator:
    """Answers correctly, except that it copies the list ("lazy") with a family-dependent
    probability, then replaces each word by a random one with probability ``token_noise``."""

    lazy_prob: dict[str, float]
    token_noise: float = 0.0
    length_noise: float = 0.0

    def respond(self, family: str, items: list[str], rng: np.random.Generator) -> str:
        lazy = rng.random() < self.lazy_prob.get(family, 0.0)
        words = list(items) if lazy else target(family, items)
        words = [WORDS[rng.integers(len(WORDS))] if rng.random() < self.token_noise else w for w in words]
        if rng.random() < self.length_noise:  # stops one word early, or rambles one word on
            words = words[:-1] if rng.random() < 0.5 else words + [WORDS[rng.integers(len(WORDS))]]
        return " " + " ".join(words)


class TaskConfig(SyntheticDataConfig):
    """The task's settings (the config's ``data.synthetic`` section) and its seed."""

    seed: int = Field(0, description="Seed of every random draw.")


def _sample_prompt(mix: dict[str, float], cfg: TaskConfig, rng: np.random.Generator) -> tuple[str, list[str]]:
    families = sorted(mix)
    probs = np.array([mix[f] for f in families], dtype=float)
    family = families[rng.choice(len(families), p=probs / probs.sum())]
    length = int(rng.integers(cfg.min_len, cfg.max_len + 1))
    return family, [WORDS[i] for i in rng.integers(len(WORDS), size=length)]


def _preference_demonstrator(cfg: TaskConfig, rng: np.random.Generator) -> Demonstrator:
    lazy = float(rng.uniform(*cfg.pref_lazy_prob_range))
    return Demonstrator(
        lazy_prob={"copy": 0.0, "reverse": lazy, "sort": lazy},
        token_noise=float(rng.uniform(*cfg.pref_token_noise_range)),
        length_noise=cfg.pref_length_noise,
    )


def _preference_pair(cfg: TaskConfig, rng: np.random.Generator) -> dict:
    """Two responses from demonstrators of different quality, labelled as a Bradley-Terry
    annotator would: P(a preferred) = sigmoid((r*(a) - r*(b)) / bt_temperature)."""
    while True:
        family, items = _sample_prompt(cfg.train_mix, cfg, rng)
        prompt = format_prompt(family, items)
        a = _preference_demonstrator(cfg, rng).respond(family, items, rng)
        b = _preference_demonstrator(cfg, rng).respond(family, items, rng)
        if a != b:
            break
    ra, rb = gold_reward(prompt, a, cfg.length_penalty), gold_reward(prompt, b, cfg.length_penalty)
    p_a = 1.0 / (1.0 + math.exp(min(-(ra - rb) / cfg.bt_temperature, 700.0)))  # no overflow at small temperatures
    chosen, rejected = (a, b) if rng.random() < p_a else (b, a)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def generate_task(cfg: TaskConfig) -> dict[str, list[dict]]:
    """All splits of the task, reproducible from ``cfg.seed``.

    Returns ``sft`` (prompt, completion), ``prefs_train`` and ``prefs_heldout``
    (prompt, chosen, rejected) drawn from ``train_mix``, and ``test`` prompts drawn
    from ``test_mix``: training and test prompts come from different distributions,
    as UltraFeedback and HH-RLHF do in the paper.
    """
    rng = np.random.default_rng(cfg.seed)
    sft_demonstrator = Demonstrator(cfg.sft_lazy_prob, cfg.sft_token_noise)
    sft = []
    for _ in range(cfg.n_sft):
        family, items = _sample_prompt(cfg.train_mix, cfg, rng)
        sft.append(
            {"prompt": format_prompt(family, items), "completion": sft_demonstrator.respond(family, items, rng)}
        )
    prefs = [_preference_pair(cfg, rng) for _ in range(cfg.n_pref_train + cfg.n_pref_heldout)]
    test = [{"prompt": format_prompt(*_sample_prompt(cfg.test_mix, cfg, rng))} for _ in range(cfg.n_test)]
    return {
        "sft": sft,
        "prefs_train": prefs[: cfg.n_pref_train],
        "prefs_heldout": prefs[cfg.n_pref_train :],
        "test": test,
    }


def vocabulary() -> list[str]:
    """Every word the task can produce, for the word-level tokenizer."""
    return ["Human", "Assistant", ":", "\n\n", *FAMILIES, *WORDS]
