"""Issue 10: cDPO readings, hPPO non-degeneracy, the deterministic tertile split at step 0,
the Coordinated-PO controller, and comparisons with both sources of variance."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import write_config
from podyn.config import AblationPanel, ControllerConfig, WinrateConfig, resolve_run, validate_config
from podyn.controller import CoordinatedController, isolate, multiplicative_update
from podyn.objectives import ComponentWeights, dpo_reweighting, tertile_groups
from podyn.schedules import weights_at
from podyn.statistics import (
    compare,
    detectable_effect,
    four_way_verdict,
    hierarchical_bootstrap,
    paired_difference,
    variance_components,
)

REPO = Path(__file__).resolve().parents[1]


def default_raw() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


@pytest.fixture(scope="module")
def default_cfg():
    return validate_config(default_raw(), "config.yaml")


def with_run(name: str, spec: dict):
    """The default config with one more run."""
    raw = default_raw()
    raw["runs"][name] = spec
    return validate_config(raw, "config.yaml")


def merged(base: dict, over: dict) -> dict:
    """Snakemake's merge of a --configfile over config.yaml (nested mappings merged key by key)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def experiment_cfg(name: str):
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    return validate_config(merged(base, yaml.safe_load((REPO / "config" / name).read_text())), name)


def readings_cfg():
    return experiment_cfg("cdpo-readings.yaml")


# ----------------------------------------------------------------------------- cDPO readings


def pos_neg(weights, step):
    w = weights_at(weights, step)
    return w.pos, w.neg


@pytest.mark.parametrize("rho", [0.0, 0.25, 0.5])
def test_cdpo_piecewise_reading_with_floor(rho):
    cfg = with_run("case", {"objective": "dpo", "cdpo": {"t1": 2500, "t2": 5500, "rho": rho}})
    weights = resolve_run(cfg, "case").weights  # step_scale 0.03: t1 = 75, t2 = 165
    assert pos_neg(weights, 0) == (1.0, rho) and pos_neg(weights, 74) == (1.0, rho)  # POS emphasised
    assert pos_neg(weights, 75) == (1.0, 1.0) and pos_neg(weights, 165) == (1.0, 1.0)  # plain DPO
    assert pos_neg(weights, 166) == (rho, 1.0) and pos_neg(weights, 299) == (rho, 1.0)  # NEG emphasised
    assert weights_at(weights, 200).top == weights_at(weights, 200).mid == weights_at(weights, 200).bot == 1.0


@pytest.mark.parametrize("rho", [0.0, 0.25])
def test_cdpo_linear_reading(rho):
    cfg = with_run("case", {"objective": "dpo", "cdpo": {"t1": 2500, "t2": 5500, "reading": "linear", "rho": rho}})
    weights = resolve_run(cfg, "case").weights
    # a(t) = clip((t - 75) / 90, 0, 1); w_pos = max(1 - a, rho), w_neg = max(a, rho)
    for step, a in {0: 0.0, 75: 0.0, 90: 1 / 6, 120: 0.5, 150: 5 / 6, 165: 1.0, 299: 1.0}.items():
        pos, neg = pos_neg(weights, step)
        assert pos == pytest.approx(max(1 - a, rho), abs=1e-12) and neg == pytest.approx(max(a, rho), abs=1e-12), step


def test_default_cdpo_cases_are_the_hard_reading(default_cfg):
    for run, (t1, t2) in {"cdpo_1": (2500, 5500), "cdpo_2": (2500, 6500), "cdpo_3": (3000, 8000)}.items():
        weights = resolve_run(default_cfg, run).weights
        a, b = t1 * 0.03, t2 * 0.03
        assert pos_neg(weights, a - 1) == (1.0, 0.0) and pos_neg(weights, a) == (1.0, 1.0)
        assert pos_neg(weights, b) == (1.0, 1.0) and pos_neg(weights, b + 1) == (0.0, 1.0)


def test_cdpo_readings_config():
    cfg = readings_cfg()
    runs = cfg.runs
    readings = {(r.cdpo.t1, r.cdpo.t2, r.cdpo.reading, r.cdpo.rho) for r in runs.values() if r.cdpo is not None}
    for case in [(2500, 5500), (2500, 6500), (3000, 8000)]:
        for rho in (0.0, 0.25, 0.5):
            assert (*case, "piecewise", rho) in readings
        assert (*case, "linear", 0.0) in readings
    lrs = sorted(resolve_run(cfg, name).hyper.lr for name in cfg.select if runs[name].objective == "dpo")
    base = cfg.dpo.lr
    assert any(math.isclose(lr, base / 3) for lr in lrs) and any(math.isclose(lr, base / 10) for lr in lrs)


# ----------------------------------------------------------------------------- hPPO


@pytest.mark.parametrize("run,period,amplitude", [("hppo_1", 2, 0.08), ("hppo_2", 5, 0.05), ("hppo_3", 20, 0.01)])
def test_hppo_cases_never_reduce_to_ppo(default_cfg, run, period, amplitude):
    """On the iterations the run takes, the weights differ from 1 (cosine: s(t) = cos(2 pi t / t3));
    the mean |w - 1| is at least 2/pi of the amplitude (a cosine's mean |s| over whole periods)."""
    resolved = resolve_run(default_cfg, run)
    steps = range(resolved.hyper.iterations)
    pos = np.array([weights_at(resolved.weights, t).pos for t in steps])
    neg = np.array([weights_at(resolved.weights, t).neg for t in steps])
    assert np.allclose(pos + neg, 2.0)
    assert np.mean(np.abs(pos - 1)) >= 2 / math.pi * amplitude * 0.99
    # cos vanishes only at quarter periods: never for t3 = 2 or 5; at t = 5, 15, ... for t3 = 20
    never_one = [t for t in steps if pos[t] == 1.0]
    assert never_one == ([t for t in steps if t % 20 in (5, 15)] if period == 20 else [])
    assert pos[0] == pytest.approx(1 + amplitude)


def test_sine_reading_of_hppo_case_1_would_be_ppo():
    """Why the cosine: with a sine, case 1 (t3 = 2) is plain PPO at every whole iteration."""
    spec = {"pos": {"wave": {"period": 2, "amplitude": 0.08, "shape": "sine"}}}
    assert all(abs(weights_at(spec, t).pos - 1) < 1e-12 for t in range(100))  # up to sin(pi t) rounding


# ----------------------------------------------------------------------------- tertiles at step 0


def test_tertiles_at_step_0_are_by_index():
    """At step 0 policy = reference, so omega = beta / 2 for every pair up to float noise
    between the two passes; the split must be by index, not by that noise."""
    torch.manual_seed(0)
    logps = -10 * torch.rand(30, dtype=torch.float32)
    noise = 1e-6 * torch.randn(30)  # the float32 discrepancy of a second pass
    margin = 0.5 * ((logps + noise) - logps)
    omega = dpo_reweighting(margin, beta=0.5)
    assert len(set(omega.tolist())) > 1  # the noise is there
    expected = torch.tensor([0] * 10 + [1] * 10 + [2] * 10)
    assert torch.equal(tertile_groups(omega), expected)
    # real differences still order the split
    spread = torch.tensor([0.1, 0.3, 0.2, 0.25, 0.05, 0.15])
    assert tertile_groups(spread).tolist() == [2, 0, 1, 0, 2, 1]


# ----------------------------------------------------------------------------- Coordinated PO


def test_multiplicative_update_hand_computed():
    # sum |G| = 3 + 1 = 4: w_pos = 1 * exp(0.5 * 3/4), w_neg = 1 * exp(0.5 * -1/4)
    new = multiplicative_update({"pos": 1.0, "neg": 1.0}, {"pos": 3.0, "neg": -1.0}, eta=0.5, w_min=0.1, w_max=10.0)
    assert new["pos"] == pytest.approx(math.exp(0.375), rel=1e-15) and new["neg"] == pytest.approx(
        math.exp(-0.125), rel=1e-15
    )
    # clipping: 1.8 * exp(2 * 2/2) = 13.3 -> 2.0; 0.3 * exp(0) stays; 0.3 * exp(-2 * ... ) -> 0.25
    new = multiplicative_update(
        {"top": 1.8, "mid": 0.3, "bot": 0.3}, {"top": 1.0, "mid": 0.0, "bot": -1.0}, eta=2.0, w_min=0.25, w_max=2.0
    )
    assert new == {"top": 2.0, "mid": 0.3, "bot": 0.25}
    assert multiplicative_update({"pos": 0.7}, {"pos": 5.0}, eta=0.0, w_min=0, w_max=2) == {"pos": 0.7}
    assert multiplicative_update({"pos": 0.7, "neg": 1.0}, {"pos": 0.0, "neg": 0.0}, eta=1.0, w_min=0, w_max=2) == {
        "pos": 0.7,
        "neg": 1.0,
    }


def test_controller_steps_every_k_with_measured_g():
    measured = iter([{"pos": 2.0, "neg": -2.0}, {"pos": -1.0, "neg": 3.0}])
    cfg = ControllerConfig(k=3, eta=0.4, w_min=0.5, w_max=1.5)
    ctl = CoordinatedController(cfg, "dpo", targets=lambda model: [])
    ctl.measure = lambda model, batch, weights: next(measured)
    probe = lambda: (None, None)  # noqa: E731
    seen = [ctl(t, probe) for t in range(6)]
    # step 0: sum |G| = 4, pos *= exp(0.4 * 2/4), neg *= exp(0.4 * -2/4); kept until step 3
    p0, n0 = math.exp(0.2), math.exp(-0.2)
    for t in range(3):
        assert (seen[t].pos, seen[t].neg) == pytest.approx((p0, n0), rel=1e-15)
    # step 3: sum |G| = 4, pos *= exp(0.4 * -1/4), neg *= exp(0.4 * 3/4)
    p3, n3 = p0 * math.exp(-0.1), n0 * math.exp(0.3)
    for t in range(3, 6):
        assert (seen[t].pos, seen[t].neg) == pytest.approx((p3, n3), rel=1e-15)
    assert [h["step"] for h in ctl.history] == [0, 3]
    assert (seen[5].top, seen[5].mid, seen[5].bot) == (1.0, 1.0, 1.0)  # not steered


def test_isolated_components_sum_to_the_weighted_total():
    w = ComponentWeights(pos=1.3, neg=0.6, top=0.9)
    assert isolate(w, "pos", ("pos", "neg")) == ComponentWeights(pos=1.3, neg=0.0, top=0.9)
    assert isolate(w, "mid", ("top", "mid", "bot")) == ComponentWeights(pos=1.3, neg=0.6, top=0.0, mid=1.0, bot=0.0)


def test_controller_g_matches_direct_gradients(assets, tiny_cfg):
    """The controller's G per steered component (fast path) equals <gbar, grad L_c> computed
    with backward passes, and the components add up to the weighted total."""
    from podyn.batching import pair_collator
    from podyn.controller import proxy_targets
    from podyn.data import load_split
    from podyn.dynamics import DPOBatch, mean_nll_gradient, trainable
    from podyn.models import load_policy, load_tokenizer
    from podyn.objectives import dpo_component_loss, dpo_terms

    model_cfg = tiny_cfg.model.model_copy(update={"dtype": "float64", "attn_implementation": "sdpa"})
    model, tokenizer = load_policy(assets["base"], model_cfg), load_tokenizer(assets["base"])
    rows = load_split(assets["data"], "prefs_train").select(range(12))
    batch = pair_collator(tokenizer, None, None)([rows[i] for i in range(12)])
    ref = torch.load(assets["ref_logps"])
    dpo_batch = DPOBatch(
        batch["input_ids"],
        batch["attention_mask"],
        batch["response_mask"],
        ref["chosen"][:12].double() + 0.3 * torch.arange(12),
        ref["rejected"][:12].double(),
        0.5,
    )
    cfg = ControllerConfig(k=1, eta=0.1, w_min=0.25, w_max=2.0, proxy="policy_greedy", n_prompts=8, method="jvp")
    targets = proxy_targets(cfg, tokenizer, load_split(assets["data"], "prefs_heldout"), 6, None, None)
    ctl = CoordinatedController(cfg, "dpo", targets)
    weights = ComponentWeights(pos=1.4, neg=0.7)
    G = ctl.measure(model, dpo_batch, weights)

    gbar = mean_nll_gradient(model, targets(model))
    params = trainable(model)
    logps = dpo_batch.logps(model)
    chosen, rejected = logps.chunk(2)
    terms = dpo_terms(chosen, rejected, dpo_batch.ref_chosen, dpo_batch.ref_rejected, 0.5)
    direct = {}
    for c in ("pos", "neg"):
        loss = dpo_component_loss(chosen, rejected, terms.omega, terms.groups, isolate(weights, c, ("pos", "neg")))
        grads = torch.autograd.grad(loss, list(params.values()), retain_graph=True)
        direct[c] = float(sum((g * gbar[k]).sum() for k, g in zip(params, grads)))
    assert G["pos"] == pytest.approx(direct["pos"], rel=1e-6) and G["neg"] == pytest.approx(direct["neg"], rel=1e-6)
    assert G["pos"] != 0 and G["neg"] != 0
    total = dpo_component_loss(chosen, rejected, terms.omega, terms.groups, weights)
    grads = torch.autograd.grad(total, list(params.values()))
    assert G["pos"] + G["neg"] == pytest.approx(
        float(sum((g * gbar[k]).sum() for k, g in zip(params, grads))), rel=1e-6
    )


@pytest.mark.slow
def test_eta_zero_reproduces_the_baseline_exactly(tmp_path, assets, env, tiny_raw):
    """A controller with eta = 0 measures G (and pays for it) but never moves a weight: the
    run's generations, metrics and final weights are bit-identical to the baseline's."""
    from test_reproducibility import run_concurrently

    from conftest import train_cmd

    cfg = copy.deepcopy(tiny_raw)
    cfg["runs"] = {
        "dpo": {"objective": "dpo"},
        "ppo": {"objective": "ppo"},
        "copo_dpo": {"objective": "dpo", "controller": {"k": 2, "eta": 0.0}},
        "copo_ppo": {"objective": "ppo", "controller": {"k": 1, "eta": 0.0, "n_prompts": 8}},
    }
    cfg.pop("select")
    config = write_config(tmp_path / "cfg.yaml", cfg)
    names = ["dpo", "copo_dpo", "ppo", "copo_ppo"]
    run_concurrently(
        [train_cmd(n, 3, config, assets, tmp_path / n) for n in names], env, [tmp_path / f"{n}.log" for n in names]
    )
    for base, copo in (("dpo", "copo_dpo"), ("ppo", "copo_ppo")):
        a, b = tmp_path / base, tmp_path / copo
        assert (a / "out" / "generations.jsonl").read_text() == (b / "out" / "generations.jsonl").read_text()
        assert (a / "work" / "final" / "model.safetensors").read_bytes() == (
            b / "work" / "final" / "model.safetensors"
        ).read_bytes()
        ra, rb = pd.read_csv(a / "out" / "records.csv"), pd.read_csv(b / "out" / "records.csv")
        keep = lambda r: r[~r["kind"].str.startswith(("controller/", "run/"))].reset_index(drop=True)  # noqa: E731
        pd.testing.assert_frame_equal(keep(ra), keep(rb))
        measured = rb[rb["kind"].str.startswith("controller/G/")]
        assert measured["step"].nunique() >= 2  # it did measure, every k steps
        timing = pd.read_csv(b / "out" / "timing.csv").set_index("kind")["value"]
        assert timing["measurements"] == measured["step"].nunique() and timing["controller_seconds"] > 0
        assert set(rb[rb["kind"].str.startswith("weight/")]["value"]) == {1.0}


# ----------------------------------------------------------------------------- comparisons


def test_mde_formula_and_verdicts():
    assert detectable_effect(0.01) == pytest.approx((1.959964 + 0.841621) * 0.01, rel=1e-5)
    assert four_way_verdict(0.01, 0.05, 0.03) == "better"
    assert four_way_verdict(-0.05, -0.01, 0.03) == "worse"
    assert four_way_verdict(-0.02, 0.025, 0.03) == "no difference"
    assert four_way_verdict(-0.04, 0.02, 0.03) == "inconclusive"


def simulated(n_seeds, n_prompts, seed_sd, prompt_sd, noise_sd, effect, rng):
    """Scores of a baseline and a variant sharing seeds and prompts: D = effect + a_s + b_p + e."""
    base = rng.normal(0.6, 0.2, size=(n_seeds, n_prompts))
    diff = (
        effect
        + rng.normal(0, seed_sd, (n_seeds, 1))
        + rng.normal(0, prompt_sd, (1, n_prompts))
        + rng.normal(0, noise_sd, (n_seeds, n_prompts))
    )
    return base + diff, base


def test_hierarchical_bootstrap_covers_seed_variance():
    rng = np.random.default_rng(0)
    a, b = simulated(5, 400, seed_sd=0.03, prompt_sd=0.1, noise_sd=0.2, effect=0.0, rng=rng)
    both = compare(a, b, paired=True, samples=1000)
    prompts_only = compare(a.mean(0, keepdims=True), b.mean(0, keepdims=True), paired=True, samples=1000)
    assert both.variance == "seeds and prompts" and "not covered" in prompts_only.variance
    assert both.se > 1.5 * prompts_only.se  # seed variance (0.03^2 / 5) dominates prompt variance here
    expected = math.sqrt(0.03**2 / 5 + 0.1**2 / 400 + 0.2**2 / 2000)
    assert both.se == pytest.approx(expected, rel=0.6)
    assert both.mde == pytest.approx(detectable_effect(both.se))


def test_unpaired_seeds_resample_each_run():
    rng = np.random.default_rng(1)
    a, b = simulated(3, 200, 0.02, 0.05, 0.1, 0.0, rng)
    reps = hierarchical_bootstrap(a, b[:2], paired=False, samples=200)
    assert reps.shape == (200,) and np.isfinite(reps).all()
    with pytest.raises(ValueError, match="different prompts"):
        hierarchical_bootstrap(a, b[:, :10], paired=False)


def test_an_invalid_judgement_leaves_its_prompt_out_of_the_comparison():
    """2 seeds x 6 prompts; the variant's judgement of prompt 3 in seed 1 is invalid (no score row).
    The comparison uses the 5 prompts valid everywhere, exactly the comparison without prompt 3
    (it made every number NaN and the verdict 'inconclusive')."""
    rng = np.random.default_rng(3)
    rows = [
        {"run": run, "seed": seed, "step": 10, "prompt_index": p, "score": float(rng.integers(0, 2))}
        for run in ("dpo", "variant")
        for seed in (0, 1)
        for p in range(6)
    ]
    scores = pd.DataFrame(rows)
    invalid = (scores["run"] == "variant") & (scores["seed"] == 1) & (scores["prompt_index"] == 3)
    result = paired_difference(scores[~invalid], "variant", "dpo", samples=200, confidence=0.95)
    without = paired_difference(scores[scores["prompt_index"] != 3], "variant", "dpo", samples=200, confidence=0.95)
    assert result == without and result["n_prompts"] == 5 and np.isfinite(result["ci_low"])


def test_variance_components_recover_simulation():
    rng = np.random.default_rng(2)
    a, b = simulated(40, 300, seed_sd=0.05, prompt_sd=0.1, noise_sd=0.2, effect=0.0, rng=rng)
    vc = variance_components(a - b)
    assert vc.seed == pytest.approx(0.05**2, rel=0.5) and vc.prompt == pytest.approx(0.1**2, rel=0.3)
    assert vc.residual == pytest.approx(0.2**2, rel=0.1)
    assert math.isnan(variance_components((a - b)[:1]).seed)


def test_comparisons_table_has_mde_and_four_way_verdict():
    from podyn.winrate_tables import comparisons

    rng = np.random.default_rng(3)
    rows = []
    for run, shift in (("ppo", 0.0), ("better", 0.3), ("same", 0.0)):
        for seed in (0, 1, 2):
            score = np.clip(rng.normal(0.5 + shift, 0.1, 200), 0, 1) if run != "same" else None
            rows.append(
                pd.DataFrame(
                    {
                        "run": run,
                        "seed": seed,
                        "step": 10,
                        "prompt_index": range(200),
                        "score": score if score is not None else 0.5,
                    }
                )
            )
    scores = pd.concat(rows)
    scores.loc[scores["run"] == "same", "score"] = scores.loc[scores["run"] == "ppo", "score"].to_numpy()
    panels = {"x": AblationPanel(title="x", baseline="ppo", runs=["better", "same"])}
    table = comparisons(scores, panels, WinrateConfig(bootstrap_samples=300, confidence=0.95, power=0.8))
    final = table[table["step"] == "final"].set_index("variant")
    assert {"mde", "verdict", "variance", "paired_seeds"} <= set(table.columns)
    assert final.loc["better", "verdict"] == "better" and final.loc["same", "verdict"] == "no difference"
    assert final.loc["better", "n_seeds"] == 3 and final.loc["better", "paired_seeds"]


# ----------------------------------------------------------------------------- claims robustness


def test_claim_predicates_and_seed_verdicts():
    from podyn.claims import claim_predicate, seed_verdict

    assert claim_predicate(">= 0.7")(0.7) and not claim_predicate(">= 0.7")(0.69)
    assert claim_predicate("< 0")(-0.1) and not claim_predicate("< 0")(0.0)
    assert claim_predicate("in [0.2, 0.8]")(0.5) and not claim_predicate("in [0.2, 0.8]")(0.9)
    assert claim_predicate("TOP > MID > BOT") is None
    assert seed_verdict(np.array([0.9, 0.95, 0.92]), np.array([True] * 3), ">= 0.7")[3] == "holds"
    assert seed_verdict(np.array([0.1, 0.2, 0.15]), np.array([False] * 3), ">= 0.7")[3] == "fails"
    assert seed_verdict(np.array([0.5, 0.9, 0.7]), np.array([False, True, True]), ">= 0.7")[3] == "inconclusive"
    assert seed_verdict(np.array([0.8]), np.array([True]), ">= 0.7")[3] == "holds"  # one seed: the point test
    assert seed_verdict(np.array([1.0, 2.0]), np.array([True, False]), "TOP > MID > BOT")[3] == "inconclusive"


def fake_dynamics(run: str, seeds, sign_flip: bool) -> pd.DataFrame:
    rows = []
    for seed in seeds:
        for step in range(0, 100, 10):
            tot = (-1) ** (step // 10) if sign_flip else 1.0 + 0.01 * seed
            parts = {"tot": tot, "pos": 2.0, "neg": tot - 2.0, "top": 0.7 * tot, "mid": 0.2 * tot, "bot": 0.1 * tot}
            rows += [
                {"run": run, "seed": seed, "step": step, "component": c, "layer": "all", "G": g}
                for c, g in parts.items()
            ]
    return pd.DataFrame(rows)


def test_robustness_stage_writes_table_and_heatmap(tmp_path, tiny_raw):
    from podyn.claims import robustness_stage

    seeds = [0, 1, 2]
    (tmp_path / "dyn").mkdir()
    fake_dynamics("dpo", seeds, False).to_csv(tmp_path / "dyn" / "dpo.csv", index=False)
    fake_dynamics("ppo", seeds, True).to_csv(tmp_path / "dyn" / "ppo.csv", index=False)
    records = []
    for seed in seeds:
        path = tmp_path / "runs" / "ppo" / f"seed{seed}" / "records.csv"
        path.parent.mkdir(parents=True)
        pd.DataFrame(
            [
                {"step": 0, "kind": f"{kind}/{g}", "value": v}
                for kind in ("raw_advantage", "abs_raw_advantage")
                for g, v in (("top", 3.0), ("mid", 2.0), ("bot", 1.0))
            ]
        ).to_csv(path, index=False)
        records.append(path)
    raw = copy.deepcopy(tiny_raw)
    raw["robustness"] = {"settings": {"default": {"dpo": "dpo", "ppo": "ppo"}}}
    raw["dynamics"] = {**raw.get("dynamics", {}), "runs": ["dpo", "ppo"]}
    cfg = validate_config(raw, "tiny")
    table = robustness_stage(
        cfg,
        dynamics=[tmp_path / "dyn" / "dpo.csv", tmp_path / "dyn" / "ppo.csv"],
        dynamics_runs=["dpo", "ppo"],
        records=records,
        record_runs=["ppo"] * len(seeds),
        seeds=seeds,
        out=tmp_path / "t.csv",
        figure=tmp_path / "fig",
    )
    verdicts = table.set_index("claim")["verdict"]
    assert verdicts["dpo_stable_target"] == "holds" and verdicts["ppo_sign_changes"] == "holds"
    assert verdicts["ppo_less_aligned_than_dpo"] == "holds"  # PPO positive at half its checkpoints, DPO at all
    assert verdicts["ppo_advantage_order"] == "holds"
    assert (table["n_seeds"] == 3).all() and set(table["verdict"]) <= {"holds", "fails", "inconclusive"}
    assert (tmp_path / "t.csv").exists() and (tmp_path / "fig.png").exists()


def test_coordination_stage_reports_cost_weights_and_comparisons(tmp_path):
    from podyn.winrate_tables import coordination_stage

    rng = np.random.default_rng(4)
    score_files, record_files, timing_files, winrows, labels = [], [], [], [], []
    for run, mean in (("dpo", 0.7), ("copo_dpo", 0.72), ("cdpo_1", 0.6), ("dpo_wo_neg_early", 0.71)):
        for seed in (0, 1):
            judged = tmp_path / "eval" / "judgements" / run / f"seed{seed}_scores.csv"
            judged.parent.mkdir(parents=True, exist_ok=True)
            frames = [
                pd.DataFrame(
                    {"step": step, "prompt_index": range(64), "score": rng.binomial(1, mean, 64).astype(float)}
                )
                for step in (150, 300)
            ]
            pd.concat(frames).to_csv(judged, index=False)
            score_files.append(judged)
            labels.append((run, seed))
            winrows += [
                {"run": run, "seed": seed, "step": s, "win_rate": mean, "ci_low": mean - 0.05, "ci_high": mean + 0.05}
                for s in (150, 300)
            ]
            rec = tmp_path / "runs" / run / f"seed{seed}" / "records.csv"
            rec.parent.mkdir(parents=True, exist_ok=True)
            rows = [
                {
                    "step": t,
                    "kind": f"weight/{c}",
                    "value": (1 + 0.001 * t if c == "pos" else 1.0) if run == "copo_dpo" else 1.0,
                }
                for t in range(300)
                for c in ("pos", "neg", "top", "mid", "bot")
            ]
            pd.DataFrame(rows).to_csv(rec, index=False)
            record_files.append(rec)
            times = [("fit_seconds", 60.0)] + (
                [("controller_seconds", 15.0), ("measurements", 30)] if run == "copo_dpo" else []
            )
            timing = rec.parent / "timing.csv"
            pd.DataFrame(times, columns=["kind", "value"]).to_csv(timing, index=False)
            timing_files.append(timing)
    pd.DataFrame(winrows).to_csv(tmp_path / "winrates.csv", index=False)
    raw = default_raw()
    raw["figures"] = {**raw.get("figures", {}), "formats": ["png"]}
    cfg = validate_config(raw, "config.yaml")
    table = coordination_stage(
        cfg,
        winrates=tmp_path / "winrates.csv",
        runs=[run for run, _ in labels],
        seeds=[seed for _, seed in labels],
        scores=score_files,
        records=record_files,
        timing=timing_files,
        tables=tmp_path / "tables",
        figures=tmp_path / "figures",
    )
    assert list(table["run"]) == ["copo_dpo", "copo_dpo"] and list(table["cost_fraction"]) == [0.25, 0.25]
    assert (table["measurements"] == 30).all() and table["final_pos"].iloc[0] == pytest.approx(1.299)
    assert (table["vs_baseline_run"] == "dpo").all() and (table["vs_best_fixed_run"] == "dpo_wo_neg_early").all()
    assert table["vs_baseline_variance"].iloc[0] == "seeds and prompts"
    assert (tmp_path / "figures" / "fig6_weights.png").exists() and (tmp_path / "figures" / "fig7_copo.png").exists()


def test_claims_robustness_config_pairs_runs_that_change_one_setting():
    cfg = experiment_cfg("claims-robustness.yaml")
    settings = cfg.robustness.settings
    assert len(settings) == 10 and (settings["default"].dpo, settings["default"].ppo) == ("dpo", "ppo")
    for name, setting in settings.items():
        runs = {"dpo": setting.dpo, "ppo": setting.ppo}
        changed = [
            (obj, key)
            for obj, run in runs.items()
            for key, value in resolve_run(cfg, run).hyper.model_dump().items()
            if value != getattr(cfg, obj).model_dump()[key]
        ]
        assert len(changed) == (0 if name == "default" else 1), (name, changed)
        assert set(runs.values()) <= set(cfg.dynamics.runs) and set(runs.values()) <= set(cfg.select)


@pytest.mark.parametrize(
    "name, section, changed",
    [
        ("claims-width.yaml", "model", {"arch": {"hidden_size": 128}}),
        ("claims-difficulty.yaml", "data", {"synthetic": {"max_len": 8}}),
    ],
)
def test_claims_width_and_difficulty_configs_change_one_setting(default_cfg, name, section, changed):
    """The robustness map's width and difficulty settings: the default's DPO and PPO runs, with
    dynamics, on three seeds, with only the model's width or the task's length changed."""
    cfg = experiment_cfg(name)
    assert [(s.dpo, s.ppo) for s in cfg.robustness.settings.values()] == [("dpo", "ppo")]
    assert cfg.seeds == [0, 1, 2] and set(cfg.dynamics.runs) == {"dpo", "ppo"} and set(cfg.select) == {"dpo", "ppo"}
    expected = merged(getattr(default_cfg, section).model_dump(), changed)
    assert getattr(cfg, section).model_dump() == expected != getattr(default_cfg, section).model_dump()
    for other in ("data", "model", "sft", "reward_model", "dpo", "ppo"):
        if other != section:
            assert getattr(cfg, other) == getattr(default_cfg, other), other


def test_copo_settings_config_changes_one_controller_setting():
    """config/copo-settings.yaml: every added CoPO run is the default grid's CoPO run of its
    objective with exactly one controller setting changed, and is compared with its baseline."""
    cfg = experiment_cfg("copo-settings.yaml")
    added = {name for name, run in cfg.runs.items() if run.controller is not None} - {"copo_dpo", "copo_ppo"}
    assert len(added) >= 2
    baselines = {run: panel.baseline for panel in cfg.figures.ablation_panels.values() for run in panel.runs}
    for name in added:
        run = cfg.runs[name]
        default = cfg.runs[f"copo_{run.objective}"].controller.model_dump()
        changed = {k for k, v in run.controller.model_dump().items() if v != default[k]}
        assert len(changed) == 1, (name, changed)
        assert baselines[name] == run.objective
    objectives = {cfg.runs[name].objective for name in added}
    assert objectives == {"dpo", "ppo"}
    # the paper's panels are kept (a config's panels replace the default's), so that each CoPO run
    # has a best fixed variant in tables/copo.csv
    fixed = {p.baseline for p in cfg.figures.ablation_panels.values() if p.paper_claim}
    assert fixed == {"dpo", "ppo"}


def test_ablation_figure_with_only_the_baselines(tmp_path, default_cfg):
    """An experiment that runs no variant (the tiny e2e: select [dpo, ppo]) still draws figure 4,
    with the panels of its baselines."""
    from podyn.figures import ablation_figure

    rows = [
        {"run": r, "seed": 0, "step": s, "win_rate": 0.5, "ci_low": 0.4, "ci_high": 0.6}
        for r in ("dpo", "ppo")
        for s in (0, 2)
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "winrates.csv", index=False)
    ablation_figure(default_cfg, tmp_path / "winrates.csv", tmp_path)
    assert (tmp_path / "fig4_ablations.png").exists()


# ----------------------------------------------------------------------------- hPPO's other targets


def test_ppo_factors_oscillate_the_clip_range_and_scale_the_kl(tmp_path, assets, env, tiny_raw):
    """``ppo_factors`` (method.md §5: the clip range and the KL coefficient as hPPO targets): the
    iteration's clip range is recorded and stored with the analysis batch (so G uses it), and a KL
    factor of 0 leaves the score as the whole reward."""
    from conftest import run_cmd, train_cmd

    cfg = copy.deepcopy(tiny_raw)
    factors = {"clip_eps": {"wave": {"period": 2, "amplitude": 0.5}}, "kl_coef": 0.0}
    cfg["runs"]["ppo"] = {"objective": "ppo", "ppo_factors": factors}
    config = write_config(tmp_path / "cfg.yaml", cfg)
    proc = run_cmd(train_cmd("ppo", 0, config, assets, tmp_path), env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = pd.read_csv(tmp_path / "out" / "records.csv")
    clip = records[records["kind"] == "hyper/clip_eps"].set_index("step")["value"]
    assert clip.to_dict() == pytest.approx({0: 0.3, 1: 0.1, 2: 0.3, 3: 0.1})  # 0.2 (1 + 0.5 cos(pi t))
    assert set(records[records["kind"] == "hyper/kl_coef"]["value"]) == {0.0}
    batch = torch.load(tmp_path / "work" / "analysis" / "step_2" / "batch.pt", weights_only=False)
    assert batch["clip_eps"] == pytest.approx(0.3)
    torch.testing.assert_close(batch["rewards"].sum(1), batch["scores"], rtol=0, atol=0)


def test_ppo_factors_are_for_ppo_runs(tiny_raw):
    raw = copy.deepcopy(tiny_raw)
    raw["runs"]["dpo"]["ppo_factors"] = {"kl_coef": 0.5}
    with pytest.raises(Exception, match="runs.dpo.ppo_factors.*not 'ppo'"):
        validate_config(raw)
