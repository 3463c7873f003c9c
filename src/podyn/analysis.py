"""Stages of the dynamics analysis: the final responses D' of a run, and G at each of its
analysis checkpoints (docs/method.md §1), written as tidy tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from . import data as data_mod
from .batching import encode_prompt, pair_collator, prompt_response_batch
from .config import Config, DPOConfig, resolve_run
from .dynamics import DPOBatch, PPOBatch, gradient_alignment, gradient_alignment_direct, per_layer_alignment
from .generation import generate
from .io import DataError, read_jsonl, read_torch, write_csv, write_jsonl
from .models import inference_device, load_policy, load_tokenizer


def _manifest(path: Path) -> dict[str, Any]:
    """A run's checkpoint manifest: ``{"final": dir, "analysis": [{"step": int, "path": dir}, ...]}``."""
    try:
        manifest = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: unreadable checkpoint manifest ({err})") from None
    entries = manifest.get("analysis") if isinstance(manifest, dict) else None
    if not isinstance(entries, list) or not isinstance(manifest.get("final"), str):
        raise DataError(f"{path}: a checkpoint manifest needs 'final' (a directory) and 'analysis' (a list)")
    for n, entry in enumerate(entries):
        if not (isinstance(entry, dict) and isinstance(entry.get("step"), int) and isinstance(entry.get("path"), str)):
            raise DataError(f"{path}: analysis entry {n} needs 'step' (an integer) and 'path' (a directory)")
    for directory in [manifest["final"], *(entry["path"] for entry in entries)]:
        if not Path(directory).is_dir():
            raise DataError(f"{path}: checkpoint directory {directory} not found")
    return manifest


@torch.no_grad()
def final_responses(
    cfg: Config, *, data: Path, checkpoints: Path, seed: int, out: Path, run: str | None = None
) -> None:
    """D': the final policy's responses (greedy by default) to the first ``n_prompts`` test
    prompts, stored as token ids so that the analysis scores exactly what was generated.
    ``checkpoints`` is the run's manifest; ``seed`` seeds sampled decoding."""
    dyn, gen = cfg.dynamics, cfg.generation
    final_dir = _manifest(checkpoints)["final"]
    tokenizer = load_tokenizer(final_dir)
    model = load_policy(final_dir, cfg.model).eval().to(inference_device(cfg.trainer))
    prompts = data_mod.load_split(data, "test")["prompt"][: dyn.n_prompts]
    torch.manual_seed(seed)
    rows = []
    for start in range(0, len(prompts), gen.eval_batch_size):
        chunk = prompts[start : start + gen.eval_batch_size]
        prompt_ids = [encode_prompt(tokenizer, p, gen.max_prompt_tokens) for p in chunk]
        roll = generate(model, tokenizer, prompt_ids, gen.max_new_tokens, do_sample=dyn.decoding == "sample")
        for p, ids, response, mask in zip(
            chunk, prompt_ids, roll.sequences[:, roll.prompt_width :], roll.response_mask
        ):
            rows.append({"prompt": p, "prompt_ids": ids, "response_ids": response[mask.bool()].tolist()})
    write_jsonl(out, rows)


def _final_batches(rows: list[dict], pad_id: int, size: int) -> list[dict[str, torch.Tensor]]:
    return [
        prompt_response_batch(
            [r["prompt_ids"] for r in rows[i : i + size]], [r["response_ids"] for r in rows[i : i + size]], pad_id
        )
        for i in range(0, len(rows), size)
    ]


def _dpo_batch(
    cfg: Config, hyper: DPOConfig, record, dataset, ref, tokenizer, seed: int
) -> tuple[DPOBatch, torch.Tensor]:
    if cfg.dynamics.dpo_batch == "fixed":
        size = min(cfg.dynamics.dpo_fixed_batch_size, len(dataset))
        indices = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:size]
    else:
        indices = record["indices"]
    gen = cfg.generation
    batch = pair_collator(tokenizer, gen.max_prompt_tokens, gen.max_response_tokens)(
        [dataset[int(i)] for i in indices]
    )
    ref_chosen, ref_rejected = ref["chosen"][indices], ref["rejected"][indices]
    return DPOBatch(
        batch["input_ids"], batch["attention_mask"], batch["response_mask"], ref_chosen, ref_rejected, beta=hyper.beta
    ), indices


def _sample_rows(objective: str, step: int, alignment, batch, indices) -> pd.DataFrame:
    """Per-sample (DPO: per pair) or per-token (PPO) directional derivatives and loss weights."""
    d = alignment.derivatives
    if objective == "dpo":
        chosen, rejected = d.chunk(2)
        sens_c, sens_r = alignment.sensitivities["tot"].chunk(2)
        return pd.DataFrame(
            {
                "step": step,
                "pair_index": indices.tolist(),
                "d_chosen": chosen.tolist(),
                "d_rejected": rejected.tolist(),
                "dL_dchosen": sens_c.tolist(),
                "dL_drejected": sens_r.tolist(),
            }
        )
    mask = batch.response_mask.bool()
    rows, cols = torch.nonzero(mask, as_tuple=True)
    return pd.DataFrame(
        {
            "step": step,
            "row": rows.tolist(),
            "token": cols.tolist(),
            "d": d[mask].tolist(),
            "dL_ds": alignment.sensitivities["tot"][mask].tolist(),
            "advantage": batch.advantages[mask].tolist(),
            "group": batch.groups[mask].tolist(),
        }
    )


def run_dynamics(
    cfg: Config,
    *,
    run: str,
    seed: int,
    data: Path,
    ref_logps: Path,
    checkpoints: Path,
    final_responses: Path,
    out: Path,
    samples_out: Path,
) -> pd.DataFrame:
    """G for every component at every analysis checkpoint of one run (``checkpoints`` is its
    manifest, ``final_responses`` D'); per-sample pieces go to ``samples_out``."""
    run_name, resolved = run, resolve_run(cfg, run)
    dyn = cfg.dynamics
    manifest = _manifest(checkpoints)
    tokenizer = load_tokenizer(manifest["final"])
    device = inference_device(cfg.trainer)
    batches = _final_batches(read_jsonl(final_responses), tokenizer.pad_token_id, cfg.generation.eval_batch_size)
    final_batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
    # sdpa (run with its math kernel, which has forward-mode rules): eager attention gives NaN
    # on fully masked left-padding rows in float64
    model_cfg = cfg.model.model_copy(update={"dtype": dyn.dtype, "attn_implementation": "sdpa"})
    if resolved.objective == "dpo":  # read once, not at every checkpoint
        dataset, ref = data_mod.load_split(data, "prefs_train"), read_torch(ref_logps)
    records, samples = [], []
    for entry in manifest["analysis"]:
        step, path = entry["step"], Path(entry["path"])
        model = load_policy(path, model_cfg).to(device)
        record = read_torch(path / "batch.pt", weights_only=False)
        if resolved.objective == "dpo":
            batch, indices = _dpo_batch(cfg, resolved.hyper, record, dataset, ref, tokenizer, seed)
        else:
            batch, indices = PPOBatch.from_record(record), None
        moved = {
            k: v.to(device, model.dtype if v.is_floating_point() else v.dtype)
            for k, v in vars(batch).items()
            if torch.is_tensor(v)
        }
        batch = type(batch)(**{**vars(batch), **moved})
        clipfrac, logps = float("nan"), None
        if resolved.objective == "ppo":
            if dyn.ppo_old_logps == "recompute":  # rho = 1 exactly: no forward pass for pi_old or G's s
                batch, logps = batch.at_current_weights(torch.promote_types(model.dtype, torch.float32))
            else:
                with torch.no_grad():  # one forward pass at the checkpoint's weights: the clip fraction, G's s
                    logps = batch.logps(model)
            clipfrac = batch.clip_fraction(logps)
        if dyn.method == "direct":
            G, gbar_norm = gradient_alignment_direct(model, batch, final_batches), float("nan")
        else:
            alignment = gradient_alignment(
                model, batch, final_batches, dyn.method, dyn.fd_eps, dyn.chunk_rows, logps=logps
            )
            G, gbar_norm = alignment.G, alignment.gbar_norm
            samples.append(_sample_rows(resolved.objective, step, alignment, batch, indices))
        row = {"run": run_name, "seed": seed, "step": step, "gbar_norm": gbar_norm, "clipfrac": clipfrac}
        records += [{**row, "component": c, "layer": "all", "G": g} for c, g in G.items()]
        if dyn.per_layer:
            method = "jvp" if dyn.method == "direct" else dyn.method
            for layer, per in per_layer_alignment(
                model, batch, final_batches, method, dyn.fd_eps, dyn.chunk_rows, logps=logps
            ).items():
                records += [{**row, "component": c, "layer": layer, "G": g} for c, g in per.items()]
        clipped = "" if clipfrac != clipfrac else f", clipfrac={clipfrac:.4f}"
        values = ", ".join(f"{c}={g:+.3e}" for c, g in G.items())
        print(f"[podyn] {run_name} seed {seed} step {step}: {values}{clipped}", flush=True)
    frame = pd.DataFrame(records)
    write_csv(out, frame)
    write_csv(samples_out, pd.concat(samples, ignore_index=True) if samples else pd.DataFrame())
    return frame
