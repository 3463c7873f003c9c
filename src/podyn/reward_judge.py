"""``judge.type: reward_model``: a separate reward model as the judge, for real text where
no gold reward exists (AlpacaFarm's simulated annotator, in its simplest form).

The judge model is a Bradley-Terry reward model trained like the policy's (``reward_model``
stage) but on the ``judge_prefs`` pairs, which are disjoint from the policy's
``prefs_train``. It is a *proxy*: a small model trained on a few hundred pairs, whose
verdicts measure agreement with that model, not human preference."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .batching import encode_prompt, encode_response, prompt_response_batch
from .judges import JudgeError
from .models import last_token_index, load_scalar_model, load_tokenizer, score_at

if TYPE_CHECKING:
    from .config import Config, GenerationConfig, ModelConfig
    from .judges import Comparison


class RewardModelJudge:
    """Win (1) when the response's reward beats the baseline's by more than ``tie_margin``,
    tie (0.5) within it, loss (0) otherwise. A response as long as ``max_new_tokens`` (cut
    before its EOS) loses ``missing_eos_penalty``, as PPO's reward does."""

    name = "reward_model"

    def __init__(
        self,
        model_dir: str | Path,
        model_cfg: ModelConfig,
        generation: GenerationConfig,
        tie_margin: float = 0.0,
        missing_eos_penalty: float = 1.0,
    ) -> None:
        torch.set_num_threads(1)  # the judge rule is a one-core job
        self.tokenizer = load_tokenizer(model_dir)
        self.model = load_scalar_model(model_dir, model_cfg).eval()
        self.max_prompt_tokens = generation.max_prompt_tokens
        self.max_response_tokens = generation.max_response_tokens
        self.max_new_tokens = generation.max_new_tokens
        self.tie_margin = tie_margin
        self.missing_eos_penalty = missing_eos_penalty
        self._scores: dict[tuple[str, str], float] = {}

    @classmethod
    def from_config(
        cls, cfg: Config, cache_path: str | Path | None, judge_model: str | Path | None
    ) -> RewardModelJudge:
        """Scores are recomputed, not cached: the judge model is local and cheap."""
        if judge_model is None:
            raise JudgeError("judge.type is 'reward_model' but no judge model directory was given (--judge-model)")
        judge = cfg.judge
        return cls(judge_model, cfg.model, cfg.generation, judge.tie_margin, judge.missing_eos_penalty)

    def judge(self, comparisons: Sequence[Comparison]) -> list[float | None]:
        return [self.compare(c.prompt, c.response, c.baseline) for c in comparisons]

    @torch.no_grad()
    def reward(self, prompt: str, response: str) -> float:
        key = (prompt, response)
        if key not in self._scores:
            prompt_ids = encode_prompt(self.tokenizer, prompt, self.max_prompt_tokens)
            response_ids = encode_response(self.tokenizer, response, self.max_response_tokens)
            batch = prompt_response_batch([prompt_ids], [response_ids], self.tokenizer.pad_token_id)
            score = score_at(
                self.model, batch["input_ids"], batch["attention_mask"], last_token_index(batch["attention_mask"])
            )
            cut = len(response_ids) - 1 >= self.max_new_tokens  # no EOS within max_new_tokens
            self._scores[key] = float(score) - self.missing_eos_penalty * cut
        return self._scores[key]

    def compare(self, prompt: str, response: str, baseline: str) -> float:
        diff = self.reward(prompt, response) - self.reward(prompt, baseline)
        return 0.5 if abs(diff) <= self.tie_margin else float(diff > 0)
