"""Stage ``train``: one preference-optimization run (an entry of ``runs``, DPO or PPO family)
and seed; writes the judged steps' generations, the analysis-checkpoint manifest, per-step
records and Lightning's metrics."""

from __future__ import annotations

import math
import time
from pathlib import Path

import lightning as L
import pandas as pd
import torch
from datasets import Dataset

from .. import data as data_mod
from ..batching import TokenIds, pair_collator
from ..config import Config, ConfigError, ResolvedRun, resolve_run
from ..controller import WeightSource, proxy_targets, weight_source
from ..io import DataError, read_torch, write_csv
from ..models import inference_device, load_policy, load_scalar_model, load_tokenizer, logps_options
from ..training.checkpoints import RunRecorder
from ..training.common import fit_resumable, layer_classes, make_trainer, metric_rows, prepare_workdir, trained_model
from ..training.dpo import DPOModule
from ..training.loader import resumable_loader
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
    timing: Path,
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
            # a controller changes the training; a run without one keeps the settings it always had
            **({"controller": resolved.controller.model_dump(mode="json")} if resolved.controller else {}),
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
    clip = resolved.hyper.max_grad_norm if resolved.objective == "dpo" else None  # PPO clips per minibatch
    trainer = make_trainer(workdir, cfg.trainer, max_steps, wrap_layers=layer_classes(policy), max_grad_norm=clip)
    start = time.perf_counter()
    fit_resumable(trainer, module, loader, workdir)
    fit_seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return
    policy = trained_model(trainer, policy, "policy.", lambda: load_policy(sft, cfg.model))
    recorder.finish(policy.to(inference_device(cfg.trainer)), Path(generations), Path(checkpoints))
    module.records.write(Path(records))
    metric_rows(trainer).write(Path(metrics))
    write_timing(Path(timing), fit_seconds, module.weight_source)


def write_timing(path: Path, fit_seconds: float, source: WeightSource) -> None:
    """This attempt's training time and the controller's share of it (Coordinated PO's cost), in
    their own file: wall-clock times differ between identical runs, the other outputs do not."""
    rows = [("fit_seconds", fit_seconds)]
    if source.measures:
        rows += [("controller_seconds", source.attempt_seconds), ("measurements", source.attempt_measurements)]
    write_csv(path, pd.DataFrame(rows, columns=["kind", "value"]))


def dpo_dataset(data: Path, ref_logps: Path) -> Dataset:
    """The training pairs with their index and reference log-probs."""
    ref = read_torch(ref_logps)
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
    source = _weight_source(cfg, run, tokenizer, data)
    module = DPOModule(policy, run.hyper, source, recorder, logps_options(cfg.trainer))
    return module, loader, run.hyper.max_steps


def _weight_source(cfg: Config, run: ResolvedRun, tokenizer, data: Path) -> WeightSource:
    """The run's schedule, or its Coordinated-PO controller with D'_t from held-out training pairs."""
    gen = cfg.generation

    def targets(controller):
        heldout = data_mod.load_split(data, "prefs_heldout")
        return proxy_targets(
            controller, tokenizer, heldout, gen.max_new_tokens, gen.max_prompt_tokens, gen.max_response_tokens
        )

    return weight_source(run, targets)


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

    token_ids = TokenIds(tokenizer)

    def collate(rows: list[str]) -> list[list[int]]:
        return token_ids.prompts(rows, gen.max_prompt_tokens)

    loader = resumable_loader(
        prompts, hyper.rollout_batch_size, hyper.iterations, collate, seed, f"{run.name}: ppo.rollout_batch_size"
    )
    shuffled = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(seed))
    norm_rows = shuffled[: hyper.reward_norm_prompts]  # the prompts whose SFT rollouts fit the reward normalisation
    module = PPOModule(
        policy=policy,
        value_model=load_scalar_model(reward, cfg.model),
        reference=load_policy(sft, cfg.model),
        reward_model=load_scalar_model(reward, cfg.model),
        tokenizer=tokenizer,
        hyper=hyper,
        max_new_tokens=gen.max_new_tokens,
        weights=_weight_source(cfg, run, tokenizer, data),
        recorder=recorder,
        reward_norm_prompts=collate([prompts[int(i)] for i in norm_rows]) if hyper.normalize_reward else None,
        factors=run.ppo_factors,
    )
    steps_per_iteration = hyper.ppo_epochs * math.ceil(hyper.rollout_batch_size / hyper.mini_batch_size)
    return module, loader, hyper.iterations * steps_per_iteration
