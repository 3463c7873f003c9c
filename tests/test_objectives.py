"""DPO loss, PPO clipping, GAE, whitening and tertiles against hand-computed references
(literal numbers and plain Python loops, never the function under test)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from podyn.objectives import (
    ComponentWeights,
    dpo_component_loss,
    dpo_loss,
    dpo_margin,
    dpo_reweighting,
    dpo_terms,
    gae,
    masked_whiten,
    ppo_policy_loss,
    ppo_token_losses,
    tertile_groups,
    tie_clusters,
    value_loss,
)


def t(x):
    return torch.tensor(x, dtype=torch.float64)


# ----------------------------------------------------------------------------- DPO


def test_dpo_margin_and_loss_hand_computed():
    beta = 0.1
    # pair 0: policy gains 1 nat on y+ and loses 1 nat on y- relative to the reference
    #   m = 0.1 * ((-5 - -6) - (-7 - -6)) = 0.1 * (1 + 1) = 0.2
    # pair 1: m = 0.1 * ((-4 - -2) - (-3 - -4)) = 0.1 * (-2 - 1) = -0.3
    # pair 2: policy == reference: m = 0
    pc, pr = t([-5.0, -4.0, -9.0]), t([-7.0, -3.0, -8.0])
    rc, rr = t([-6.0, -2.0, -9.0]), t([-6.0, -4.0, -8.0])
    margin = dpo_margin(pc, pr, rc, rr, beta)
    assert margin.tolist() == pytest.approx([0.2, -0.3, 0.0], abs=1e-15)

    # -log sigmoid(m) = log(1 + exp(-m))
    per_pair = [math.log(1 + math.exp(-0.2)), math.log(1 + math.exp(0.3)), math.log(2.0)]
    assert per_pair == pytest.approx([0.5981388693815918, 0.8543552444685271, 0.6931471805599453], abs=1e-15)
    assert float(dpo_loss(margin)) == pytest.approx(sum(per_pair) / 3, abs=1e-15)

    # omega = beta * sigmoid(-m) = beta / (1 + exp(m))
    omega = dpo_reweighting(margin, beta)
    assert omega.tolist() == pytest.approx([0.1 / (1 + math.exp(0.2)), 0.1 / (1 + math.exp(-0.3)), 0.05], abs=1e-15)
    assert not omega.requires_grad


def test_dpo_loss_gradient_is_minus_omega_over_n():
    """d L_dpo / d logp_theta(y+_i) = -omega_i / n and d / d logp_theta(y-_i) = +omega_i / n."""
    beta = 0.5
    pc = t([-3.0, -1.5, -2.0, -6.0]).requires_grad_()
    pr = t([-2.0, -2.5, -2.0, -1.0]).requires_grad_()
    rc, rr = t([-2.5, -2.0, -2.0, -5.0]), t([-2.5, -2.0, -2.5, -1.5])
    margin = dpo_margin(pc, pr, rc, rr, beta)
    dpo_loss(margin).backward()
    expected_m = [
        0.5 * ((a - c) - (b - d))
        for a, b, c, d in zip(
            [-3.0, -1.5, -2.0, -6.0], [-2.0, -2.5, -2.0, -1.0], [-2.5, -2.0, -2.0, -5.0], [-2.5, -2.0, -2.5, -1.5]
        )
    ]
    omega = [beta / (1 + math.exp(m)) for m in expected_m]
    assert pc.grad.tolist() == pytest.approx([-w / 4 for w in omega], abs=1e-15)
    assert pr.grad.tolist() == pytest.approx([w / 4 for w in omega], abs=1e-15)


def test_dpo_component_loss_value_and_weights():
    """The surrogate's value is mean_i g(i) omega_i (w_pos * -logp(y+) + w_neg * logp(y-))."""
    pc, pr = t([-1.0, -2.0, -3.0]), t([-4.0, -5.0, -6.0])
    omega = t([0.3, 0.2, 0.1])
    groups = torch.tensor([0, 1, 2])
    w = ComponentWeights(pos=2.0, neg=0.5, top=1.0, mid=0.0, bot=3.0)
    expected = (1.0 * 0.3 * (2.0 * 1.0 + 0.5 * -4.0) + 0.0 + 3.0 * 0.1 * (2.0 * 3.0 + 0.5 * -6.0)) / 3
    assert float(dpo_component_loss(pc, pr, omega, groups, w)) == pytest.approx(expected, abs=1e-15)


def test_dpo_terms_groups_are_omega_tertiles():
    terms = dpo_terms(t([0.0] * 6), t([0.0] * 6), t([0.0, 1, 2, 3, 4, 5]), t([0.0] * 6), beta=1.0)
    # m_i = -i, omega_i = sigmoid(i): increasing in i, so the last two pairs are TOP
    assert terms.groups.tolist() == [2, 2, 1, 1, 0, 0]


# ----------------------------------------------------------------------------- tertiles


def test_tertile_groups_sizes_ties_and_mask():
    scores = t([5.0, 1.0, 3.0, 3.0, 3.0, 0.0, 9.0])
    # n = 7: tensor_split gives sizes 3, 2, 2. Order by score desc, ties by index:
    # 9(6) 5(0) 3(2) | 3(3) 3(4) | 1(1) 0(5)
    assert tertile_groups(scores).tolist() == [0, 2, 0, 1, 1, 2, 0]
    mask = torch.tensor([1, 1, 0, 1, 1, 1, 0])
    # valid: 5(0) 1(1) 3(3) 3(4) 0(5) -> order 0, 3, 4, 1, 5 -> sizes 2, 2, 1
    assert tertile_groups(scores, mask).tolist() == [0, 1, -1, 0, 1, 2, -1]


def test_tertile_ties_do_not_chain():
    """Each step is within the tie tolerance (1e-4 of the largest score) of the next, the whole
    run is not: the tertiles follow the scores, and only scores within the tolerance of their
    cluster's largest are ranked by index. (Ties by neighbour gaps made the run one cluster and
    put the two largest scores, which have the last indices, in BOT.)"""
    scores = t([1.0 - 0.6e-4 * k for k in reversed(range(6))])  # index 5 is the largest
    assert tertile_groups(scores).tolist() == [2, 2, 1, 1, 0, 0]
    descending = np.sort(np.random.default_rng(0).standard_t(3, 20_000))[::-1].copy()
    cluster = tie_clusters(descending, 1e-3)
    for c in np.unique(cluster):
        members = descending[cluster == c]
        assert members[0] - members[-1] <= 1e-3
    assert tie_clusters(np.array([0.5, 0.5, 0.5]), 0.0).tolist() == [0, 0, 0]  # exact ties stay ties
    assert tertile_groups(t([1.0, 2.0]), torch.tensor([0, 0])).tolist() == [-1, -1]  # nothing unmasked


# ----------------------------------------------------------------------------- PPO clipping


def test_ppo_token_losses_literal_numbers():
    eps = 0.2
    ratios = [1.5, 0.5, 0.5, 1.5, 1.1, 0.9, 1.0]
    advs = [2.0, 2.0, -1.0, -1.0, 3.0, -2.0, 0.7]
    # -min(r A, clip(r, 0.8, 1.2) A), by hand:
    # r=1.5 A=2:  min(3.0, 2.4) = 2.4     -> -2.4   (clipped: no further gain)
    # r=0.5 A=2:  min(1.0, 1.6) = 1.0     -> -1.0   (unclipped: pessimistic side)
    # r=0.5 A=-1: min(-0.5, -0.8) = -0.8  -> 0.8    (clipped)
    # r=1.5 A=-1: min(-1.5, -1.2) = -1.5  -> 1.5    (unclipped)
    # r=1.1 A=3:  inside the range        -> -3.3
    # r=0.9 A=-2: inside the range        -> 1.8
    # r=1.0 A=.7:                         -> -0.7
    expected = [-2.4, -1.0, 0.8, 1.5, -3.3, 1.8, -0.7]
    old = t([-1.0, -2.0, -0.5, -3.0, -1.2, -0.1, -2.2])
    logps = (old + torch.log(t(ratios))).requires_grad_()
    losses, ratio = ppo_token_losses(logps, old, t(advs), eps)
    assert ratio.tolist() == pytest.approx(ratios, rel=1e-14)
    assert losses.tolist() == pytest.approx(expected, rel=1e-14)

    # gradient wrt logp: -r A where the unclipped branch is active, 0 where clipping binds
    losses.sum().backward()
    expected_grad = [0.0, -0.5 * 2.0, 0.0, 1.5, -1.1 * 3.0, 0.9 * 2.0, -0.7]
    assert logps.grad.tolist() == pytest.approx(expected_grad, rel=1e-12, abs=1e-15)


def test_ppo_policy_loss_mask_weights_and_n():
    eps = 0.2
    old = t([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    logps = torch.log(t([[1.5, 0.5, 1.0], [1.1, 0.9, 2.0]]))
    adv = t([[2.0, -1.0, 0.5], [-3.0, 1.0, 4.0]])
    mask = t([[1, 1, 1], [1, 1, 0]])
    groups = t([[0, 2, 2], [0, 1, -1]]).long()
    # per-token losses by hand: -min(rA, clip(r)A)
    losses = [
        [-min(1.5 * 2, 1.2 * 2), -min(0.5 * -1, 0.8 * -1), -0.5],
        [-min(1.1 * -3, 1.1 * -3), -min(0.9, 0.9), None],
    ]
    w = ComponentWeights(pos=0.5, neg=2.0, top=3.0, mid=1.0, bot=0.25)
    token_w = [[0.5 * 3.0, 2.0 * 0.25, 0.5 * 0.25], [2.0 * 3.0, 0.5 * 1.0, None]]
    total = sum(token_w[i][j] * losses[i][j] for i in range(2) for j in range(3) if mask[i, j])
    assert float(ppo_policy_loss(logps, old, adv, mask, groups, w, eps)) == pytest.approx(total / 5, rel=1e-13)
    # an explicit 1/N keeps the batch's normaliser for a minibatch or a component
    assert float(ppo_policy_loss(logps, old, adv, mask, groups, w, eps, n_tokens=10.0)) == pytest.approx(
        total / 10, rel=1e-13
    )
    # plain PPO: all weights 1
    plain = sum(losses[i][j] for i in range(2) for j in range(3) if mask[i, j]) / 5
    assert float(ppo_policy_loss(logps, old, adv, mask, groups, ComponentWeights(), eps)) == pytest.approx(
        plain, rel=1e-13
    )


def test_value_loss_hand_computed():
    v = t([[1.0, 0.0, 2.0]])
    old = t([[0.5, 0.1, 2.0]])
    ret = t([[0.0, 1.0, 5.0]])
    mask = t([[1, 1, 0]])
    # token 0: (1-0)^2 = 1, clipped V = 0.5+0.2 = 0.7 -> 0.49; max = 1
    # token 1: (0-1)^2 = 1, clipped V = 0.1-0.1 = 0.0 (within range) -> 1; max = 1
    assert float(value_loss(v, old, ret, mask, 0.2)) == pytest.approx(0.5 * (1 + 1) / 2, rel=1e-14)
    v2 = t([[0.0, 0.0, 0.0]])
    # token 0: (0-0)^2 = 0, clipped V = 0.5-0.2 = 0.3 -> 0.09; max 0.09. token 1: 1 vs (0.0-1)^2 = 1
    assert float(value_loss(v2, old, ret, mask, 0.2)) == pytest.approx(0.5 * (0.09 + 1) / 2, rel=1e-12)


# ----------------------------------------------------------------------------- GAE and whitening


def gae_reference(rewards, values, lengths, gamma, lam):
    """Textbook GAE per sequence with plain Python loops; V after the last token is 0."""
    advs, rets = [], []
    for r, v, n in zip(rewards, values, lengths):
        a = [0.0] * len(r)
        running = 0.0
        for k in reversed(range(n)):
            next_v = v[k + 1] if k + 1 < n else 0.0
            delta = r[k] + gamma * next_v - v[k]
            running = delta + gamma * lam * running
            a[k] = running
        advs.append(a)
        rets.append([a[k] + v[k] if k < n else 0.0 for k in range(len(r))])
    return advs, rets


def test_gae_two_tokens_literal():
    # r = [0, 1], V = [0.5, 0.2], gamma = lam = 1:
    # delta_1 = 1 + 0 - 0.2 = 0.8 -> A_1 = 0.8
    # delta_0 = 0 + 0.2 - 0.5 = -0.3 -> A_0 = -0.3 + 0.8 = 0.5; returns = A + V = [1.0, 1.0]
    adv, ret = gae(t([[0.0, 1.0]]), t([[0.5, 0.2]]), t([[1.0, 1.0]]), 1.0, 1.0)
    assert adv.tolist()[0] == pytest.approx([0.5, 0.8], abs=1e-15)
    assert ret.tolist()[0] == pytest.approx([1.0, 1.0], abs=1e-15)


def test_gae_against_loop_reference_with_padding():
    rewards = [[0.1, -0.2, 1.0, 0.0], [-0.05, 0.3, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]]
    values = [[0.5, 0.4, 0.3, 9.0], [1.0, -1.0, 7.0, 7.0], [0.2, 0.1, -0.3, 0.6]]
    lengths = [3, 2, 4]
    mask = t([[1.0 if k < n else 0.0 for k in range(4)] for n in lengths])
    for gamma, lam in [(1.0, 0.95), (0.9, 0.8), (0.99, 1.0), (1.0, 0.0)]:
        exp_adv, exp_ret = gae_reference(rewards, values, lengths, gamma, lam)
        adv, ret = gae(t(rewards), t(values), mask, gamma, lam)
        np.testing.assert_allclose(adv.numpy(), np.array(exp_adv), rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(ret.numpy(), np.array(exp_ret), rtol=1e-13, atol=1e-15)
        assert (adv[mask == 0] == 0).all()


def test_masked_whiten_matches_numpy():
    values = t([[1.0, 2.0, 3.0, 100.0], [4.0, -1.0, 100.0, 100.0]])
    mask = t([[1, 1, 1, 0], [1, 1, 0, 0]])
    kept = np.array([1.0, 2.0, 3.0, 4.0, -1.0])
    expected = (kept - kept.mean()) / np.sqrt(kept.var(ddof=1) + 1e-8)
    out = masked_whiten(values, mask)
    np.testing.assert_allclose(out[mask.bool()].numpy(), expected, rtol=1e-12)
    assert (out[~mask.bool()] == 0).all()
    assert float(out[mask.bool()].mean()) == pytest.approx(0.0, abs=1e-12)
