"""Component-weight sources: where a training step gets its POS/NEG/TOP/MID/BOT weights.

* :class:`ScheduleSource`: a fixed schedule (:mod:`podyn.schedules`): the paper's variants.
* :class:`CoordinatedController`: Coordinated PO in real time (method.md §9). Every ``k``
  steps it measures G of each steered component, at the current weights and on the current
  batch, against a proxy target set D'_t (never the test prompts), then updates

      w_c <- clip(w_c * exp(eta * G_c / sum_j |G_j|), w_min, w_max).

  With ``eta = 0`` the weights stay 1 and the run is its baseline.

Both serve DPO and PPO alike: the trainer asks ``source(step, probe)`` for the step's
weights; ``probe`` is a zero-argument callable returning the model and the step's batch as a
:class:`podyn.dynamics.DPOBatch` / :class:`podyn.dynamics.PPOBatch`, built only when the
source measures.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

import torch

from .objectives import GROUPS, ComponentWeights
from .schedules import Weights, weights_at

if TYPE_CHECKING:
    from .config import ControllerConfig, ResolvedRun

Probe = Callable[[], tuple[torch.nn.Module, Any]]
Targets = Callable[[torch.nn.Module], list[dict[str, torch.Tensor]]]  # model -> D'_t batches
DEFAULT_STEER = {"dpo": ("pos", "neg"), "ppo": GROUPS}


def multiplicative_update(
    weights: dict[str, float], G: dict[str, float], eta: float, w_min: float, w_max: float
) -> dict[str, float]:
    """w_c <- clip(w_c * exp(eta * G_c / sum_j |G_j|), w_min, w_max) for every steered c.
    With sum_j |G_j| = 0 (nothing measured) the weights are kept."""
    total = sum(abs(g) for g in G.values())
    if total == 0.0 or eta == 0.0:
        return dict(weights)
    return {c: min(max(w * math.exp(eta * G[c] / total), w_min), w_max) for c, w in weights.items()}


def isolate(weights: ComponentWeights, component: str, steered: Sequence[str]) -> ComponentWeights:
    """The current weights with every other steered component set to 0: the loss that
    component contributes to this step's update. The steered components partition the
    objective (POS/NEG or TOP/MID/BOT), so their G add up to G of the whole weighted loss."""
    return replace(weights, **{c: 0.0 for c in steered if c != component})


class WeightSource(Protocol):
    """What a trainer asks for a step's component weights."""

    measures: bool

    def __call__(self, step: int, probe: Probe | None = None) -> ComponentWeights: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class ScheduleSource:
    """Weights from a fixed schedule of the step."""

    measures = False

    def __init__(self, specs: Weights | dict[str, Any]) -> None:
        self.specs = specs if isinstance(specs, Weights) else Weights.model_validate(specs)

    def __call__(self, step: int, probe: Probe | None = None) -> ComponentWeights:
        return weights_at(self.specs, step)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class CoordinatedController:
    """Steers some component weights by G measured every ``k`` steps (method.md §9); the other
    components follow ``base_specs`` (a schedule, usually none). ``targets(model)`` returns the
    proxy target set D'_t as prompt+response batches (see :func:`proxy_targets`)."""

    measures = True

    def __init__(
        self,
        cfg: ControllerConfig,
        objective: str,
        targets: Targets,
        base_specs: Weights | dict[str, Any] | None = None,
    ) -> None:
        self.steer = tuple(cfg.steer or DEFAULT_STEER[objective])
        self.k, self.eta = cfg.k, cfg.eta
        self.w_min, self.w_max = cfg.w_min, cfg.w_max
        self.method, self.fd_eps = cfg.method, cfg.fd_eps
        self.targets = targets
        self.base = ScheduleSource(base_specs if base_specs is not None else Weights())
        self.steered = {c: 1.0 for c in self.steer}
        self.seconds = 0.0  # time spent measuring and updating, for the cost fraction
        self.history: list[dict[str, Any]] = []  # one row per measurement: step, G and new weights
        # this process's share (not in the checkpoint): a resumed run's cost is that of its last attempt,
        # like the training time it is divided by
        self.attempt_seconds, self.attempt_measurements = 0.0, 0

    def current(self, step: int) -> ComponentWeights:
        return replace(self.base(step), **self.steered)

    def __call__(self, step: int, probe: Probe | None = None) -> ComponentWeights:
        if step % self.k == 0 and probe is not None:
            start = time.perf_counter()
            model, batch = probe()
            G = self.measure(model, batch, self.current(step))
            self.steered = multiplicative_update(self.steered, G, self.eta, self.w_min, self.w_max)
            elapsed = time.perf_counter() - start
            self.seconds += elapsed
            self.attempt_seconds += elapsed
            self.attempt_measurements += 1
            self.history.append({"step": step, "seconds": elapsed, **{f"G/{c}": g for c, g in G.items()}})
        return self.current(step)

    def measure(self, model: torch.nn.Module, batch, weights: ComponentWeights) -> dict[str, float]:
        """G of each steered component at the current weights, against D'_t."""
        from .dynamics import weighted_alignment

        targets = self.targets(model)
        weightings = {c: isolate(weights, c, self.steer) for c in self.steer}
        return weighted_alignment(model, batch, targets, weightings, self.method, self.fd_eps)

    def state_dict(self) -> dict:
        return {"steered": dict(self.steered), "seconds": self.seconds, "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.steered, self.seconds, self.history = dict(state["steered"]), state["seconds"], list(state["history"])


def proxy_targets(
    cfg: ControllerConfig,
    tokenizer,
    heldout_rows: Sequence[dict],
    max_new_tokens: int,
    max_prompt_tokens: int | None,
    max_response_tokens: int | None,
) -> Targets:
    """D'_t from the first ``n_prompts`` held-out *training* pairs: the current policy's greedy
    responses, regenerated at every measurement (``policy_greedy``), or the pairs' chosen
    responses (``heldout_chosen``)."""
    from .batching import encode_prompt, encode_response, prompt_response_batch
    from .generation import generate

    rows = list(heldout_rows)[: cfg.n_prompts]
    prompts = [encode_prompt(tokenizer, r["prompt"], max_prompt_tokens) for r in rows]
    if cfg.proxy == "heldout_chosen":
        chosen_ids = [encode_response(tokenizer, r["chosen"], max_response_tokens) for r in rows]
        fixed = prompt_response_batch(prompts, chosen_ids, tokenizer.pad_token_id)

        def chosen(model: torch.nn.Module) -> list[dict[str, torch.Tensor]]:
            return [{k: v.to(model.device) for k, v in fixed.items()}]

        return chosen

    def greedy(model: torch.nn.Module) -> list[dict[str, torch.Tensor]]:
        roll = generate(model, tokenizer, prompts, max_new_tokens, do_sample=False)
        generated = roll.sequences[:, roll.prompt_width :]
        responses = [seq[mask.bool()].tolist() for seq, mask in zip(generated, roll.response_mask)]
        batch = prompt_response_batch(prompts, responses, tokenizer.pad_token_id)
        return [{k: v.to(model.device) for k, v in batch.items()}]

    return greedy


def as_weight_source(weights: Weights | dict[str, Any] | WeightSource) -> WeightSource:
    """A schedule (typed or its YAML form) as a :class:`ScheduleSource`; a weight source as it is."""
    return ScheduleSource(weights) if isinstance(weights, (Weights, dict)) else weights


def weight_source(
    run: ResolvedRun, targets_factory: Callable[[ControllerConfig], Targets] | None = None
) -> WeightSource:
    """The run's weight source: its controller if it has one, else its schedule."""
    if run.controller is None:
        return ScheduleSource(run.weights)
    if targets_factory is None:
        raise ValueError(f"run {run.name!r} has a controller but no proxy target set was given")
    return CoordinatedController(run.controller, run.objective, targets_factory(run.controller), run.weights)
