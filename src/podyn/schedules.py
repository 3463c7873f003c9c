"""Component-weight schedules: how a run's POS/NEG/TOP/MID/BOT weights vary with the step.

A run's ``weights`` config maps a component to a *weight spec*:

* a number: a constant weight (``top: 0.3`` is cPPO-top with lambda = 0.3);
* ``{value: v, before: s}``: weight v while t < s, else ``otherwise`` (default 1);
* ``{value: v, after: s}``: weight v while t > s, else ``otherwise`` (default 1);
* ``{ramp: {start: a, end: b, from: w0, to: w1}, floor: f}``: w0 until a, linear to w1 at b,
  then w1; never below ``floor`` (default none);
* ``{wave: {period: p, amplitude: tau, shape: cosine|sine|square, phase: 0}}``:
  1 + tau * s(t) with s(t) = cos(2 pi (t + phase) / p) (the default, method.md §5: a sine
  vanishes at every whole step when p = 2), sin(...) for ``sine``, or for ``square`` the
  square wave of the same period: +1 on the first half of each period, -1 on the second;
* a list of specs: their product.

A run's ``cdpo`` key (method.md §5) expands to POS/NEG specs with :func:`cdpo_weights`.

Step-valued keys (``before``, ``after``, ``start``, ``end``, ``period``, ``phase``) are the paper's
and are multiplied by the objective's ``step_scale`` when a run is resolved
(:func:`podyn.config.resolve_run`).

The specs are typed (the models below, part of :mod:`podyn.config`); the functions also take
the YAML form, which they validate first.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter
from typing_extensions import TypeAliasType

if TYPE_CHECKING:
    from .objectives import ComponentWeights

STEP_KEYS = ("before", "after", "start", "end", "period", "phase")
WEIGHT_KEYS = ("pos", "neg", "top", "mid", "bot")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True, allow_inf_nan=False)

    def scaled(self, scale: float) -> _Spec:
        """This spec with every step-valued key multiplied by ``scale``."""
        update = {k: getattr(self, k) * scale for k in STEP_KEYS if k in type(self).model_fields}
        return self.model_copy(update=update)


class BeforeSpec(_Spec):
    """Weight ``value`` while t < ``before``, else ``otherwise``."""

    value: float = Field(description="Weight while t < before.")
    before: float = Field(description="Step (the paper's) before which `value` applies.")
    otherwise: float = Field(1.0, description="Weight from step `before` on.")


class AfterSpec(_Spec):
    """Weight ``value`` while t > ``after``, else ``otherwise``."""

    value: float = Field(description="Weight while t > after.")
    after: float = Field(description="Step (the paper's) after which `value` applies.")
    otherwise: float = Field(1.0, description="Weight up to step `after`.")


class Ramp(_Spec):
    start: float = Field(description="Step where the ramp leaves `from`.")
    end: float = Field(description="Step where the ramp reaches `to`.")
    from_: float = Field(1.0, alias="from", description="Weight before `start`.")
    to: float = Field(0.0, description="Weight after `end`.")


class RampSpec(_Spec):
    """A linear ramp between two weights, optionally floored."""

    ramp: Ramp
    floor: float | None = Field(None, description="The weight never goes below this value (null: no floor).")

    def scaled(self, scale: float) -> RampSpec:
        return self.model_copy(update={"ramp": self.ramp.scaled(scale)})


class Wave(_Spec):
    period: float = Field(gt=0, description="Period in steps (the paper's).")
    amplitude: float = Field(description="tau in 1 + tau * s(t).")
    shape: Literal["cosine", "sine", "square"] = Field(
        "cosine",
        description="[choice] s(t): a cosine (method.md §5; a sine vanishes at every whole step when the period "
        "is 2), a sine, or the square wave of the same period.",
    )
    phase: float = Field(0.0, description="Shift of t in steps (the paper's).")


class WaveSpec(_Spec):
    """An oscillating weight 1 + amplitude * s(t) (hPPO)."""

    wave: Wave

    def scaled(self, scale: float) -> WaveSpec:
        return self.model_copy(update={"wave": self.wave.scaled(scale)})


_SPEC_TAGS = {BeforeSpec: "<before>", AfterSpec: "<after>", RampSpec: "<ramp>", WaveSpec: "<wave>"}


def _spec_kind(value: Any) -> str:
    """Which kind of spec ``value`` is; the tags are angle-bracketed so that error messages can
    leave them out of the key path (:func:`podyn.config.format_errors`)."""
    if isinstance(value, _Spec):
        return _SPEC_TAGS[type(value)]
    if isinstance(value, (list, tuple)):
        return "<product>"
    if isinstance(value, dict):
        return next((f"<{key}>" for key in ("ramp", "wave", "after") if key in value), "<before>")
    return "<constant>"


WeightSpec = TypeAliasType(
    "WeightSpec",
    Annotated[
        Annotated[float, Tag("<constant>")]
        | Annotated[list["WeightSpec"], Tag("<product>")]
        | Annotated[BeforeSpec, Tag("<before>")]
        | Annotated[AfterSpec, Tag("<after>")]
        | Annotated[RampSpec, Tag("<ramp>")]
        | Annotated[WaveSpec, Tag("<wave>")],
        Discriminator(_spec_kind),
    ],
)
_WEIGHT_SPEC = TypeAdapter(WeightSpec)


class Weights(_Spec):
    """A run's component weights: each a weight spec (see :mod:`podyn.schedules`); absent means 1."""

    pos: WeightSpec | None = Field(None, description="Positive learning (raise logp of the chosen response).")
    neg: WeightSpec | None = Field(None, description="Negative learning (lower logp of the rejected response).")
    top: WeightSpec | None = Field(None, description="The loss-reweighting tertile with the largest weights.")
    mid: WeightSpec | None = Field(None, description="The middle loss-reweighting tertile.")
    bot: WeightSpec | None = Field(None, description="The loss-reweighting tertile with the smallest weights.")


class PPOFactors(_Spec):
    """hPPO's other targets (method.md §5): multipliers, by PPO iteration, of two PPO
    hyper-parameters; absent means 1. ``{clip_eps: {wave: {period: 2, amplitude: 0.08}}}``
    oscillates the clip range as hPPO case 1 oscillates POS and NEG."""

    clip_eps: WeightSpec | None = Field(None, description="Multiplier of ppo.clip_eps at iteration t.")
    kl_coef: WeightSpec | None = Field(None, description="Multiplier of ppo.kl_coef at iteration t.")

    def scaled(self, scale: float) -> PPOFactors:
        return self.model_copy(update={k: _scaled(getattr(self, k), scale) for k in PPO_FACTOR_KEYS})

    def at(self, key: str, step: float) -> float:
        """The multiplier of ``key`` at ``step``."""
        return _weight(getattr(self, key), step)


PPO_FACTOR_KEYS = ("clip_eps", "kl_coef")


def _scaled(spec: Any, scale: float) -> Any:
    if isinstance(spec, list):
        return [_scaled(s, scale) for s in spec]
    if isinstance(spec, _Spec):
        return spec.scaled(scale)
    return spec


def scale_steps(weights: Weights | dict[str, Any], scale: float) -> Weights:
    """Multiply every step-valued key of every component's spec by ``scale``."""
    weights = Weights.model_validate(weights)
    return weights.model_copy(update={k: _scaled(getattr(weights, k), scale) for k in WEIGHT_KEYS})


def _weight(spec: Any, step: float) -> float:
    if spec is None:
        return 1.0
    if isinstance(spec, (int, float)):
        return float(spec)
    if isinstance(spec, list):
        return math.prod(_weight(s, step) for s in spec)
    if isinstance(spec, RampSpec):
        r = spec.ramp
        frac = 1.0 if r.end <= r.start else min(max((step - r.start) / (r.end - r.start), 0.0), 1.0)
        value = r.from_ + frac * (r.to - r.from_)
        return value if spec.floor is None else max(value, spec.floor)
    if isinstance(spec, WaveSpec):
        w = spec.wave
        cycles = (step + w.phase) / w.period
        if w.shape == "square":
            # not sign(sin): at the crossings sin's rounding error would pick the sign
            s = 1.0 if cycles % 1.0 < 0.5 else -1.0
        elif w.shape == "sine":
            s = math.sin(2 * math.pi * cycles)
        else:
            s = math.cos(2 * math.pi * cycles)
        return 1.0 + w.amplitude * s
    if isinstance(spec, BeforeSpec):
        return spec.value if step < spec.before else spec.otherwise
    if isinstance(spec, AfterSpec):
        return spec.value if step > spec.after else spec.otherwise
    raise TypeError(f"not a weight spec: {spec!r}")


def weight_at(spec: Any, step: float) -> float:
    """The weight that ``spec`` (typed, or its YAML form) gives at training step ``step``."""
    return 1.0 if spec is None else _weight(_WEIGHT_SPEC.validate_python(spec), step)


def weights_at(weights: Weights | dict[str, Any], step: float) -> ComponentWeights:
    """The run's component weights at training step ``step``."""
    from .objectives import ComponentWeights  # here: this module is imported by the light config

    if not isinstance(weights, Weights):
        weights = Weights.model_validate(weights)
    return ComponentWeights(**{k: _weight(getattr(weights, k), step) for k in WEIGHT_KEYS})


def cdpo_weights(t1: float, t2: float, reading: str = "piecewise", rho: float = 0.0) -> Weights:
    """cDPO's POS/NEG weight specs (method.md §5), in the same step units as t1 and t2.

    ``piecewise``: t < t1: w_pos = 1, w_neg = rho; t1 <= t <= t2: both 1 (plain DPO);
    t > t2: w_pos = rho, w_neg = 1. ``rho = 0`` is the hard reading (one component only),
    ``rho > 0`` the floor reading (the de-emphasised component keeps weight rho).
    ``linear``: w_pos = 1 - a(t), w_neg = a(t), a(t) = clip((t - t1) / (t2 - t1), 0, 1),
    each floored at rho (w = max(w, rho)), so ``rho = 0`` is the plain blend."""
    rho = float(rho)
    if reading == "piecewise":
        return Weights(neg=BeforeSpec(value=rho, before=float(t1)), pos=AfterSpec(value=rho, after=float(t2)))
    if reading == "linear":
        t1, t2 = float(t1), float(t2)
        return Weights(
            pos=RampSpec(ramp=Ramp(start=t1, end=t2, from_=1.0, to=0.0), floor=rho),
            neg=RampSpec(ramp=Ramp(start=t1, end=t2, from_=0.0, to=1.0), floor=rho),
        )
    raise ValueError(f"unknown cDPO reading {reading!r} (piecewise or linear)")
