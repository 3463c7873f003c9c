"""Component-weight schedules (docs/method.md §4, §5) and step scaling."""

from __future__ import annotations

import copy
import math

import pytest

from podyn.config import resolve_run, validate_config
from podyn.objectives import ComponentWeights
from podyn.schedules import Weights, scale_steps, weight_at, weights_at

T1, T2 = 2500, 5500
CDPO = {"neg": {"value": 0.0, "before": T1}, "pos": {"value": 0.0, "after": T2}}
CDPO_LINEAR = {
    "pos": {"ramp": {"start": T1, "end": T2, "from": 1.0, "to": 0.0}},
    "neg": {"ramp": {"start": T1, "end": T2, "from": 0.0, "to": 1.0}},
}


def hppo(period, tau, shape="sine"):
    return {
        "pos": {"wave": {"period": period, "amplitude": tau, "shape": shape}},
        "neg": {"wave": {"period": period, "amplitude": -tau, "shape": shape}},
    }


def test_no_weights_is_plain_objective():
    assert weights_at({}, 123) == ComponentWeights(1, 1, 1, 1, 1)


def test_cdpo_piecewise():
    # t < t1: POS only; t1 <= t <= t2: POS + NEG (plain DPO); t > t2: NEG only
    for step, (pos, neg) in {
        0: (1, 0),
        T1 - 1: (1, 0),
        T1: (1, 1),
        4000: (1, 1),
        T2: (1, 1),
        T2 + 1: (0, 1),
        9000: (0, 1),
    }.items():
        w = weights_at(CDPO, step)
        assert (w.pos, w.neg) == (pos, neg), step
        assert (w.top, w.mid, w.bot) == (1, 1, 1)


def test_ablations():
    wo_neg_early = {"neg": {"value": 0, "before": 3000}}
    assert weights_at(wo_neg_early, 2999).neg == 0 and weights_at(wo_neg_early, 3000).neg == 1
    wo_pos_late = {"pos": {"value": 0, "after": 6000}}
    assert weights_at(wo_pos_late, 6000).pos == 1 and weights_at(wo_pos_late, 6001).pos == 0
    assert weights_at({"top": 0}, 7) == ComponentWeights(top=0.0)
    assert weights_at({"mid": 0.7}, 7) == ComponentWeights(mid=0.7)


def test_cdpo_linear_ramp():
    # w_pos = 1 - a(t), w_neg = a(t), a(t) = clip((t - t1) / (t2 - t1), 0, 1)
    for step in [0, T1, 3000, 4000, 5000, T2, 7000]:
        a = min(max((step - T1) / (T2 - T1), 0.0), 1.0)
        w = weights_at(CDPO_LINEAR, step)
        assert w.pos == pytest.approx(1 - a, abs=1e-15)
        assert w.neg == pytest.approx(a, abs=1e-15)
    assert weights_at(CDPO_LINEAR, 4000).pos == pytest.approx(0.5)


def test_hppo_sine():
    # w_pos = 1 + tau sin(2 pi t / t3), w_neg = 1 - tau sin(2 pi t / t3)
    spec = hppo(20, 0.01)
    assert weights_at(spec, 5).pos == pytest.approx(1.01, abs=1e-15)  # quarter period: s = 1
    assert weights_at(spec, 5).neg == pytest.approx(0.99, abs=1e-15)
    assert weights_at(spec, 15).pos == pytest.approx(0.99, abs=1e-15)  # three quarters: s = -1
    for step in range(0, 41):
        s = math.sin(2 * math.pi * step / 20)
        w = weights_at(spec, step)
        assert w.pos == pytest.approx(1 + 0.01 * s, abs=1e-15)
        assert w.neg == pytest.approx(1 - 0.01 * s, abs=1e-15)
        assert w.pos + w.neg == pytest.approx(2.0, abs=1e-15)
    # periodic
    assert weights_at(hppo(5, 0.05), 3).pos == pytest.approx(weights_at(hppo(5, 0.05), 13).pos, abs=1e-12)


def test_square_wave():
    """+1 on the first half of each period, -1 on the second, at every step including the
    crossings (where the sign of a float sine would be rounding noise)."""
    spec = hppo(20, 0.05, "square")
    for step in range(0, 60):
        s = 1.0 if (step % 20) < 10 else -1.0
        w = weights_at(spec, step)
        assert (w.pos, w.neg) == (pytest.approx(1 + 0.05 * s), pytest.approx(1 - 0.05 * s)), step
    # period 2 alternates every iteration
    assert [weights_at(hppo(2, 0.08, "square"), t).pos for t in range(4)] == pytest.approx([1.08, 0.92, 1.08, 0.92])
    # phase shifts the wave by that many steps
    shifted = {"wave": {"period": 20, "amplitude": 0.05, "shape": "square", "phase": 10}}
    assert weight_at(shifted, 0) == pytest.approx(0.95)


def test_product_of_specs():
    spec = [0.5, {"value": 0.0, "before": 10}]
    assert weight_at(spec, 5) == 0.0
    assert weight_at(spec, 10) == 0.5


def test_scale_steps_scales_every_step_key_only():
    spec = {
        "pos": [
            {"value": 0.5, "before": 1000, "otherwise": 2.0},
            {"ramp": {"start": 2000, "end": 4000, "from": 1.0, "to": 0.25}},
        ],
        "neg": {"wave": {"period": 200, "amplitude": 0.3, "shape": "sine", "phase": 50}},
        "top": {"value": 0.1, "after": 3000},
        "mid": 0.7,
    }
    scaled = scale_steps(spec, 0.01)
    assert scaled == Weights.model_validate(
        {
            "pos": [
                {"value": 0.5, "before": 10.0, "otherwise": 2.0},
                {"ramp": {"start": 20.0, "end": 40.0, "from": 1.0, "to": 0.25}},
            ],
            "neg": {"wave": {"period": 2.0, "amplitude": 0.3, "shape": "sine", "phase": 0.5}},
            "top": {"value": 0.1, "after": 30.0},
            "mid": 0.7,
        }
    )
    # the scaled schedule at step c*t is the paper's schedule at step t
    for step in [0, 500, 999, 1000, 2500, 3000, 3001, 3700, 5000]:
        a, b = weights_at(spec, step), weights_at(scaled, step * 0.01)
        for k in ("pos", "neg", "top", "mid", "bot"):
            assert getattr(b, k) == pytest.approx(getattr(a, k), abs=1e-12), (k, step)


def test_resolve_run_scales_by_objective_step_scale(tiny_raw):
    cfg = copy.deepcopy(tiny_raw)
    cfg["dpo"]["step_scale"] = 0.002
    cfg["ppo"]["step_scale"] = 0.5
    cfg.pop("select", None)  # tiny.yaml selects dpo and ppo, which this test replaces
    cfg["runs"] = {
        "cdpo": {"objective": "dpo", "weights": CDPO},
        "cdpo_fast": {"objective": "dpo", "weights": CDPO, "overrides": {"step_scale": 0.001, "beta": 0.2}},
        "hppo": {"objective": "ppo", "weights": hppo(20, 0.01)},
    }
    cfg = validate_config(cfg)
    run = resolve_run(cfg, "cdpo")
    assert run.objective == "dpo"
    assert run.weights == Weights.model_validate(
        {"neg": {"value": 0.0, "before": 5.0}, "pos": {"value": 0.0, "after": 11.0}}
    )
    assert (weights_at(run.weights, 4).pos, weights_at(run.weights, 4).neg) == (1, 0)
    assert (weights_at(run.weights, 8).pos, weights_at(run.weights, 8).neg) == (1, 1)
    assert (weights_at(run.weights, 12).pos, weights_at(run.weights, 12).neg) == (0, 1)
    fast = resolve_run(cfg, "cdpo_fast")
    assert fast.weights.neg.before == pytest.approx(2.5) and fast.weights.pos.after == pytest.approx(5.5)
    assert fast.hyper.beta == 0.2 and resolve_run(cfg, "cdpo").hyper.beta == cfg.dpo.beta
    assert resolve_run(cfg, "hppo").weights.pos.wave.period == 10.0
