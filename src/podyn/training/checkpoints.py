"""Analysis checkpoints (the weights at step t with the batch B_t that step trained on, for
the gradient-alignment analysis) and greedy evaluation responses at judged steps."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..generation import greedy_responses
from ..io import read_jsonl, write_json, write_jsonl, write_torch


class RunRecorder:
    """Writes into a run's work directory, which survives a killed job:

    * ``analysis/step_<t>/``: the policy at step t (``save_pretrained``) and ``batch.pt``;
    * ``generations/step_<t>.jsonl``: greedy responses to the evaluation prompts after t steps.
    """

    def __init__(
        self,
        workdir: Path,
        tokenizer,
        eval_prompts: Sequence[str],
        total_steps: int,
        checkpoint_every: int,
        eval_every: int,
        max_new_tokens: int,
        max_prompt_tokens: int | None = None,
        eval_batch_size: int = 64,
        fresh_model: Callable[[], torch.nn.Module] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.tokenizer = tokenizer
        self.eval_prompts = list(eval_prompts)
        self.total_steps = total_steps
        self.checkpoint_every = checkpoint_every
        self.eval_every = eval_every
        self.max_new_tokens = max_new_tokens
        self.max_prompt_tokens = max_prompt_tokens
        self.eval_batch_size = eval_batch_size
        self.fresh_model = fresh_model
        self._copy: torch.nn.Module | None = None

    def _unsharded(self, weights: dict[str, torch.Tensor]) -> torch.nn.Module:
        if self.fresh_model is None:
            raise RuntimeError("sharded weights need a RunRecorder with fresh_model")
        if self._copy is None:
            self._copy = self.fresh_model().to(torch.device("cuda") if torch.cuda.is_available() else "cpu")
        self._copy.load_state_dict(weights)
        return self._copy

    def analysis_steps(self) -> list[int]:
        return list(range(0, self.total_steps, self.checkpoint_every)) if self.checkpoint_every > 0 else []

    def eval_steps(self) -> list[int]:
        steps = list(range(self.eval_every, self.total_steps, self.eval_every)) if self.eval_every > 0 else []
        return steps + [self.total_steps]

    def records_at(self, step: int) -> bool:
        """Whether :meth:`at_step` writes anything at ``step``."""
        return step in self.analysis_steps() or (step > 0 and step in self.eval_steps())

    def at_step(
        self,
        step: int,
        model: torch.nn.Module,
        batch_payload: dict[str, Any],
        full_weights: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """Call at the start of step ``step``, before its update (on rank 0 only, with the
        global batch). ``full_weights``: the model's gathered weights when ``model`` holds a
        shard of them (FSDP); they are loaded into a copy made by ``fresh_model``."""
        if full_weights is not None:
            model = self._unsharded(full_weights)
        if step in self.analysis_steps():
            self.save_analysis(step, model, batch_payload)
        if step > 0 and step in self.eval_steps():
            self.save_generations(step, model)

    def save_analysis(self, step: int, model: torch.nn.Module, batch_payload: dict[str, Any]) -> None:
        target = self.workdir / "analysis" / f"step_{step}"
        model.save_pretrained(target)
        write_torch(
            target / "batch.pt", {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in batch_payload.items()}
        )

    def save_generations(self, step: int, model: torch.nn.Module) -> None:
        responses = greedy_responses(
            model, self.tokenizer, self.eval_prompts, self.max_new_tokens, self.eval_batch_size, self.max_prompt_tokens
        )
        rows = [
            {"step": step, "prompt_index": i, "prompt": p, "response": r}
            for i, (p, r) in enumerate(zip(self.eval_prompts, responses))
        ]
        write_jsonl(self.workdir / "generations" / f"step_{step}.jsonl", rows)

    def finish(self, model: torch.nn.Module, generations_out: Path, checkpoints_out: Path) -> None:
        """Evaluate and save the final policy, then write the run's declared outputs: every
        judged step's responses, and a manifest of the analysis checkpoints and final policy."""
        final = self.workdir / "generations" / f"step_{self.total_steps}.jsonl"
        if not final.exists():
            self.save_generations(self.total_steps, model)
        model.save_pretrained(self.workdir / "final")
        self.tokenizer.save_pretrained(self.workdir / "final")
        rows = [
            row
            for step in self.eval_steps()
            for row in read_jsonl(self.workdir / "generations" / f"step_{step}.jsonl")
        ]
        write_jsonl(generations_out, rows)
        manifest = {
            "total_steps": self.total_steps,
            "final": str(self.workdir / "final"),
            "analysis": [
                {"step": s, "path": str(self.workdir / "analysis" / f"step_{s}")} for s in self.analysis_steps()
            ],
        }
        write_json(checkpoints_out, manifest)
