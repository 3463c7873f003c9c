"""Response generation with ``transformers``' ``generate``: sampled rollouts for PPO and
greedy responses for evaluation and for the final-response set D'."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from . import resources
from .batching import encode_prompt, left_padded_prompts


@dataclass
class Rollout:
    """Left-padded prompts followed by generated responses.

    ``sequences`` (B, P + R); ``attention_mask`` covers prompt tokens and response tokens up to
    and including the first EOS; ``response_mask`` (B, R) marks those response tokens;
    ``ended`` (B,) is True where the response closed with EOS within ``max_new_tokens``;
    ``sampler_logps`` (B, R), when asked for: log-probs of the generated tokens under the
    distribution they were sampled from, taken from the sampling pass itself."""

    sequences: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    ended: torch.Tensor
    prompt_width: int
    sampler_logps: torch.Tensor | None = None


# generation_config fields that add a logits processor to sampling beyond the temperature (top-k and
# top-p are switched off by `generate` below); a pretrained model's generation_config.json may set them
EXTRA_PROCESSORS = (
    "repetition_penalty",
    "encoder_repetition_penalty",
    "no_repeat_ngram_size",
    "bad_words_ids",
    "suppress_tokens",
    "begin_suppress_tokens",
    "min_length",
    "min_new_tokens",
    "sequence_bias",
    "typical_p",
    "epsilon_cutoff",
    "eta_cutoff",
    "min_p",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "exponential_decay_length_penalty",
    "renormalize_logits",
    "guidance_scale",
    "watermarking_config",
)


def extra_processors(model: torch.nn.Module) -> list[str]:
    """The EXTRA_PROCESSORS that ``model.generation_config`` switches on (None, 0, 1 or an empty
    value is off; a forced token id is on whenever set)."""
    config = getattr(model, "generation_config", None)
    active = []
    for name in EXTRA_PROCESSORS:
        value = getattr(config, name, None)
        neutral = value is None or (not name.startswith("forced_") and value in (0, 1, False, [], {}))
        if not neutral:
            active.append(name)
    return active


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: Sequence[Sequence[int]],
    max_new_tokens: int,
    do_sample: bool,
    temperature: float = 1.0,
    return_logps: bool = False,
) -> Rollout:
    """``model.generate`` on left-padded prompts (with its key-value cache). Sampling draws from
    softmax(logits / T) itself (top_k 0, top_p 1; a generation_config that adds other logits
    processors is refused, since every PPO log-prob is of that distribution). ``return_logps``
    (sampling only): also return log softmax(logits / T) of each generated token, from generate's
    processed scores: the incremental, KV-cached pass's own numbers, so no forward pass is needed
    to get them afterwards. They hold (B, V) float scores per generated token until this returns."""
    if return_logps and not do_sample:
        raise ValueError("return_logps: the log-probs of the sampling distribution need do_sample=True")
    if do_sample and (extra := extra_processors(model)):
        raise ValueError(
            f"the model's generation_config adds logits processors to sampling ({', '.join(extra)}), so its "
            "samples would not be drawn from softmax(logits / T), the distribution of every PPO log-prob: "
            "remove them from the checkpoint's generation_config.json"
        )
    batch = left_padded_prompts(prompt_ids, tokenizer.pad_token_id)
    batch = {k: v.to(model.device) for k, v in batch.items()}
    sampling = (
        {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
        if do_sample
        else {"do_sample": False}
    )
    was_training = model.training
    model.eval()
    out = model.generate(
        **batch,
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        output_scores=return_logps,
        return_dict_in_generate=True,
        **sampling,
    )
    model.train(was_training)
    sequences, scores = out.sequences, out.scores
    del out  # the scores only: nothing else of generate's output (its key-value cache) outlives this line
    width = batch["input_ids"].shape[1]
    response = sequences[:, width:]
    logps = None
    if return_logps:  # one (B, V) score per generated position: log-softmax and gather step by step
        steps = [torch.log_softmax(s.float(), -1).gather(1, response[:, j, None]) for j, s in enumerate(scores)]
        logps = torch.cat(steps, 1) if steps else response.new_zeros(response.shape, dtype=torch.float32)
    resources.add_tokens(batch["attention_mask"].sum() + response.numel())
    is_eos = response == tokenizer.eos_token_id
    # tokens up to and including the first EOS belong to the response
    after_eos = (is_eos.long().cumsum(1) - is_eos.long()) > 0
    response_mask = (~after_eos).long()
    if response.shape[1] == 0:
        response_mask = response_mask[:, :0]
    return Rollout(
        sequences=sequences,
        attention_mask=torch.cat([batch["attention_mask"], response_mask], 1),
        response_mask=response_mask,
        ended=is_eos.any(1),
        prompt_width=width,
        sampler_logps=logps,
    )


def decode_responses(tokenizer: PreTrainedTokenizerBase, rollout: Rollout) -> list[str]:
    ids = rollout.sequences[:, rollout.prompt_width :] * rollout.response_mask + tokenizer.pad_token_id * (
        1 - rollout.response_mask
    )
    return tokenizer.batch_decode(ids, skip_special_tokens=True)


def greedy_responses(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 64,
    max_prompt_tokens: int | None = None,
) -> list[str]:
    """Greedy responses of ``model`` to ``prompts``, in order."""
    out: list[str] = []
    for start in range(0, len(prompts), batch_size):
        ids = [encode_prompt(tokenizer, p, max_prompt_tokens) for p in prompts[start : start + batch_size]]
        out.extend(decode_responses(tokenizer, generate(model, tokenizer, ids, max_new_tokens, do_sample=False)))
    return out
