"""Stage ``train``: one preference-optimization run (an entry of ``runs``, DPO or PPO family)
and seed; writes the judged steps' generations, the analysis-checkpoint manifest, per-step
records and Lightning's metrics."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch
from datasets import Dataset

from .. import data as data_mod
from ..batching import encode_prompt, pair_collator
from ..config import Config, ConfigError, ResolvedRun, resolve_run
from ..io import DataError
from ..models import inference_device, load_policy, load_scalar_model, load_tokenizer
from ..training.checkpoints import RunRecorder
from ..training.common import fit_resumable, layer_classes, make_trainer, metric_rows, prepare_workdir, trained_model
from ..training.loader import resumable_loader
from ..training.dpo import DPOModule
from ..training.ppo import PPOModule


def train_run(
    cfg: Config,
    *,
    run: str,
    seed: int,
    data: Path,
    sft: Path,
    reward: Path,
    ref_logps: Path,
    workdir: Path,
    generations: Path,
    checkpoints: Path,
    records: Path,
    metrics: Path,
) -> None:
    resolved = resolve_run(cfg, run)
    hyper = resolved.hyper
    workdir = Path(workdir)
    settings = {
        "run": {
            "name": run,
            "objective": resolved.objective,
            "hyper": hyper.model_dump(mode="json"),
            "weights": resolved.weights.model_dump(mode="json", by_alias=True),
        },
        "seed": seed,
        **{k: getattr(cfg, k).model_dump(mode="json") for k in ("model", "trainer", "generation")},
    }
    prepare_workdir(workdir, settings, [data, sft, reward, ref_logps])
    L.seed_everything(seed, workers=True, verbose=False)
    tokenizer = load_tokenizer(sft)
    policy = load_policy(sft, cfg.model)
    gen = cfg.generation
    prompts = data_mod.load_split(data, "test")["prompt"]
    total = hyper.max_steps if resolved.objective == "dpo" else hyper.iterations
    recorder = RunRecorder(
        workdir,
        tokenizer,
        prompts,
        total,
        hyper.checkpoint_every,
        hyper.eval_every,
        gen.max_new_tokens,
        gen.max_prompt_tokens,
        gen.eval_batch_size,
        fresh_model=lambda: load_policy(sft, cfg.model),
    )
    if resolved.objective == "dpo":
        module, loader, max_steps = _dpo_setup(cfg, resolved, policy, tokenizer, recorder, data, ref_logps, seed)
    else:
        module, loader, max_steps = _ppo_setup(cfg, resolved, policy, tokenizer, recorder, data, sft, reward, seed)
    if resolved.objective == "ppo" and cfg.trainer.strategy == "fsdp":
        raise ConfigError(
            "trainer.strategy: PPO runs support 'auto' and 'ddp'; 'fsdp' is for SFT, reward model and DPO"
        )
    trainer = make_trainer(workdir, cfg.trainer, max_steps, wrap_layers=layer_classes(policy))
    fit_resumable(trainer, module, loader, workdir)
    if not trainer.is_global_zero:
        return
    policy = trained_model(trainer, policy, "policy.", lambda: load_policy(sft, cfg.model))
    recorder.finish(policy.to(inference_device(cfg.trainer)), Path(generations), Path(checkpoints))
    module.records.write(Path(records))
    metric_rows(trainer).write(Path(metrics))


def dpo_dataset(data: Path, ref_logps: Path) -> Dataset:
    """The training pairs with their index and reference log-probs."""
    ref = torch.load(ref_logps)
    dataset = data_mod.load_split(data, "prefs_train")
    if len(ref["chosen"]) != len(dataset):
        raise DataError(
            f"{ref_logps}: {len(ref['chosen'])} reference log-probs for {len(dataset)} pairs; "
            "rerun the reference_logps rule"
        )
    dataset = dataset.add_column("index", list(range(len(dataset))))
    return dataset.add_column("ref_chosen", ref["chosen"].tolist()).add_column(
        "ref_rejected", ref["rejected"].tolist()
    )


def _dpo_setup(
    cfg: Config, run: ResolvedRun, policy, tokenizer, recorder: RunRecorder, data: Path, ref_logps: Path, seed: int
):
    gen = cfg.generation
    collate = pair_collator(tokenizer, gen.max_prompt_tokens, gen.max_response_tokens)
    hyper = run.hyper
    loader = resumable_loader(
        dpo_dataset(data, ref_logps), hyper.batch_size, hyper.max_steps, collate, seed, f"{run.name}: dpo.batch_size"
    )
    return DPOModule(policy, run.hyper, run.weights, recorder), loader, run.hyper.max_steps


def _ppo_setup(
    cfg: Config,
    run: ResolvedRun,
    policy,
    tokenizer,
    recorder: RunRecorder,
    data: Path,
    sft: Path,
    reward: Path,
    seed: int,
):
    gen, hyper = cfg.generation, run.hyper
    prompts = data_mod.load_split(data, "prefs_train")["prompt"]

    def collate(rows: list[str]) -> list[list[int]]:
        return [encode_prompt(tokenizer, p, gen.max_prompt_tokens) for p in rows]

    loader = resumable_loader(
        prompts, hyper.rollout_batch_size, hyper.iterations, collate, seed, f"{run.name}: ppo.rollout_batch_size"
    )
    module = PPOModule(
        policy=policy,
        value_model=load_scalar_model(reward, cfg.model),
        reference=load_policy(sft, cfg.model),
        reward_model=load_scalar_model(reward, cfg.model),
        tokenizer=tokenizer,
        hyper=hyper,
        max_new_tokens=gen.max_new_tokens,
        weights=run.weights,
        recorder=recorder,
    )
    steps_per_iteration = hyper.ppo_epochs * math.ceil(hyper.rollout_batch_size / hyper.mini_batch_size)
    return module, loader, hyper.iterations * steps_per_iteration
