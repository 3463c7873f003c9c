"""Judges compare a method's response with the SFT model's (docs/method.md §6): win 1, tie 0.5,
loss 0 (or, for a weighted judge, the probability that the method's response is preferred).

Judge types are plugged in by name (``judge.type``) through :data:`JUDGE_TYPES`: a class with
``from_config(cfg, cache_path, judge_model)`` (``cfg``: the judge stage's typed config excerpt) and
``judge(comparisons)``; a new type is one class and one line here (plus its name in
``JudgeConfig.type``). The gold judge uses the synthetic
task's known reward and is defined here; the LLM judge is :class:`podyn.llm_judge.OpenAIJudge`.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .data.synthetic import gold_reward


class JudgeError(RuntimeError):
    """A judge could not answer, or is misconfigured; the message names the setting to fix."""


@dataclass(frozen=True)
class Comparison:
    """One judged pair: the method's ``response`` against the SFT model's ``baseline``."""

    prompt: str
    response: str
    baseline: str


class Judge(Protocol):
    name: str

    def judge(self, comparisons: Sequence[Comparison]) -> list[float | None]:
        """Per comparison: a score in [0, 1] (1 win, 0.5 tie, 0 loss, or a probability), or
        None when the judge gave no valid answer (the prompt is then invalid, method.md §6)."""


# judge.type -> "module:Class", imported only when used (the gold judge needs no HTTP client)
JUDGE_TYPES: dict[str, str] = {
    "gold": "podyn.judges:GoldJudge",
    "openai": "podyn.llm_judge:OpenAIJudge",
    "reward_model": "podyn.reward_judge:RewardModelJudge",
}


class GoldJudge:
    name = "gold"

    def __init__(self, tie_margin: float = 1e-9, length_penalty: float = 0.2) -> None:
        self.tie_margin = tie_margin
        self.length_penalty = length_penalty

    @classmethod
    def from_config(cls, cfg: Any, cache_path: str | Path | None = None, judge_model: Any = None) -> GoldJudge:
        return cls(cfg.judge.tie_margin, cfg.data.synthetic.length_penalty)

    def reward(self, prompt: str, response: str) -> float:
        return gold_reward(prompt, response, self.length_penalty)

    def compare(self, prompt: str, response: str, baseline: str) -> float:
        diff = self.reward(prompt, response) - self.reward(prompt, baseline)
        return 0.5 if abs(diff) <= self.tie_margin else float(diff > 0)

    def judge(self, comparisons: Sequence[Comparison]) -> list[float | None]:
        return [self.compare(c.prompt, c.response, c.baseline) for c in comparisons]


def make_judge(cfg: Any, cache_path: str | Path, judge_model: str | Path | None = None) -> Judge:
    """The judge named by ``cfg.judge.type``; ``cache_path`` is this job's answer file and
    ``judge_model`` a trained judge's directory (``judge.type: reward_model``). ``cfg`` is a
    :class:`podyn.config.Config` or the judge stage's excerpt of it."""
    kind = cfg.judge.type
    if kind not in JUDGE_TYPES:
        raise JudgeError(f"judge.type: unknown judge {kind!r}; known: {sorted(JUDGE_TYPES)}")
    module, cls = JUDGE_TYPES[kind].split(":")
    return getattr(importlib.import_module(module), cls).from_config(cfg, cache_path, judge_model)
