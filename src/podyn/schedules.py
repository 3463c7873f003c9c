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
and are multiplied by the objective's ``step_scale`` when the config is resolved.
"""

from __future__ import annotations

import math
from typing import Any

from .objectives import ComponentWeights

STEP_KEYS = ("before", "after", "start", "end", "period", "phase")
WEIGHT_KEYS = ("pos", "neg", "top", "mid", "bot")


def weight_at(spec: Any, step: float) -> float:
    if spec is None:
        return 1.0
    if isinstance(spec, (int, float)):
        return float(spec)
    if isinstance(spec, list):
        return math.prod(weight_at(s, step) for s in spec)
    if "ramp" in spec:
        r = spec["ramp"]
        start, end = r["start"], r["end"]
        frac = 1.0 if end <= start else min(max((step - start) / (end - start), 0.0), 1.0)
        return max(r.get("from", 1.0) + frac * (r.get("to", 0.0) - r.get("from", 1.0)), spec.get("floor", -math.inf))
    if "wave" in spec:
        w = spec["wave"]
        cycles = (step + w.get("phase", 0.0)) / w["period"]
        shape = w.get("shape", "cosine")
        if shape == "square":
            # not sign(sin): at the crossings sin's rounding error would pick the sign
            s = 1.0 if cycles % 1.0 < 0.5 else -1.0
        elif shape == "sine":
            s = math.sin(2 * math.pi * cycles)
        else:
            s = math.cos(2 * math.pi * cycles)
        return 1.0 + w["amplitude"] * s
    if "before" in spec:
        return spec["value"] if step < spec["before"] else spec.get("otherwise", 1.0)
    if "after" in spec:
        return spec["value"] if step > spec["after"] else spec.get("otherwise", 1.0)
    raise ValueError(f"unrecognised weight spec {spec!r}")


def weights_at(weight_specs: dict[str, Any], step: float) -> ComponentWeights:
    """The run's component weights at training step ``step``."""
    return ComponentWeights(**{k: weight_at(weight_specs.get(k), step) for k in WEIGHT_KEYS})


def cdpo_weights(t1: float, t2: float, reading: str = "piecewise", rho: float = 0.0) -> dict[str, Any]:
    """cDPO's POS/NEG weight specs (method.md §5), in the same step units as t1 and t2.

    ``piecewise``: t < t1: w_pos = 1, w_neg = rho; t1 <= t <= t2: both 1 (plain DPO);
    t > t2: w_pos = rho, w_neg = 1. ``rho = 0`` is the hard reading (one component only),
    ``rho > 0`` the floor reading (the de-emphasised component keeps weight rho).
    ``linear``: w_pos = 1 - a(t), w_neg = a(t), a(t) = clip((t - t1) / (t2 - t1), 0, 1),
    each floored at rho (w = max(w, rho)), so ``rho = 0`` is the plain blend."""
    if reading == "piecewise":
        return {"neg": {"value": rho, "before": t1}, "pos": {"value": rho, "after": t2}}
    if reading == "linear":
        return {
            "pos": {"ramp": {"start": t1, "end": t2, "from": 1.0, "to": 0.0}, "floor": rho},
            "neg": {"ramp": {"start": t1, "end": t2, "from": 0.0, "to": 1.0}, "floor": rho},
        }
    raise ValueError(f"unknown cDPO reading {reading!r} (piecewise or linear)")


def scale_steps(spec: Any, scale: float) -> Any:
    """Multiply every step-valued key of a weight spec by ``scale``."""
    if isinstance(spec, list):
        return [scale_steps(s, scale) for s in spec]
    if isinstance(spec, dict):
        return {k: (v * scale if k in STEP_KEYS and isinstance(v, (int, float)) else scale_steps(v, scale)) for k, v in spec.items()}
    return spec
