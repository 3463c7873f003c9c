"""Preference-optimization objectives as pure functions on tensors (docs/method.md §2, §3).

Every objective is written as a weighted sum of *components* whose gradients add up
exactly to the objective's gradient:

* positive learning (POS) and negative learning (NEG): POS + NEG = TOT;
* loss-reweighting tertiles (TOP, MID, BOT): TOP + MID + BOT = TOT.

A method variant (ablation, cDPO, cPPO, hPPO) only changes the component weights;
see :mod:`podyn.schedules`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

GROUPS = ("top", "mid", "bot")
COMPONENTS = ("tot", "pos", "neg", *GROUPS)


@dataclass(frozen=True)
class ComponentWeights:
    """Multipliers on positive/negative learning and on the three reweighting tertiles."""

    pos: float = 1.0
    neg: float = 1.0
    top: float = 1.0
    mid: float = 1.0
    bot: float = 1.0

    def group_tensor(self, groups: torch.Tensor) -> torch.Tensor:
        """Per-element weight from a tensor of group ids (0 = TOP, 1 = MID, 2 = BOT)."""
        table = torch.tensor([self.top, self.mid, self.bot], dtype=torch.float64, device=groups.device)
        return table[groups.clamp(min=0)]

    @classmethod
    def only(cls, component: str) -> ComponentWeights:
        """The weights that isolate one component (``tot`` keeps everything)."""
        if component == "tot":
            return cls()
        if component in ("pos", "neg"):
            return cls(pos=float(component == "pos"), neg=float(component == "neg"))
        return cls(**{g: float(g == component) for g in GROUPS})


TIE_RTOL = 1e-4


def tertile_groups(scores: torch.Tensor, mask: torch.Tensor | None = None, rtol: float = TIE_RTOL) -> torch.Tensor:
    """Split the (masked) elements into tertiles by ``scores``: 0 = TOP (largest third),
    1 = MID, 2 = BOT; -1 where masked. Scores within ``rtol`` (relative to the largest |score|)
    of the largest score of their tie cluster are ties (see :func:`tie_clusters`), and ties are
    broken by index (earlier element ranks higher). So at DPO's step 0, where every omega is
    beta/2 up to float noise between the policy and reference passes, the split is by index, not
    by that noise. When n is not divisible by 3 the first tertiles get the extra elements
    (``torch.tensor_split``)."""
    flat = scores.detach().reshape(-1)
    valid = torch.ones_like(flat, dtype=torch.bool) if mask is None else mask.reshape(-1).bool()
    index = torch.nonzero(valid).squeeze(1)
    values = flat[index].double()
    # stable sort of -score keeps index order among equal scores
    by_value = torch.sort(-values, stable=True).indices
    tolerance = rtol * float(values.abs().max()) if len(values) else 0.0
    cluster = tie_clusters(values[by_value].cpu().numpy(), tolerance)
    # rank by cluster, then by index within a cluster
    key = torch.from_numpy(cluster).to(index.device) * (len(flat) + 1) + index[by_value]
    order = index[by_value][torch.argsort(key)]
    groups = torch.full_like(flat, -1, dtype=torch.long)
    for group_id, part in enumerate(torch.tensor_split(order, 3)):
        groups[part] = group_id
    return groups.reshape(scores.shape)


def tie_clusters(descending: np.ndarray, tolerance: float) -> np.ndarray:
    """Cluster ids (0, 1, ...) of scores sorted from largest to smallest: a score more than
    ``tolerance`` below its cluster's first (largest) score starts a new cluster, so no cluster
    is wider than ``tolerance``. (Gaps between neighbours alone would chain a run of small steps,
    each within the tolerance, into one cluster of any width, and rank all of it by index.)"""
    n = len(descending)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.ones(n, dtype=bool)
    starts[1:] = (descending[:-1] - descending[1:]) > tolerance  # neighbours within it may tie
    run_starts = np.flatnonzero(starts)
    for first, end in zip(run_starts, [*run_starts[1:], n], strict=True):
        if descending[first] - descending[end - 1] <= tolerance:
            continue  # a chain no wider than the tolerance is one cluster
        anchor = descending[first]
        for i in range(first + 1, end):
            if anchor - descending[i] > tolerance:
                starts[i], anchor = True, descending[i]
    return np.cumsum(starts) - 1


# ----------------------------------------------------------------------------- DPO


def dpo_margin(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """m = beta * [(logp_theta(y+) - logp_ref(y+)) - (logp_theta(y-) - logp_ref(y-))]."""
    return beta * ((policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps))


def dpo_loss(margin: torch.Tensor) -> torch.Tensor:
    """L_dpo = -mean log sigmoid(m)   (the sigmoid loss of the DPO paper and of TRL)."""
    return -F.logsigmoid(margin).mean()


def dpo_reweighting(margin: torch.Tensor, beta: float) -> torch.Tensor:
    """omega = beta * sigmoid(-m), detached: the per-pair loss reweighting."""
    return (beta * torch.sigmoid(-margin)).detach()


@dataclass
class DPOTerms:
    """Everything a DPO step needs, for the surrogate loss and the logs."""

    margin: torch.Tensor
    omega: torch.Tensor
    groups: torch.Tensor
    loss: torch.Tensor  # the reported L_dpo value


def dpo_terms(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float,
) -> DPOTerms:
    margin = dpo_margin(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta
    )
    omega = dpo_reweighting(margin, beta)
    return DPOTerms(margin=margin, omega=omega, groups=tertile_groups(omega), loss=dpo_loss(margin))


def dpo_component_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    omega: torch.Tensor,
    groups: torch.Tensor,
    weights: ComponentWeights,
) -> torch.Tensor:
    """Weighted DPO surrogate whose gradient is the weighted sum of component gradients:

        L = mean_i[ g(i) * omega_i * ( w_pos * (-logp_theta(y+_i)) + w_neg * logp_theta(y-_i) ) ]

    with g(i) the weight of pair i's omega-tertile. With all weights 1 its gradient equals
    grad L_dpo exactly; L_POS is ``w_neg=0``, L_NEG is ``w_pos=0``, L_TOP keeps only TOP pairs.
    """
    per_pair = weights.pos * (-policy_chosen_logps) + weights.neg * policy_rejected_logps
    scale = (omega.double() * weights.group_tensor(groups)).to(per_pair.dtype)
    return (scale * per_pair).mean()


# ----------------------------------------------------------------------------- PPO


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(A - mean) / std over the masked elements (unbiased variance, as TRL)."""
    mean = masked_mean(values, mask)
    centered = values - mean
    n = mask.sum()
    var = (centered.pow(2) * mask).sum() / (n - 1).clamp(min=1)
    whitened = centered * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over response tokens.

        delta_t = r_t + gamma * V_{t+1} - V_t,   A_t = delta_t + gamma * lam * A_{t+1}

    Tokens past the end (mask 0) have V = 0 and contribute nothing. Returns (advantages, returns)."""
    values = values * mask
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    next_adv = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_adv = (delta + gamma * lam * next_adv) * mask[:, t]
        next_value = values[:, t]
        advantages[:, t] = next_adv
    return advantages, advantages + values


def ppo_token_losses(
    logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, clip_eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token clipped surrogate: l_t = -min(rho_t A_t, clip(rho_t, 1-eps, 1+eps) A_t),
    rho_t = pi_theta / pi_old. Returns (l_t, rho_t)."""
    ratio = torch.exp(logps - old_logps)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    return -torch.minimum(unclipped, clipped), ratio


def ppo_clip_fraction(
    logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip_eps: float
) -> torch.Tensor:
    """Fraction of response tokens where clipping binds, i.e. the clipped term is the strictly
    larger loss and the token has no gradient: -clip(rho, 1-eps, 1+eps) A > -rho A (TRL's
    ``pg_clipfrac``). It is rho > 1 + eps with A > 0 or rho < 1 - eps with A < 0; shapes (B, R)."""
    ratio = torch.exp(logps - old_logps)
    binds = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) > -advantages * ratio
    return masked_mean(binds.to(mask.dtype), mask)


def kl_penalty(logps: torch.Tensor, ref_logps: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from tokens sampled from pi, shape (B, R):
    ``k1`` = log pi - log pi_ref (unbiased, can be negative); ``k3`` = (r - 1) - log r with
    r = pi_ref / pi (unbiased, never negative, lower variance; Schulman's "Approximating KL")."""
    if estimator == "k1":
        return logps - ref_logps
    if estimator == "k3":
        log_r = ref_logps - logps
        return torch.expm1(log_r) - log_r
    raise ValueError(f"unknown KL estimator {estimator!r} (k1 or k3)")


def ppo_token_weights(advantages: torch.Tensor, groups: torch.Tensor, weights: ComponentWeights) -> torch.Tensor:
    """Per-token weight: w_pos where A_t > 0, w_neg where A_t < 0 (0 where A_t = 0, which has
    no gradient), times the weight of the token's |A_t| tertile."""
    # built in float64: torch.where with Python scalars would round the weights to float32
    sign_weight = (advantages > 0).double() * weights.pos + (advantages < 0).double() * weights.neg
    return sign_weight * weights.group_tensor(groups)


def ppo_policy_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    groups: torch.Tensor,
    weights: ComponentWeights,
    clip_eps: float,
    n_tokens: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """L_ppo = (1/N) * sum_t w_t * l_t over response tokens. Each component keeps the batch's
    1/N (``n_tokens``, default the mask's count), so POS + NEG = TOT and TOP + MID + BOT = TOT."""
    token_loss, _ = ppo_token_losses(logps, old_logps, advantages, clip_eps)
    w = ppo_token_weights(advantages, groups, weights).to(token_loss.dtype) * mask
    n = mask.sum() if n_tokens is None else n_tokens
    return (w * token_loss).sum() / n


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip_range: float
) -> torch.Tensor:
    """Clipped value loss 0.5 * mean max((V - R)^2, (clip(V, V_old +- c) - R)^2), as TRL."""
    clipped = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)
