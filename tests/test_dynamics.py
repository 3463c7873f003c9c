"""Gradient alignment G (docs/method.md §1): the fast paths against the direct method, the exact
component sums, and G's first-order meaning, on a tiny float64 GPT-NeoX."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from podyn.batching import encode_prompt, encode_response, pair_collator, prompt_response_batch
from podyn.data.synthetic import TaskConfig, generate_task, vocabulary
from podyn.dynamics import (
    DPOBatch,
    PPOBatch,
    gradient_alignment,
    gradient_alignment_direct,
    mean_nll_gradient,
    per_layer_alignment,
    trainable,
)
from podyn.generation import generate
from podyn.models import build_gpt_neox, build_word_tokenizer, sequence_logps
from podyn.objectives import COMPONENTS, masked_whiten, tertile_groups


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    tokenizer = build_word_tokenizer(vocabulary())
    model = build_gpt_neox(
        len(tokenizer), tokenizer, {"hidden_size": 32, "num_layers": 2, "num_heads": 2}, seed=0
    ).double()
    model.config._attn_implementation = "sdpa"  # eager float64 gives NaN at left-padded rows
    task = generate_task(TaskConfig(n_sft=4, n_pref_train=12, n_pref_heldout=2, n_test=6))
    final = [
        prompt_response_batch(
            [encode_prompt(tokenizer, r["prompt"]) for r in task["test"]],
            [encode_response(tokenizer, " one two three") for _ in task["test"]],
            tokenizer.pad_token_id,
        )
    ]
    return tokenizer, model, task, final


@pytest.fixture(scope="module")
def dpo_batch(setup):
    tokenizer, model, task, _ = setup
    batch = pair_collator(tokenizer, None, None)(task["prefs_train"])
    with torch.no_grad():
        chosen, rejected = sequence_logps(
            model, batch["input_ids"], batch["attention_mask"], batch["response_mask"]
        ).chunk(2)
    noise = torch.Generator().manual_seed(1)
    return DPOBatch(
        batch["input_ids"],
        batch["attention_mask"],
        batch["response_mask"],
        chosen + 0.5 * torch.randn(12, generator=noise, dtype=torch.float64),
        rejected + 0.5 * torch.randn(12, generator=noise, dtype=torch.float64),
        beta=0.5,
    )


@pytest.fixture(scope="module")
def ppo_batch(setup):
    tokenizer, model, task, _ = setup
    torch.manual_seed(2)
    prompts = [encode_prompt(tokenizer, r["prompt"]) for r in task["prefs_train"][:8]]
    roll = generate(copy.deepcopy(model).float(), tokenizer, prompts, max_new_tokens=6, do_sample=True)
    mask = roll.response_mask.double()
    batch = PPOBatch(
        roll.sequences,
        roll.attention_mask,
        roll.prompt_width,
        mask,
        torch.zeros_like(mask),
        torch.zeros_like(mask),
        torch.zeros_like(mask, dtype=torch.long),
        clip_eps=0.2,
    )
    with torch.no_grad():
        logps = batch.logps(model)
    advantages = masked_whiten(torch.randn(mask.shape, dtype=torch.float64), mask)
    # old log-probs off by up to +-0.5 so that some ratios fall outside the clip range
    old = (logps + 0.5 * (2 * torch.rand(mask.shape, dtype=torch.float64) - 1)) * mask
    return PPOBatch(
        roll.sequences,
        roll.attention_mask,
        roll.prompt_width,
        mask,
        old,
        advantages,
        tertile_groups(advantages.abs(), mask),
        clip_eps=0.2,
    )


@pytest.mark.parametrize("which", ["dpo", "ppo"])
@pytest.mark.parametrize("method", ["jvp", "finite_difference"])
def test_fast_paths_match_direct_method(setup, dpo_batch, ppo_batch, which, method):
    _, model, _, final = setup
    batch = dpo_batch if which == "dpo" else ppo_batch
    direct = gradient_alignment_direct(model, batch, final)
    fast = gradient_alignment(model, batch, final, method=method, fd_eps=1e-4).G
    scale = max(abs(v) for v in direct.values())
    for component in COMPONENTS:
        assert fast[component] == pytest.approx(direct[component], rel=1e-4, abs=1e-4 * scale), component


@pytest.mark.parametrize("which", ["dpo", "ppo"])
def test_components_sum_to_total(setup, dpo_batch, ppo_batch, which):
    _, model, _, final = setup
    G = gradient_alignment(model, dpo_batch if which == "dpo" else ppo_batch, final).G
    assert G["pos"] + G["neg"] == pytest.approx(G["tot"], rel=1e-6)
    assert G["top"] + G["mid"] + G["bot"] == pytest.approx(G["tot"], rel=1e-6)


def test_ppo_batch_exercises_clipping_and_both_signs(setup, ppo_batch):
    _, model, _, _ = setup
    with torch.no_grad():
        ratio = torch.exp(ppo_batch.logps(model) - ppo_batch.old_logps)[ppo_batch.response_mask.bool()]
    assert ((ratio - 1).abs() > 0.2).any() and ((ratio - 1).abs() < 0.2).any()
    adv = ppo_batch.advantages[ppo_batch.response_mask.bool()]
    assert (adv > 0).any() and (adv < 0).any()


def _mean_final_nll(model, final) -> float:
    with torch.no_grad():
        return float(
            sum(-sequence_logps(model, b["input_ids"], b["attention_mask"], b["response_mask"]).sum() for b in final)
            / sum(b["input_ids"].shape[0] for b in final)
        )


@pytest.mark.parametrize("which", ["dpo", "ppo"])
def test_G_is_the_first_order_change_of_final_nll(setup, dpo_batch, ppo_batch, which):
    """One gradient step of size eta on L changes the mean NLL of D' by -eta * G + O(eta^2)."""
    _, model, _, final = setup
    batch = dpo_batch if which == "dpo" else ppo_batch
    G = gradient_alignment(model, batch, final).G["tot"]
    params = trainable(model)
    loss = batch.component_losses(batch.logps(model))["tot"]
    grads = torch.autograd.grad(loss, list(params.values()))
    base = _mean_final_nll(model, final)
    errors = []
    for eta in (1e-3, 1e-4):
        with torch.no_grad():
            for p, g in zip(params.values(), grads):
                p.sub_(eta * g)
            change = _mean_final_nll(model, final) - base
            for p, g in zip(params.values(), grads):
                p.add_(eta * g)
        errors.append(abs(change - (-eta * G)))
        assert change == pytest.approx(-eta * G, rel=1e-2)
    assert errors[1] < errors[0] / 50  # the error is second order in eta


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ppo_at_current_weights_needs_no_forward_pass_and_changes_nothing(setup, ppo_batch, dtype):
    """dynamics.ppo_old_logps: recompute. pi_old recomputed at the checkpoint (rho = 1 exactly)
    and the zero log-probs of ``at_current_weights`` give G and dL/ds bit for bit."""
    _, model, _, final = setup
    model = copy.deepcopy(model).to(dtype)
    batch = PPOBatch(
        **{k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in vars(ppo_batch).items()}
    )
    with torch.no_grad():
        logps = batch.logps(model)
    recomputed = replace(batch, old_logps=logps)  # pi_old recomputed by a forward pass at these weights
    current, zeros = batch.at_current_weights(torch.promote_types(model.dtype, torch.float32))
    assert zeros.dtype == logps.dtype and zeros.shape == logps.shape
    assert recomputed.clip_fraction(logps) == current.clip_fraction(zeros) == 0.0
    a = gradient_alignment(model, recomputed, final, "finite_difference", logps=logps)
    b = gradient_alignment(model, current, final, "finite_difference", logps=zeros)
    assert a.G == b.G
    for c in COMPONENTS:
        assert torch.equal(a.sensitivities[c], b.sensitivities[c]), c


def test_per_layer_alignment_adds_up(setup, dpo_batch):
    _, model, _, final = setup
    total = gradient_alignment(model, dpo_batch, final).G
    layers = per_layer_alignment(model, dpo_batch, final)
    assert len(layers) >= 4
    for component in COMPONENTS:
        assert sum(v[component] for v in layers.values()) == pytest.approx(total[component], rel=1e-8, abs=1e-10)


def test_gbar_is_mean_negative_logp_gradient(setup):
    _, model, _, final = setup
    gbar = mean_nll_gradient(model, final)
    batch = final[0]
    nll = -sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["response_mask"]).mean()
    expected = torch.autograd.grad(nll, list(trainable(model).values()))
    for g, e in zip(gbar.values(), expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)
