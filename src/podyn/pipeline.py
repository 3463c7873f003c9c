"""The workflow's stages, one function each; the Snakemake rules call them through
``podyn <stage>`` (see :mod:`podyn.cli`)."""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from torch.utils.data import DataLoader

from . import data as data_mod
from .batching import encode_prompt
from .config import resolve_run
from .data.synthetic import TaskConfig, generate_task, vocabulary
from .io import DataError, write_csv, write_jsonl
from .judges import bootstrap_ci
from .models import build_gpt_neox, build_word_tokenizer, inference_device, load_policy, load_scalar_model, load_tokenizer, prepare_tokenizer, sequence_logps
from .training.checkpoints import RunRecorder
from .training.common import copy_metrics, fit_resumable, make_trainer, prepare_workdir
from .training.dpo import DPOModule
from .training.ppo import PPOModule
from .training.reward import RewardModule, pair_collator, pairwise_hits
from .training.sft import SFTModule, sft_collator

SPLITS = ("sft", "prefs_train", "prefs_heldout", "test")


def save_pretrained_atomic(out_dir: Path, *objects) -> None:
    """``save_pretrained`` every object into a temporary sibling, then rename it into place."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    for obj in objects:
        obj.save_pretrained(tmp)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)


# ----------------------------------------------------------------------------- data


def prepare_data(cfg: dict[str, Any], out_dir: Path) -> None:
    """Every split as JSON lines: generated (``synthetic``) or loaded (``hf``, ``local``)."""
    data = cfg["data"]
    if data["source"] == "synthetic":
        task_cfg = TaskConfig.from_dict({**data["synthetic"], "seed": cfg["seed"]})
        splits = generate_task(task_cfg)
    else:
        from .data.sources import load_splits

        splits = load_splits(data, cfg["seed"], cfg.get("model"))
        _check_judge_pairs_disjoint(splits)
    for name, rows in splits.items():
        write_jsonl(Path(out_dir) / f"{name}.jsonl", rows)


def _check_judge_pairs_disjoint(splits: dict[str, list[dict]]) -> None:
    """The reward-model judge must not have seen the policy's training pairs."""
    if "judge_prefs" not in splits:
        return
    policy = {(r["prompt"], r["chosen"], r["rejected"]) for r in splits["prefs_train"]}
    shared = sum((r["prompt"], r["chosen"], r["rejected"]) in policy for r in splits["judge_prefs"])
    if shared:
        raise DataError(f"data.roles.judge_prefs shares {shared} pairs with data.roles.prefs_train; give them disjoint rows (start/n)")


# ----------------------------------------------------------------------------- models


def base_model(cfg: dict[str, Any], out_dir: Path) -> None:
    """The initial model and tokenizer, saved with ``save_pretrained``."""
    model_cfg = cfg["model"]
    if model_cfg["init"] == "scratch":
        if cfg["data"]["source"] != "synthetic":
            raise ValueError("model.init 'scratch' builds a word-level tokenizer for the synthetic task only; use 'pretrained' for real data")
        tokenizer = build_word_tokenizer(vocabulary())
        model = build_gpt_neox(len(tokenizer), tokenizer, model_cfg["arch"], cfg["seed"])
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(model_cfg["name_or_path"]))
        model = AutoModelForCausalLM.from_pretrained(model_cfg["name_or_path"])
        model.config.pad_token_id = tokenizer.pad_token_id
    save_pretrained_atomic(out_dir, model, tokenizer)


def _loader(dataset, batch_size: int, collate, seed: int, drop_last: bool = True) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collate, drop_last=drop_last, generator=torch.Generator().manual_seed(seed))


def sft(cfg: dict[str, Any], data_dir: Path, base_dir: Path, out_dir: Path, workdir: Path) -> None:
    prepare_workdir(workdir, {k: cfg[k] for k in ("seed", "model", "trainer", "generation", "sft")}, [Path(data_dir) / "sft.jsonl", base_dir])
    L.seed_everything(cfg["seed"], workers=True, verbose=False)
    tokenizer = load_tokenizer(base_dir)
    model = load_policy(base_dir, cfg["model"])
    gen = cfg["generation"]
    loader = _loader(data_mod.load_split(data_dir, "sft"), cfg["sft"]["batch_size"], sft_collator(tokenizer, gen["max_prompt_tokens"], gen["max_response_tokens"]), cfg["seed"])
    trainer = make_trainer(Path(workdir), cfg["trainer"], cfg["sft"]["max_steps"])
    fit_resumable(trainer, SFTModule(model, cfg["sft"]), loader, Path(workdir))
    save_pretrained_atomic(out_dir, model, tokenizer)


def reward_model(cfg: dict[str, Any], data_dir: Path, sft_dir: Path, out_dir: Path, metrics_out: Path, workdir: Path, split: str = "prefs_train") -> None:
    """A Bradley-Terry reward model on ``split`` (``prefs_train`` for PPO, ``judge_prefs`` for
    the reward-model judge), initialised from the SFT model, with its held-out accuracy."""
    prepare_workdir(workdir, {k: cfg[k] for k in ("seed", "model", "trainer", "generation", "reward_model")}, [Path(data_dir) / f"{split}.jsonl", sft_dir])
    L.seed_everything(cfg["seed"], workers=True, verbose=False)
    tokenizer = load_tokenizer(sft_dir)
    model = load_scalar_model(sft_dir, cfg["model"])
    gen = cfg["generation"]
    collate = pair_collator(tokenizer, gen["max_prompt_tokens"], gen["max_response_tokens"])
    rm_cfg = cfg["reward_model"]
    loader = _loader(data_mod.load_split(data_dir, split), rm_cfg["batch_size"], collate, cfg["seed"])
    trainer = make_trainer(Path(workdir), cfg["trainer"], rm_cfg["max_steps"])
    fit_resumable(trainer, RewardModule(model, rm_cfg), loader, Path(workdir))
    heldout = DataLoader(data_mod.load_split(data_dir, "prefs_heldout"), batch_size=rm_cfg["batch_size"], collate_fn=collate)
    hits = pairwise_hits(model.to(inference_device(cfg)), heldout).cpu().numpy()
    accuracy, low, high = bootstrap_ci(hits, cfg["winrate"]["bootstrap_samples"], cfg["winrate"]["confidence"], cfg["seed"])
    write_csv(metrics_out, pd.DataFrame([{"split": "prefs_heldout", "n_pairs": len(hits), "accuracy": accuracy, "ci_low": low, "ci_high": high}]))
    save_pretrained_atomic(out_dir, model, tokenizer)


@torch.no_grad()
def reference_logps(cfg: dict[str, Any], data_dir: Path, sft_dir: Path, out_file: Path) -> None:
    """logp_ref(y+|x) and logp_ref(y-|x) of every training pair, computed once for all DPO runs."""
    tokenizer = load_tokenizer(sft_dir)
    device = inference_device(cfg)
    model = load_policy(sft_dir, cfg["model"]).eval().to(device)
    gen = cfg["generation"]
    loader = DataLoader(data_mod.load_split(data_dir, "prefs_train"), batch_size=cfg["dpo"]["batch_size"], collate_fn=pair_collator(tokenizer, gen["max_prompt_tokens"], gen["max_response_tokens"]))
    chosen, rejected = [], []
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        c, r = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["response_mask"]).double().cpu().chunk(2)
        chosen.append(c)
        rejected.append(r)
    from .io import atomic_path

    with atomic_path(out_file) as tmp:
        torch.save({"chosen": torch.cat(chosen), "rejected": torch.cat(rejected)}, tmp)


@torch.no_grad()
def generate_responses(cfg: dict[str, Any], data_dir: Path, model_dir: Path, out_file: Path) -> None:
    """Greedy responses of a saved policy (the SFT baseline) to the test prompts, as step 0."""
    from .generation import greedy_responses

    tokenizer = load_tokenizer(model_dir)
    model = load_policy(model_dir, cfg["model"]).eval().to(inference_device(cfg))
    prompts = data_mod.load_split(data_dir, "test")["prompt"]
    gen = cfg["generation"]
    responses = greedy_responses(model, tokenizer, prompts, gen["max_new_tokens"], gen["eval_batch_size"], gen["max_prompt_tokens"])
    write_jsonl(out_file, [{"step": 0, "prompt_index": i, "prompt": p, "response": r} for i, (p, r) in enumerate(zip(prompts, responses))])


# ----------------------------------------------------------------------------- preference optimization


def train_run(cfg: dict[str, Any], run_name: str, seed: int, paths: dict[str, Path]) -> None:
    """Train one run (DPO- or PPO-family) and write its generations, checkpoints manifest,
    per-step records and metrics. ``paths`` holds data, sft, reward, ref_logps, workdir and
    the outputs generations, checkpoints, records, metrics."""
    run = resolve_run(cfg, run_name)
    hyper = run["hyper"]
    workdir = Path(paths["workdir"])
    settings = {"run": run, "seed": seed, **{k: cfg[k] for k in ("model", "trainer", "generation")}}
    prepare_workdir(workdir, settings, [paths["data"], paths["sft"], paths["reward"], paths["ref_logps"]])
    L.seed_everything(seed, workers=True, verbose=False)
    tokenizer = load_tokenizer(paths["sft"])
    policy = load_policy(paths["sft"], cfg["model"])
    gen = cfg["generation"]
    prompts = data_mod.load_split(paths["data"], "test")["prompt"]
    if run["objective"] == "dpo":
        total = hyper["max_steps"]
    else:
        total = hyper["iterations"]
    recorder = RunRecorder(workdir, tokenizer, prompts, total, hyper["checkpoint_every"], hyper["eval_every"], gen["max_new_tokens"], gen["max_prompt_tokens"], gen["eval_batch_size"])
    if run["objective"] == "dpo":
        module, loader, max_steps = _dpo_setup(cfg, hyper, run, policy, tokenizer, recorder, paths, seed)
    else:
        module, loader, max_steps = _ppo_setup(cfg, hyper, run, policy, tokenizer, recorder, paths, seed)
    trainer = make_trainer(workdir, cfg["trainer"], max_steps)
    fit_resumable(trainer, module, loader, workdir)
    recorder.finish(policy.to(inference_device(cfg)), Path(paths["generations"]), Path(paths["checkpoints"]))
    module.records.write(Path(paths["records"]))
    copy_metrics(workdir, Path(paths["metrics"]))


def _dpo_setup(cfg, hyper, run, policy, tokenizer, recorder, paths, seed):
    ref = torch.load(paths["ref_logps"])
    dataset = data_mod.load_split(paths["data"], "prefs_train")
    if len(ref["chosen"]) != len(dataset):
        raise ValueError(f"{paths['ref_logps']}: {len(ref['chosen'])} reference log-probs for {len(dataset)} pairs; rerun the reference_logps rule")
    dataset = dataset.add_column("index", list(range(len(dataset))))
    dataset = dataset.add_column("ref_chosen", ref["chosen"].tolist()).add_column("ref_rejected", ref["rejected"].tolist())
    gen = cfg["generation"]
    loader = _loader(dataset, hyper["batch_size"], pair_collator(tokenizer, gen["max_prompt_tokens"], gen["max_response_tokens"]), seed)
    return DPOModule(policy, hyper, run["weights"], recorder), loader, hyper["max_steps"]


def _ppo_setup(cfg, hyper, run, policy, tokenizer, recorder, paths, seed):
    gen = cfg["generation"]
    prompts = data_mod.load_split(paths["data"], "prefs_train")["prompt"]

    def collate(rows: list[str]) -> list[list[int]]:
        return [encode_prompt(tokenizer, p, gen["max_prompt_tokens"]) for p in rows]

    loader = _loader(prompts, hyper["rollout_batch_size"], collate, seed)
    module = PPOModule(
        policy=policy,
        value_model=load_scalar_model(paths["reward"], cfg["model"]),
        reference=load_policy(paths["sft"], cfg["model"]),
        reward_model=load_scalar_model(paths["reward"], cfg["model"]),
        tokenizer=tokenizer,
        cfg={**hyper, "max_new_tokens": gen["max_new_tokens"]},
        weight_specs=run["weights"],
        recorder=recorder,
    )
    steps_per_iteration = hyper["ppo_epochs"] * math.ceil(hyper["rollout_batch_size"] / hyper["mini_batch_size"])
    return module, loader, hyper["iterations"] * steps_per_iteration
