"""Judges compare a method's response with the SFT model's (method.md §6): win 1, tie 0.5,
loss 0. The gold judge uses the synthetic task's known reward; the OpenAI judge asks an LLM
in both orders, counts an inconsistent pair as a tie, and caches every answer on disk."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Protocol

from .config import JudgeConfig
from .data.synthetic import gold_reward


class JudgeError(RuntimeError):
    """A judge could not answer; the message names the prompt."""


class Judge(Protocol):
    name: str

    def compare(self, prompt: str, response: str, baseline: str) -> float:
        """1 if ``response`` beats ``baseline``, 0.5 for a tie, 0 if it loses."""


class GoldJudge:
    name = "gold"

    def __init__(self, tie_margin: float = 1e-9, length_penalty: float = 0.2) -> None:
        self.tie_margin = tie_margin
        self.length_penalty = length_penalty

    def reward(self, prompt: str, response: str) -> float:
        return gold_reward(prompt, response, self.length_penalty)

    def compare(self, prompt: str, response: str, baseline: str) -> float:
        diff = self.reward(prompt, response) - self.reward(prompt, baseline)
        return 0.5 if abs(diff) <= self.tie_margin else float(diff > 0)


JUDGE_PROMPT = """For the following query to a chatbot, which response is more helpful?

Query: {prompt}

Response A:
{first}

Response B:
{second}

FIRST provide a one-sentence comparison of the two responses and explain which you feel is more helpful. SECOND, on a new line, state only "A" or "B" to indicate which response is more helpful. Your response should use the format:
Comparison: <one-sentence comparison and explanation>
More helpful: <"A" or "B">"""


class OpenAIJudge:
    """GPT-4 (or any OpenAI-compatible model) as judge, with the DPO paper's prompt, asked in
    both orders. Answers are appended to a JSON-lines cache as they arrive, so an interrupted
    or failed judging run loses nothing and is never billed twice."""

    name = "openai"

    def __init__(self, model: str, cache_path: str | Path, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY", max_retries: int = 5, temperature: float = 0.0, client=None) -> None:
        self.model = model
        self.cache_path = Path(cache_path)
        self.max_retries = max_retries
        self.temperature = temperature
        self.cache = self._read_cache()
        if client is None:
            from openai import OpenAI

            if not os.environ.get(api_key_env):
                raise JudgeError(f"judge.type is 'openai' but the environment variable {api_key_env} is not set")
            client = OpenAI(api_key=os.environ[api_key_env], base_url=base_url, max_retries=0)
        self.client = client

    def _read_cache(self) -> dict[str, str]:
        if not self.cache_path.exists():
            return {}
        cache = {}
        for line in self.cache_path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                cache[row["key"]] = row["answer"]
        return cache

    def _ask(self, prompt: str, first: str, second: str) -> str:
        text = JUDGE_PROMPT.format(prompt=prompt.strip(), first=first.strip(), second=second.strip())
        key = hashlib.sha256(json.dumps([self.model, text]).encode()).hexdigest()
        if key in self.cache:
            return self.cache[key]
        for attempt in range(self.max_retries + 1):
            try:
                reply = self.client.chat.completions.create(model=self.model, messages=[{"role": "user", "content": text}], temperature=self.temperature)
                answer = parse_choice(reply.choices[0].message.content or "")
                break
            except Exception as err:  # the API's errors are many; all are retried, then reported
                if attempt == self.max_retries:
                    raise JudgeError(f"judge {self.model} failed on prompt {prompt[:80]!r}: {err}") from err
                time.sleep(min(2**attempt, 30))
        self.cache[key] = answer
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.cache_path, "a") as handle:
            handle.write(json.dumps({"key": key, "answer": answer}) + "\n")
        return answer

    def compare(self, prompt: str, response: str, baseline: str) -> float:
        forward = self._ask(prompt, response, baseline)  # response is A
        backward = self._ask(prompt, baseline, response)  # response is B
        if forward == "A" and backward == "B":
            return 1.0
        if forward == "B" and backward == "A":
            return 0.0
        return 0.5


def parse_choice(text: str) -> str:
    """'A', 'B' or '?' from the judge's 'More helpful:' line."""
    for line in reversed(text.strip().splitlines()):
        if "More helpful:" in line:
            choice = line.split("More helpful:")[-1].strip().strip('"').strip("'").strip()
            return choice if choice in ("A", "B") else "?"
    return "?"


def make_judge(judge: JudgeConfig, cache_path: str | Path, length_penalty: float) -> Judge:
    """The judge of the config's ``judge`` section; ``length_penalty`` is the synthetic task's
    (``data.synthetic.length_penalty``), used by the gold judge."""
    if judge.type == "gold":
        return GoldJudge(judge.tie_margin, length_penalty)
    return OpenAIJudge(judge.model, cache_path, judge.base_url, judge.api_key_env, judge.max_retries, judge.temperature)
