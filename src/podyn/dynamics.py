"""Gradient alignment G (docs/method.md §1):

    G(L; theta_t) = < gbar_D'(theta_t), grad L(B_t; theta_t) >,
    gbar_D'(theta) = mean_{(x', y') in D'} -grad logp(y'|x'; theta).

Every objective here is a function of per-sample log-probs s (a response's logp for DPO, a
token's for PPO), so by the chain rule

    G(L) = sum_s (dL/ds) * < grad s, gbar >.

The fast path computes gbar with one backward pass over D', then every directional derivative
< grad s, gbar > in one forward-mode pass (``torch.func.jvp``) or with a central finite
difference along gbar; each component's G is then a weighted sum of those scalars, with the
weights dL/ds obtained by autograd on the (cheap) loss-of-log-probs. The direct method (one
backward pass per component, then a dot product) is kept as the reference.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.func import functional_call, jvp

from .models import sequence_logps, token_logps
from .objectives import COMPONENTS, ComponentWeights, dpo_component_loss, dpo_terms, ppo_clip_fraction, ppo_policy_loss


@contextmanager
def forward_mode_attention() -> Iterator[None]:
    """Forward-mode AD has no rule for the fused SDPA kernels; the math kernel has one."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        yield


def trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def mean_nll_gradient(model: torch.nn.Module, final_batches: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """gbar: the gradient of the mean NLL of the final responses D' (batches of prompt+response)."""
    params = trainable(model)
    total = sum(int(b["input_ids"].shape[0]) for b in final_batches)
    grads = {k: torch.zeros_like(v) for k, v in params.items()}
    for batch in final_batches:
        nll = -sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["response_mask"]).sum() / total
        for name, g in zip(params, torch.autograd.grad(nll, list(params.values()), allow_unused=True)):
            if g is not None:
                grads[name] += g
    return grads


def directional_derivatives(
    model: torch.nn.Module,
    batch,
    direction: dict[str, torch.Tensor],
    method: str = "jvp",
    fd_eps: float = 1e-3,
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """< grad s, direction > for every per-sample log-prob s of ``batch.logps(model)``,
    computed ``chunk_rows`` sequences at a time (the derivatives are per row).

    ``jvp``: exact forward-mode AD. ``finite_difference``: (s(theta + h v) - s(theta - h v)) / 2h
    with h = fd_eps / |v|, an O(h^2) approximation for kernels without forward-mode rules."""
    params = {k: v.detach() for k, v in trainable(model).items()}
    tangents = {k: direction[k].to(v.dtype) for k, v in params.items()}
    step = chunk_rows or batch.n_rows
    chunks = [slice(i, min(i + step, batch.n_rows)) for i in range(0, batch.n_rows, step)]

    def at(p: dict[str, torch.Tensor], rows: slice) -> torch.Tensor:
        return batch.logps(lambda **kw: functional_call(model, p, args=(), kwargs=kw), rows)

    if method == "jvp":
        with forward_mode_attention():
            return torch.cat(
                [jvp(lambda p, rows=rows: at(p, rows), (params,), (tangents,))[1].detach() for rows in chunks]
            )
    if method == "finite_difference":
        norm = float(torch.sqrt(sum((t.double() ** 2).sum() for t in tangents.values())))
        if norm == 0.0:
            return torch.zeros_like(batch.logps(model))
        h = fd_eps / norm
        plus = {k: params[k] + h * tangents[k] for k in params}
        minus = {k: params[k] - h * tangents[k] for k in params}
        with torch.no_grad():
            return torch.cat([(at(plus, rows) - at(minus, rows)) / (2 * h) for rows in chunks])
    raise ValueError(f"unknown dynamics method {method!r}")


# ----------------------------------------------------------------------------- objectives as functions of log-probs


@dataclass
class DPOBatch:
    """A DPO training batch B_t: chosen rows then rejected rows, plus reference log-probs."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    ref_chosen: torch.Tensor
    ref_rejected: torch.Tensor
    beta: float

    @property
    def n_rows(self) -> int:
        return self.input_ids.shape[0]

    def logps(self, model, rows: slice = slice(None)) -> torch.Tensor:
        """logp of every row (chosen rows, then rejected rows), shape (2B,)."""
        return sequence_logps(model, self.input_ids[rows], self.attention_mask[rows], self.response_mask[rows])

    def component_losses(self, logps: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.weighted_losses(logps, {c: ComponentWeights.only(c) for c in COMPONENTS})

    def weighted_losses(self, logps: torch.Tensor, weightings: dict[str, ComponentWeights]) -> dict[str, torch.Tensor]:
        """The DPO surrogate under each named set of component weights."""
        chosen, rejected = logps.chunk(2)
        terms = dpo_terms(
            chosen, rejected, self.ref_chosen.to(logps.dtype), self.ref_rejected.to(logps.dtype), self.beta
        )
        return {
            name: dpo_component_loss(chosen, rejected, terms.omega, terms.groups, w) for name, w in weightings.items()
        }


@dataclass
class PPOBatch:
    """A PPO rollout batch B_t as recorded at the checkpoint; log-probs are of softmax(logits / T)
    at the rollout's sampling temperature T."""

    sequences: torch.Tensor
    attention_mask: torch.Tensor
    prompt_width: int
    response_mask: torch.Tensor
    old_logps: torch.Tensor
    advantages: torch.Tensor
    groups: torch.Tensor
    clip_eps: float
    temperature: float = 1.0

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> PPOBatch:
        keys = ("sequences", "attention_mask", "prompt_width", "response_mask", "old_logps", "advantages", "groups")
        temperature = record.get("temperature", 1.0)  # batches recorded before the temperature was stored: T = 1
        return cls(**{k: record[k] for k in keys}, clip_eps=record["clip_eps"], temperature=temperature)

    @property
    def n_rows(self) -> int:
        return self.sequences.shape[0]

    def logps(self, model, rows: slice = slice(None)) -> torch.Tensor:
        """logp of every response token, shape (B, R)."""
        logps = token_logps(model, self.sequences[rows], self.attention_mask[rows], self.temperature)
        return logps[:, self.prompt_width - 1 :]

    def at_current_weights(self, dtype: torch.dtype) -> tuple[PPOBatch, torch.Tensor]:
        """(this batch with pi_old taken at the weights being analysed, G's s), for
        ``dynamics.ppo_old_logps: recompute``. At the checkpoint of step t the weights are
        theta_old, so pi_old is the model's own log-prob and rho = exp(s - pi_old) = exp(0) = 1
        exactly on every token: no token is clipped (the rollout's recorded log-probs, from bf16
        autocast or other kernels, would give rho = exp(round-off), which can bind the clip and
        drop tokens from G). As the PPO loss depends on s only through rho, s = pi_old = 0 gives
        its sensitivities dL/ds, the clip fraction (0) and so G bit for bit, without the forward
        pass that computing pi_old would take. ``dtype``: the log-probs' (the model's, at least
        float32)."""
        zeros = torch.zeros(self.response_mask.shape, dtype=dtype, device=self.response_mask.device)
        return replace(self, old_logps=zeros), zeros

    def clip_fraction(self, logps: torch.Tensor) -> float:
        """Fraction of response tokens where the clip binds (they have no gradient)."""
        mask = self.response_mask.to(logps.dtype)
        old, advantages = self.old_logps.to(logps.dtype), self.advantages.to(logps.dtype)
        return float(ppo_clip_fraction(logps, old, advantages, mask, self.clip_eps))

    def component_losses(self, logps: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.weighted_losses(logps, {c: ComponentWeights.only(c) for c in COMPONENTS})

    def weighted_losses(self, logps: torch.Tensor, weightings: dict[str, ComponentWeights]) -> dict[str, torch.Tensor]:
        """The PPO policy loss under each named set of component weights (the batch's 1/N kept)."""
        mask = self.response_mask.to(logps.dtype)
        n_tokens = mask.sum()
        old, adv = self.old_logps.to(logps.dtype), self.advantages.to(logps.dtype)
        return {
            name: ppo_policy_loss(logps, old, adv, mask, self.groups, w, self.clip_eps, n_tokens)
            for name, w in weightings.items()
        }


def loss_sensitivities(
    batch, logps: torch.Tensor, weightings: dict[str, ComponentWeights] | None = None
) -> dict[str, torch.Tensor]:
    """dL_c/ds for every component c (or every named weighting) and per-sample log-prob s
    (no model pass needed)."""
    with torch.enable_grad():
        s = logps.detach().requires_grad_(True)
        losses = batch.component_losses(s) if weightings is None else batch.weighted_losses(s, weightings)
    return {c: torch.autograd.grad(loss, s, retain_graph=True)[0] for c, loss in losses.items()}


@dataclass
class Alignment:
    """G per component at one checkpoint, with the per-sample pieces it was summed from."""

    G: dict[str, float]
    derivatives: torch.Tensor  # < grad s, gbar > per sample / token
    sensitivities: dict[str, torch.Tensor]  # dL_c / ds
    gbar_norm: float


def gradient_alignment(
    model: torch.nn.Module,
    batch,
    final_batches: list[dict[str, torch.Tensor]],
    method: str = "jvp",
    fd_eps: float = 1e-3,
    chunk_rows: int | None = None,
    *,
    logps: torch.Tensor | None = None,
) -> Alignment:
    """G for TOT, POS, NEG, TOP, MID and BOT at the model's current weights (fast path).
    ``logps``: ``batch.logps(model)`` where the caller has already computed it."""
    gbar = mean_nll_gradient(model, final_batches)
    if logps is None:
        with torch.no_grad():
            logps = batch.logps(model)
    derivatives = directional_derivatives(model, batch, gbar, method, fd_eps, chunk_rows)
    sens = loss_sensitivities(batch, logps)
    G = {c: float((sens[c].double() * derivatives.double()).sum()) for c in COMPONENTS}
    norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in gbar.values())))
    return Alignment(G=G, derivatives=derivatives, sensitivities=sens, gbar_norm=norm)


def weighted_alignment(
    model: torch.nn.Module,
    batch,
    final_batches: list[dict[str, torch.Tensor]],
    weightings: dict[str, ComponentWeights],
    method: str = "finite_difference",
    fd_eps: float = 1e-3,
) -> dict[str, float]:
    """G of the objective under each named set of component weights, by the fast path
    (one backward pass over D', one directional-derivative pass over B): what the
    Coordinated-PO controller measures while training (method.md §9)."""
    gbar = mean_nll_gradient(model, final_batches)
    with torch.no_grad():
        logps = batch.logps(model)
    derivatives = directional_derivatives(model, batch, gbar, method, fd_eps)
    sens = loss_sensitivities(batch, logps, weightings)
    return {name: float((sens[name].double() * derivatives.double()).sum()) for name in weightings}


def gradient_alignment_direct(
    model: torch.nn.Module, batch, final_batches: list[dict[str, torch.Tensor]]
) -> dict[str, float]:
    """Reference: one backward pass per component, then < gbar, grad L_c >."""
    gbar = mean_nll_gradient(model, final_batches)
    params = trainable(model)
    out = {}
    for c, loss in batch.component_losses(batch.logps(model)).items():
        grads = torch.autograd.grad(loss, list(params.values()), retain_graph=True, allow_unused=True)
        out[c] = float(sum((g.double() * gbar[k].double()).sum() for k, g in zip(params, grads) if g is not None))
    return out


def layer_of(parameter_name: str) -> str:
    """The block a parameter belongs to: ``...layers.<i>`` or its first two name parts."""
    parts = parameter_name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part in ("layers", "h", "layer") and parts[i + 1].isdigit():
            return ".".join(parts[: i + 2])
    return ".".join(parts[:2]) if len(parts) > 2 else parts[0]


def per_layer_alignment(
    model: torch.nn.Module,
    batch,
    final_batches: list[dict[str, torch.Tensor]],
    method: str = "jvp",
    fd_eps: float = 1e-3,
    chunk_rows: int | None = None,
    *,
    logps: torch.Tensor | None = None,
) -> dict[str, dict[str, float]]:
    """G restricted to each block's parameters: gbar is zeroed outside the block. The blocks'
    values add up to the full G (the inner product splits over parameters). ``logps``:
    ``batch.logps(model)`` where the caller has already computed it."""
    gbar = mean_nll_gradient(model, final_batches)
    if logps is None:
        with torch.no_grad():
            logps = batch.logps(model)
    sens = loss_sensitivities(batch, logps)
    out: dict[str, dict[str, float]] = {}
    for layer in dict.fromkeys(layer_of(name) for name in gbar):
        restricted = {k: (g if layer_of(k) == layer else torch.zeros_like(g)) for k, g in gbar.items()}
        d = directional_derivatives(model, batch, restricted, method, fd_eps, chunk_rows)
        out[layer] = {c: float((sens[c].double() * d.double()).sum()) for c in COMPONENTS}
    return out
