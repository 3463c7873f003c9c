"""Component-weight schedules: how a run's POS/NEG/TOP/MID/BOT weights vary with the step.

A run's ``weights`` config maps a component to a *weight spec*:

* a number: a constant weight (``top: 0.3`` is cPPO-top with lambda = 0.3);
* ``{value: v, before: s}``: weight v while t < s, else ``otherwise`` (default 1);
* ``{value: v, after: s}``: weight v while t > s, else ``otherwise`` (default 1);
* ``{ramp: {start: a, end: b, from: w0, to: w1}}``: w0 until a, linear to w1 at b, then w1;
* ``{wave: {period: p, amplitude: tau, shape: sine|square, phase: 0}}``:
  1 + tau * s(t) with s(t) = sin(2 pi (t + phase) / p), or for ``square`` the square wave
  of the same period: +1 on the first half of each period, -1 on the second;
* a list of specs: their product.

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
        return r.get("from", 1.0) + frac * (r.get("to", 0.0) - r.get("from", 1.0))
    if "wave" in spec:
        w = spec["wave"]
        cycles = (step + w.get("phase", 0.0)) / w["period"]
        if w.get("shape", "sine") == "square":
            # not sign(sin): at the crossings sin's rounding error would pick the sign
            s = 1.0 if cycles % 1.0 < 0.5 else -1.0
        else:
            s = math.sin(2 * math.pi * cycles)
        return 1.0 + w["amplitude"] * s
    if "before" in spec:
        return spec["value"] if step < spec["before"] else spec.get("otherwise", 1.0)
    if "after" in spec:
        return spec["value"] if step > spec["after"] else spec.get("otherwise", 1.0)
    raise ValueError(f"unrecognised weight spec {spec!r}")


def weights_at(weight_specs: dict[str, Any], step: float) -> ComponentWeights:
    """The run's component weights at training step ``step``."""
    return ComponentWeights(**{k: weight_at(weight_specs.get(k), step) for k in WEIGHT_KEYS})


def scale_steps(spec: Any, scale: float) -> Any:
    """Multiply every step-valued key of a weight spec by ``scale``."""
    if isinstance(spec, list):
        return [scale_steps(s, scale) for s in spec]
    if isinstance(spec, dict):
        return {k: (v * scale if k in STEP_KEYS and isinstance(v, (int, float)) else scale_steps(v, scale)) for k, v in spec.items()}
    return spec
