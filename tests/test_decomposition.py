"""Exact decomposition (docs/method.md §2, §3): with a real (tiny) GPT-NeoX in float64, the parameter
gradients of POS + NEG and of TOP + MID + BOT equal the total objective's, and the total
surrogate's gradient equals the true loss's (-mean log sigmoid for DPO, the clipped PPO
objective written out by hand for PPO)."""

from __future__ import annotations

import pytest
import torch

from podyn.batching import encode_prompt, encode_response, prompt_response_batch
from podyn.data.synthetic import TaskConfig, generate_task, vocabulary
from podyn.models import build_gpt_neox, build_word_tokenizer, sequence_logps, token_logps
from podyn.objectives import (
    ComponentWeights,
    dpo_component_loss,
    dpo_loss,
    dpo_terms,
    masked_whiten,
    ppo_policy_loss,
    tertile_groups,
)

RTOL = 1e-10


@pytest.fixture(scope="module")
def tokenizer():
    return build_word_tokenizer(vocabulary())


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    m = build_gpt_neox(
        len(tokenizer), tokenizer, {"hidden_size": 16, "num_layers": 2, "num_heads": 2}, seed=0
    ).double()
    # perturb the initial weights so that every parameter gets a non-trivial gradient
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


@pytest.fixture(scope="module")
def pairs():
    return generate_task(TaskConfig(seed=3, n_sft=1, n_pref_train=12, n_pref_heldout=1, n_test=1))["prefs_train"]


def flat_grad(loss: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


def assert_same(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.dtype == torch.float64 and expected.dtype == torch.float64
    scale = float(expected.abs().max())
    assert scale > 0
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=RTOL * scale)


def exact_components(g) -> tuple[torch.Tensor, ...]:
    """The gradients of TOT and of each component, checked to add up exactly (POS + NEG and
    TOP + MID + BOT) and to be genuine parts: neither zero nor copies of the total."""
    tot = g(ComponentWeights())
    pos, neg = g(ComponentWeights.only("pos")), g(ComponentWeights.only("neg"))
    assert_same(pos + neg, tot)
    top, mid, bot = (g(ComponentWeights.only(c)) for c in ("top", "mid", "bot"))
    assert_same(top + mid + bot, tot)
    for part in (pos, neg, top, mid, bot):
        assert float(part.norm()) > 1e-3 * float(tot.norm())
        assert not torch.allclose(part, tot, rtol=1e-3)
    return tot, pos, neg, top, mid, bot


def test_dpo_exact_decomposition(model, tokenizer, pairs):
    params = [p for p in model.parameters() if p.requires_grad]
    prompts = [encode_prompt(tokenizer, r["prompt"]) for r in pairs]
    responses = [encode_response(tokenizer, r[k]) for k in ("chosen", "rejected") for r in pairs]
    batch = prompt_response_batch(prompts + prompts, responses, tokenizer.pad_token_id)
    logps = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["response_mask"])
    assert logps.dtype == torch.float64
    chosen, rejected = logps.chunk(2)
    # a reference that makes the margins spread over both signs (omega far from constant)
    gen = torch.Generator().manual_seed(1)
    ref_chosen = chosen.detach() + torch.randn(len(pairs), generator=gen, dtype=torch.float64) * 3
    ref_rejected = rejected.detach() + torch.randn(len(pairs), generator=gen, dtype=torch.float64) * 3
    terms = dpo_terms(chosen, rejected, ref_chosen, ref_rejected, beta=0.5)
    assert (terms.margin > 0).any() and (terms.margin < 0).any()
    assert sorted(terms.groups.tolist()) == [0] * 4 + [1] * 4 + [2] * 4

    def g(weights: ComponentWeights) -> torch.Tensor:
        return flat_grad(dpo_component_loss(chosen, rejected, terms.omega, terms.groups, weights), params)

    tot, pos, neg, top, mid, bot = exact_components(g)
    true = flat_grad(dpo_loss(terms.margin), params)
    assert_same(tot, true)  # the weighted surrogate's gradient is grad(-mean log sigmoid(m))
    # weights act linearly on the components (ablations and cDPO are just weights)
    assert_same(g(ComponentWeights(pos=0.3, neg=1.7)), 0.3 * pos + 1.7 * neg)
    assert_same(g(ComponentWeights(top=0.0, mid=0.5)), 0.5 * mid + bot)


def test_ppo_exact_decomposition(model, tokenizer, pairs):
    params = [p for p in model.parameters() if p.requires_grad]
    prompts = [encode_prompt(tokenizer, r["prompt"]) for r in pairs]
    responses = [encode_response(tokenizer, r["chosen"]) for r in pairs]
    batch = prompt_response_batch(prompts, responses, tokenizer.pad_token_id)
    mask = batch["response_mask"][:, 1:].double()
    logps = token_logps(model, batch["input_ids"], batch["attention_mask"]) * mask
    assert logps.dtype == torch.float64

    gen = torch.Generator().manual_seed(2)
    # pi_old differs from pi_theta by a few tenths of a nat: ratios both inside and outside [0.8, 1.2]
    old_logps = (logps.detach() + 0.25 * torch.randn(logps.shape, generator=gen, dtype=torch.float64)) * mask
    raw = torch.randn(logps.shape, generator=gen, dtype=torch.float64) * 2 + 0.3
    advantages = masked_whiten(raw, mask)
    groups = tertile_groups(advantages.abs(), mask)
    eps = 0.2

    ratio = torch.exp(logps.detach() - old_logps)
    valid = mask.bool()
    pos_adv, neg_adv = valid & (advantages > 0), valid & (advantages < 0)
    clipped_active = valid & (((advantages > 0) & (ratio > 1 + eps)) | ((advantages < 0) & (ratio < 1 - eps)))
    assert pos_adv.sum() >= 5 and neg_adv.sum() >= 5
    assert clipped_active.sum() >= 3 and (valid & ~clipped_active).sum() >= 10

    def g(weights: ComponentWeights) -> torch.Tensor:
        return flat_grad(ppo_policy_loss(logps, old_logps, advantages, mask, groups, weights, eps), params)

    tot = g(ComponentWeights())
    # the clipped objective written out by hand
    r = torch.exp(logps - old_logps)
    by_hand = -(torch.minimum(r * advantages, torch.clamp(r, 1 - eps, 1 + eps) * advantages) * mask).sum() / mask.sum()
    assert_same(tot, flat_grad(by_hand, params))

    _, pos, neg, top, mid, bot = exact_components(g)

    # POS is exactly the loss over A > 0 tokens with the batch's 1/N (written by hand)
    pos_by_hand = (
        -(torch.minimum(r * advantages, torch.clamp(r, 1 - eps, 1 + eps) * advantages) * pos_adv).sum() / mask.sum()
    )
    assert_same(pos, flat_grad(pos_by_hand, params))
    # ablation / cPPO weights act linearly
    assert_same(g(ComponentWeights(top=0.0)), mid + bot)
    assert_same(g(ComponentWeights(mid=0.7)), top + 0.7 * mid + bot)
    assert_same(g(ComponentWeights(pos=1.08, neg=0.92)), 1.08 * pos + 0.92 * neg)
