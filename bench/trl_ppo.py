#!/usr/bin/env python
"""Parity of podyn's PPO with TRL's ``PPOTrainer`` from TRL 1.12.0, the last release that has it
(``trl.experimental.ppo``; removed in 1.13). One PPO iteration, one epoch, one minibatch of the
whole rollout, float32 on the CPU, on the same tiny GPT-NeoX policy, reference, reward model,
value model, prompts and settings.

TRL samples the rollout; podyn is handed TRL's sampled sequences (its ``generate`` post-processes
them as it would its own), then runs its own rollout (log-probs, reference log-probs, values,
score, KL, rewards, GAE, whitening) and its own optimisation step. Captured from TRL's
``train()`` at its first ``optimizer.step()``: every rollout tensor, the policy and value
losses and the gradients of the policy and of the value model.

Two tables are printed:

* **podyn vs TRL**: podyn as configured. Differences here come from the conventions listed
  in the README (score slot, the source of the old log-probs, T + 1e-7).
* **podyn's functions on TRL's conventions vs TRL**: podyn's pure functions (``kl_penalty``,
  ``gae``, ``masked_whiten``, ``ppo_policy_loss``, ``value_loss``) and log-prob / value code,
  given TRL's conventions (the score on the first slot after EOS, the value there in the
  value loss, TRL's old log-probs, T + 1e-7). These agree to float32 round-off, which shows
  that the differences of the first table are those conventions and nothing else.

The policy is the reference plus Gaussian noise (so that the KL is not 0), EOS is made likely
(so that the rollout has both ended and cut responses) and the padding token unlikely (TRL
treats a sampled padding token as the end of a response; podyn as a token). The
reward head is scaled so that scores are O(1).

Run it in its own environment (TRL 1.12 is not a podyn dependency)::

    python3 -m venv bench/.venv-trl-ppo
    bench/.venv-trl-ppo/bin/pip install torch==2.13.0 trl==1.12.0 transformers==5.24.0 lightning pandas
    bench/.venv-trl-ppo/bin/python bench/trl_ppo.py | tee bench/reference/trl_ppo.log
"""

from __future__ import annotations

import os

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # model-shard writing and loading bars

import argparse
import logging
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing podyn

from podyn.batching import encode_prompt, left_padded_prompts  # noqa: E402
from podyn.config import validate_config  # noqa: E402
from podyn.data.synthetic import TaskConfig, generate_task, vocabulary  # noqa: E402
from podyn.models import build_gpt_neox, build_word_tokenizer, load_policy, load_scalar_model  # noqa: E402
from podyn.objectives import (  # noqa: E402
    ComponentWeights,
    gae,
    kl_penalty,
    masked_whiten,
    ppo_policy_loss,
    value_loss,
)
from podyn.schedules import Weights  # noqa: E402
from podyn.training import ppo as podyn_ppo  # noqa: E402
from podyn.training.ppo import PPOModule, response_logps, response_values  # noqa: E402

TRL_TEMPERATURE_EPS = 1e-7  # TRL divides the logits by temperature + 1e-7


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/trl_ppo.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=16, help="prompts in the rollout batch (default: %(default)s)")
    parser.add_argument("--response-length", type=int, default=12, help="max_new_tokens (default: %(default)s)")
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default: %(default)s)")
    parser.add_argument("--kl-estimator", choices=["k1", "k3"], default="k1", help="default: %(default)s")
    parser.add_argument("--kl-coef", type=float, default=0.2, help="default: %(default)s")
    parser.add_argument(
        "--noise", type=float, default=0.05, help="policy = reference + noise x mean |weight| (default: %(default)s)"
    )
    parser.add_argument("--eos-logit", type=float, default=0.3, help="extra logit given to EOS (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    parser.add_argument(
        "--config",
        type=Path,
        default=ROOT / "config.yaml",
        help="tiny architecture and PPO settings (default: config.yaml)",
    )
    return parser.parse_args(argv)


def quiet() -> None:
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    for name in ("lightning", "lightning.pytorch", "accelerate", "trl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """podyn's PPO settings (config.yaml's ppo section, typed) with the bench's overrides: one
    epoch over one minibatch of the whole rollout, no gradient clipping (TRL's PPO has none);
    float32 models with eager attention on both sides."""
    cfg = validate_config(yaml.safe_load(args.config.read_text()), str(args.config))
    ppo = cfg.ppo.model_copy(
        update=dict(
            rollout_batch_size=args.rows,
            mini_batch_size=args.rows,
            ppo_epochs=1,
            iterations=1,
            max_grad_norm=None,
            temperature=args.temperature,
            kl_coef=args.kl_coef,
            kl_estimator=args.kl_estimator,
            normalize_reward=False,
            lr_schedule="constant",
        )
    )
    model = cfg.model.model_copy(update={"dtype": "float32", "attn_implementation": "eager"})
    return {"ppo": ppo, "arch": cfg.model.arch, "model": model, "max_new_tokens": args.response_length}


def build_models(folder: Path, tokenizer, arch, model_cfg, args: argparse.Namespace) -> None:
    """reference (= the base), policy (base + noise), reward and value models, saved to ``folder``."""
    base = build_gpt_neox(len(tokenizer), tokenizer, arch, args.seed)
    # coordinate 0 of the final layer norm's output is a constant 1 that feeds EOS (+) and padding (-)
    with torch.no_grad():
        base.gpt_neox.final_layer_norm.weight[0] = 0.0
        base.gpt_neox.final_layer_norm.bias[0] = 1.0
        base.get_output_embeddings().weight[:, 0] = 0.0
        base.get_output_embeddings().weight[tokenizer.eos_token_id, 0] = args.eos_logit
        base.get_output_embeddings().weight[tokenizer.pad_token_id, 0] = -30.0
    base.save_pretrained(folder / "reference")
    tokenizer.save_pretrained(folder / "reference")
    generator = torch.Generator().manual_seed(args.seed + 1)
    with torch.no_grad():
        for p in base.parameters():
            p.add_(args.noise * p.abs().mean() * torch.randn(p.shape, generator=generator))
    base.save_pretrained(folder / "policy")
    for offset, name in ((2, "reward"), (3, "value")):
        torch.manual_seed(args.seed + offset)
        model = load_scalar_model(folder / "reference", model_cfg)
        with torch.no_grad():
            model.score.weight.mul_(50.0 if name == "reward" else 5.0)
        model.save_pretrained(folder / name)


def load_four(folder: Path, model_cfg: dict[str, Any]) -> dict[str, torch.nn.Module]:
    return {
        "policy": load_policy(folder / "policy", model_cfg),
        "reference": load_policy(folder / "reference", model_cfg),
        "reward": load_scalar_model(folder / "reward", model_cfg),
        "value": load_scalar_model(folder / "value", model_cfg),
    }


# ----------------------------------------------------------------------------- TRL


def run_trl(
    folder: Path, tokenizer, prompt_ids: list[list[int]], s: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """TRL's ``train()`` for one iteration; its locals and gradients at the first optimizer step."""
    from datasets import Dataset
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    ppo = s["ppo"]
    models = load_four(folder, s["model"])
    left = type(tokenizer).from_pretrained(folder / "reference")
    left.padding_side = "left"
    config = PPOConfig(
        output_dir=str(folder / "trl"),
        per_device_train_batch_size=args.rows,
        gradient_accumulation_steps=1,
        num_mini_batches=1,
        num_ppo_epochs=1,
        total_episodes=args.rows,
        local_rollout_forward_batch_size=args.rows,
        response_length=args.response_length,
        temperature=args.temperature,
        stop_token="eos",
        missing_eos_penalty=ppo.missing_eos_penalty,
        kl_coef=ppo.kl_coef,
        kl_estimator=args.kl_estimator,
        cliprange=ppo.clip_eps,
        cliprange_value=ppo.cliprange_value,
        vf_coef=ppo.vf_coef,
        gamma=ppo.gamma,
        lam=ppo.lam,
        learning_rate=ppo.lr,
        num_sample_generations=0,
        seed=args.seed,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        fp16=False,
        disable_tqdm=True,
        logging_steps=1,
    )
    dataset = Dataset.from_dict({"input_ids": prompt_ids})
    trainer = PPOTrainer(
        args=config,
        processing_class=left,
        model=models["policy"],
        ref_model=models["reference"],
        reward_model=models["reward"],
        value_model=models["value"],
        train_dataset=dataset,
        eval_dataset=dataset,
    )
    captured: dict[str, Any] = {}

    def capture_instead_of_step(*_, **__) -> None:
        if captured:
            return
        frame = sys._getframe(1)  # TRL's train()
        captured.update(
            {
                k: (v.detach().clone() if torch.is_tensor(v) else v)
                for k, v in frame.f_locals.items()
                if not k.startswith("_")
            }
        )
        captured["grads"] = {
            n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None
        }

    trainer.optimizer.step = capture_instead_of_step
    trainer.train()
    return captured


# ----------------------------------------------------------------------------- podyn


def run_podyn(
    folder: Path, tokenizer, prompt_ids: list[list[int]], trl: dict[str, Any], s: dict[str, Any]
) -> dict[str, Any]:
    """podyn's rollout on TRL's sampled sequences, then its optimisation step (gradients kept)."""
    models = load_four(folder, s["model"])
    module = PPOModule(
        models["policy"],
        models["value"],
        models["reference"],
        models["reward"],
        tokenizer,
        s["ppo"],
        s["max_new_tokens"],
        Weights(),
        None,
    )
    sequences = trl["query_responses"]

    def replay(input_ids, attention_mask, **kwargs):
        assert torch.equal(input_ids, sequences[:, : input_ids.shape[1]]), "the prompts differ from TRL's"
        return sequences

    module.policy.generate = replay
    batch = module.rollout(prompt_ids)
    out: dict[str, Any] = {"batch": batch}
    opt = module.configure_optimizers()["optimizer"]

    def keep_grads(*_, **__) -> None:
        out["grads"] = {
            **{f"policy.{n}": p.grad.detach().clone() for n, p in module.policy.named_parameters()},
            **{f"value_model.{n}": p.grad.detach().clone() for n, p in module.value_model.named_parameters()},
        }

    opt.step = keep_grads
    module.optimizers = lambda: opt
    module.manual_backward = lambda loss: loss.backward()
    losses = {}
    policy_loss, v_loss = podyn_ppo.ppo_policy_loss, podyn_ppo.value_loss
    podyn_ppo.ppo_policy_loss = lambda *a, **k: losses.setdefault("policy", policy_loss(*a, **k))
    podyn_ppo.value_loss = lambda *a, **k: losses.setdefault("value", v_loss(*a, **k))
    try:
        module._optimise(batch, ComponentWeights(), 0)
    finally:
        podyn_ppo.ppo_policy_loss, podyn_ppo.value_loss = policy_loss, v_loss
    out.update(policy_loss=losses["policy"].detach(), value_loss=losses["value"].detach())
    return out


def replay_on_trl_conventions(
    folder: Path, trl: dict[str, Any], s: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """podyn's functions with TRL's conventions: score on the first slot after EOS (the last slot
    of a cut response), the value at that slot in GAE and the value loss, TRL's old log-probs
    (the sampler's), the logits divided by T + 1e-7."""
    ppo = s["ppo"]
    models = load_four(folder, s["model"])
    temperature = args.temperature + TRL_TEMPERATURE_EPS
    sequences, width = trl["query_responses"], trl["context_length"]
    attention = (sequences != trl["processing_class"].pad_token_id).long()
    roll = {"sequences": sequences, "attention_mask": attention, "prompt_width": width}
    mask = (~trl["padding_mask"]).double()
    mask_p1 = (~trl["padding_mask_p1"]).double()
    old = trl["logprobs"].double() * mask
    with torch.no_grad():
        ref = response_logps(models["reference"], roll, temperature).double() * mask
        values = response_values(models["value"], roll).double() * mask_p1
    kl = kl_penalty(old, ref, args.kl_estimator) * mask
    rewards = -ppo.kl_coef * kl
    lengths = trl["sequence_lengths"]
    end = torch.where(lengths + 1 < rewards.shape[1], lengths + 1, lengths)
    rewards[torch.arange(len(end)), end] += trl["scores"].double()
    raw, returns = gae(rewards, values, mask_p1, ppo.gamma, ppo.lam)
    advantages = masked_whiten(raw, mask)
    logps = response_logps(models["policy"], roll, temperature)
    vpred = response_values(models["value"], roll)
    policy_loss = ppo_policy_loss(
        logps,
        old.float(),
        advantages.float(),
        mask.float(),
        torch.zeros_like(sequences[:, width:]),
        ComponentWeights(),
        ppo.clip_eps,
    )
    v_loss = value_loss(vpred, values.float(), returns.float(), mask_p1.float(), ppo.cliprange_value)
    (policy_loss + ppo.vf_coef * v_loss).backward()
    grads = {
        **{f"policy.{n}": p.grad for n, p in models["policy"].named_parameters()},
        **{f"value_model.{n}": p.grad for n, p in models["value"].named_parameters()},
    }
    return {
        "ref": ref,
        "kl": kl,
        "rewards": rewards,
        "values": values,
        "advantages": advantages,
        "returns": returns,
        "policy_loss": policy_loss.detach(),
        "value_loss": v_loss.detach(),
        "grads": grads,
    }


# ----------------------------------------------------------------------------- comparison


def max_diff(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[float, float]:
    a, b = a.double(), b.double()
    if mask is not None:
        a, b = a[mask.bool()], b[mask.bool()]
    return float((a - b).abs().max()), float(b.abs().max())


def grad_diffs(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], prefix: str) -> tuple[float, float]:
    names = [n for n in theirs if n.startswith(prefix)]
    assert names and all(n in ours for n in names), "parameter names differ"
    diff = max(float((ours[n].double() - theirs[n].double()).abs().max()) for n in names)
    scale = max(float(theirs[n].double().abs().max()) for n in names)
    return diff, scale


def table(title: str, rows: list[tuple[str, float, float, str]]) -> str:
    lines = [
        title,
        f"| {'quantity':<24} | {'max |podyn - TRL|':>17} | {'max |TRL|':>10} | note",
        f"|{'-' * 26}|{'-' * 19}|{'-' * 12}|------",
    ]
    lines += [f"| {name:<24} | {d:17.3e} | {s:10.3e} | {note}" for name, d, s, note in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    quiet()
    torch.set_num_threads(1)
    import transformers
    import trl as trl_pkg

    s = settings(args)
    print(
        f"TRL {trl_pkg.__version__}, transformers {transformers.__version__}, torch {torch.__version__}, float32, CPU"
    )
    print(
        f"rows {args.rows}, response_length {args.response_length}, T {args.temperature}, "
        f"kl {args.kl_estimator} x {args.kl_coef}, gamma {s['ppo'].gamma}, lam {s['ppo'].lam}, "
        f"clip {s['ppo'].clip_eps}, vclip {s['ppo'].cliprange_value}, "
        f"vf_coef {s['ppo'].vf_coef}, missing_eos_penalty {s['ppo'].missing_eos_penalty}"
    )
    tokenizer = build_word_tokenizer(vocabulary())
    prompts = [
        row["prompt"]
        for row in generate_task(
            TaskConfig(seed=args.seed, n_sft=1, n_pref_train=args.rows, n_pref_heldout=1, n_test=1)
        )["prefs_train"]
    ]
    prompt_ids = [encode_prompt(tokenizer, p) for p in prompts]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        torch.manual_seed(args.seed)
        build_models(folder, tokenizer, s["arch"], s["model"], args)
        trl = run_trl(folder, tokenizer, prompt_ids, s, args)
        queries = trl["queries"]
        trl_prompts = [q[q != tokenizer.pad_token_id].tolist() for q in queries]  # TRL's row order
        assert torch.equal(left_padded_prompts(trl_prompts, tokenizer.pad_token_id)["input_ids"], queries)
        ours = run_podyn(folder, tokenizer, trl_prompts, trl, s)
        replay = replay_on_trl_conventions(folder, trl, s, args)

    batch = ours["batch"]
    mask = batch["response_mask"]
    trl_mask = (~trl["padding_mask"]).double()
    responses = trl["query_responses"][:, trl["context_length"] :]
    ended = batch["ended"]
    sampled_pad = int(((responses == tokenizer.pad_token_id) & mask.bool()).sum())
    print(
        f"rollout: {int(ended.sum())} of {len(ended)} responses end with EOS, {int(mask.sum())} response tokens, "
        f"{sampled_pad} sampled padding tokens; response masks equal: {torch.equal(mask, trl_mask)}"
    )
    trl_values = trl["values"]
    pg, vg = (
        grad_diffs(ours["grads"], trl["grads"], "policy."),
        grad_diffs(ours["grads"], trl["grads"], "value_model."),
    )
    slot = "score slot: TRL's first slot after EOS, podyn's EOS"
    rows_a = [
        ("scores", *max_diff(batch["scores"], trl["scores"]), "same index (last response token), same penalty"),
        (
            "old log-probs",
            *max_diff(batch["old_logps"], trl["logprobs"], mask),
            "TRL: generate's scores (KV cache); podyn: a full forward",
        ),
        ("reference log-probs", *max_diff(batch["ref_logps"], trl["ref_logprobs"], mask), "T + 1e-7 in TRL"),
        ("KL per token", *max_diff(batch["kl"], trl["kl"], mask), "follows the old log-probs"),
        ("rewards", *max_diff(batch["rewards"], trl["rewards"]), slot),
        (
            "rewards, score slots out",
            *max_diff(
                batch["rewards"] - _score_matrix(batch["scores"], mask),
                trl["rewards"] - _score_matrix(trl["scores"], trl["padding_mask_p1"], trl["sequence_lengths"]),
            ),
            "the KL part",
        ),
        ("values", *max_diff(batch["values"], trl_values, mask), ""),
        ("advantages (whitened)", *max_diff(batch["advantages"], trl["advantages"], mask), slot + " + V there"),
        ("returns", *max_diff(batch["returns"], trl["returns"], mask), slot + " + V there"),
        ("policy loss", *max_diff(ours["policy_loss"], trl["pg_loss"]), "follows the advantages"),
        ("value loss", *max_diff(ours["value_loss"], trl["vf_loss"]), "TRL's also covers the slot after EOS"),
        ("policy gradient", *pg, "follows the advantages"),
        ("value-model gradient", *vg, "follows the returns"),
    ]
    print()
    print(table("podyn (as configured) vs TRL 1.12 PPOTrainer, one iteration", rows_a))
    pgr, vgr = (
        grad_diffs(replay["grads"], trl["grads"], "policy."),
        grad_diffs(replay["grads"], trl["grads"], "value_model."),
    )
    rows_b = [
        ("reference log-probs", *max_diff(replay["ref"], trl["ref_logprobs"], trl_mask), ""),
        ("KL per token", *max_diff(replay["kl"], trl["kl"], trl_mask), ""),
        ("rewards", *max_diff(replay["rewards"], trl["rewards"]), ""),
        ("values", *max_diff(replay["values"], trl_values), "incl. the slot after EOS"),
        ("advantages (whitened)", *max_diff(replay["advantages"], trl["advantages"]), ""),
        ("returns", *max_diff(replay["returns"], trl["returns"]), ""),
        ("policy loss", *max_diff(replay["policy_loss"], trl["pg_loss"]), ""),
        ("value loss", *max_diff(replay["value_loss"], trl["vf_loss"]), ""),
        ("policy gradient", *pgr, ""),
        ("value-model gradient", *vgr, ""),
    ]
    print()
    print(table("podyn's functions on TRL's conventions vs TRL 1.12 PPOTrainer", rows_b))


def _score_matrix(scores: torch.Tensor, mask_or_p1: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """The scores placed where each implementation puts them: podyn (``lengths`` None) at the
    last response token; TRL at the first slot after EOS, or the last slot of a cut response."""
    out = torch.zeros(mask_or_p1.shape, dtype=torch.float64)
    rows = torch.arange(len(scores))
    if lengths is None:
        out[rows, mask_or_p1.sum(1).long() - 1] = scores.double()
    else:
        out[rows, torch.where(lengths + 1 < out.shape[1], lengths + 1, lengths)] = scores.double()
    return out


if __name__ == "__main__":
    main()
