"""Stage ``generate``: greedy responses of a saved policy (the SFT baseline) to the test
prompts, written as step 0."""

from __future__ import annotations

from pathlib import Path

import torch

from .. import data as data_mod
from ..config import Config
from ..generation import greedy_responses
from ..io import write_jsonl
from ..models import inference_device, load_policy, load_tokenizer


@torch.no_grad()
def generate_responses(cfg: Config, *, data: Path, model: Path, out: Path) -> None:
    tokenizer = load_tokenizer(model)
    policy = load_policy(model, cfg.model).eval().to(inference_device(cfg.trainer))
    prompts = data_mod.load_split(data, "test")["prompt"]
    gen = cfg.generation
    responses = greedy_responses(
        policy, tokenizer, prompts, gen.max_new_tokens, gen.eval_batch_size, gen.max_prompt_tokens
    )
    write_jsonl(
        out,
        [
            {"step": 0, "prompt_index": i, "prompt": p, "response": r}
            for i, (p, r) in enumerate(zip(prompts, responses))
        ],
    )
