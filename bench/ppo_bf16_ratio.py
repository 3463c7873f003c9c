#!/usr/bin/env python
"""G of a PPO run trained under bf16 autocast, with the analysis's pi_old taken two ways:

* ``recorded``: the rollout's old log-probs as stored with the checkpoint (computed under
  the trainer's bf16 autocast), against the analysis model's float32 log-probs, so that
  rho = exp(logp_fp32 - logp_bf16) != 1 and the clip can bind;
* ``recompute`` (podyn's default, ``dynamics.ppo_old_logps``): pi_old recomputed by the
  checkpoint's weights in the analysis dtype, so that rho = 1 exactly.

The pipeline's own stages run in-process on a small config (data, base model, SFT, reward
model, PPO with ``trainer.precision``, D', the G analysis). On the CPU, ``bf16-mixed`` is
Lightning's CPU autocast; on a GPU (``--accelerator gpu``) it is the GPU's. Prints, per analysis
step, max |log rho| of the recorded pi_old, the clip fraction and G per component under both
choices. Run ``python bench/ppo_bf16_ratio.py --help``.
"""

from __future__ import annotations

import os

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")  # training and model-loading progress bars

import argparse
import copy
import logging
import sys
import tempfile
import warnings
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from podyn.analysis import final_responses, run_dynamics  # noqa: E402
from podyn.config import Config, validate_config  # noqa: E402
from podyn.dynamics import PPOBatch  # noqa: E402
from podyn.models import load_policy  # noqa: E402
from podyn.objectives import COMPONENTS  # noqa: E402
from podyn.stages.base_model import base_model  # noqa: E402
from podyn.stages.prepare_data import prepare_data  # noqa: E402
from podyn.stages.reference_logps import reference_logps  # noqa: E402
from podyn.stages.reward_model import reward_model  # noqa: E402
from podyn.stages.sft import sft  # noqa: E402
from podyn.stages.train import train_run  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/ppo_bf16_ratio.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=ROOT / "tests" / "configs" / "tiny.yaml",
        help="default: the test suite's tiny config",
    )
    parser.add_argument("--iterations", type=int, default=6, help="PPO iterations (default: %(default)s)")
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=2,
        help="analysis checkpoints every K iterations (default: %(default)s)",
    )
    parser.add_argument(
        "--precision", default="bf16-mixed", help="trainer.precision of the PPO run (default: %(default)s)"
    )
    parser.add_argument("--accelerator", default="cpu", help="trainer.accelerator (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    parser.add_argument(
        "--keep", type=Path, default=None, help="work in this folder and keep it (default: a temporary one)"
    )
    return parser.parse_args(argv)


def quiet() -> None:
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    quiet()
    raw = yaml.safe_load(args.config.read_text())
    raw.setdefault("ppo", {}).update(
        iterations=args.iterations, checkpoint_every=args.checkpoint_every, eval_every=args.iterations
    )
    raw.setdefault("trainer", {}).update(accelerator=args.accelerator, progress_refresh=10**6)

    def config(**sections) -> Config:
        """The config with some sections' keys replaced, validated."""
        edited = copy.deepcopy(raw)
        for name, keys in sections.items():
            edited.setdefault(name, {}).update(keys)
        return validate_config(edited, str(args.config))

    cfg = config()
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        p = {k: root / k for k in ("data", "base", "sft", "reward")}
        prepare_data(cfg, out=p["data"])
        base_model(cfg, out=p["base"])
        sft(cfg, data=p["data"], base=p["base"], out=p["sft"], workdir=root / "work_sft")
        rm_metrics, rm_work = root / "rm_metrics.json", root / "work_rm"
        reward_model(cfg, data=p["data"], sft=p["sft"], out=p["reward"], metrics=rm_metrics, workdir=rm_work)
        ref_logps = root / "ref_logps.pt"
        reference_logps(cfg, data=p["data"], sft=p["sft"], out=ref_logps)
        run = root / "ppo"
        manifest = run / "checkpoints.json"
        train_run(
            config(trainer={"precision": args.precision}),
            run="ppo",
            seed=args.seed,
            data=p["data"],
            sft=p["sft"],
            reward=p["reward"],
            ref_logps=ref_logps,
            workdir=run / "work",
            generations=run / "generations.jsonl",
            checkpoints=manifest,
            records=run / "records.csv",
            metrics=run / "metrics.csv",
        )
        final = run / "final_responses.jsonl"
        final_responses(cfg, data=p["data"], checkpoints=manifest, seed=args.seed, out=final)
        tables = {}
        for choice in ("recorded", "recompute"):
            tables[choice] = run_dynamics(
                config(dynamics={"ppo_old_logps": choice}),
                run="ppo",
                seed=args.seed,
                data=p["data"],
                ref_logps=ref_logps,
                checkpoints=manifest,
                final_responses=final,
                out=run / f"G_{choice}.csv",
                samples_out=run / f"samples_{choice}.csv",
            )
        log_ratio = {}
        for step_dir in sorted((run / "work" / "analysis").iterdir(), key=lambda d: int(d.name.split("_")[1])):
            batch = PPOBatch.from_record(torch.load(step_dir / "batch.pt", weights_only=False))
            model = load_policy(
                step_dir, cfg.model.model_copy(update={"dtype": cfg.dynamics.dtype, "attn_implementation": "sdpa"})
            )
            with torch.no_grad():
                diff = (batch.logps(model) - batch.old_logps.to(torch.float32))[batch.response_mask.bool()]
            log_ratio[int(step_dir.name.split("_")[1])] = float(diff.abs().max())

    print(
        f"PPO {args.iterations} iterations, trainer.precision {args.precision} on {args.accelerator}; analysis dtype "
        f"{cfg.dynamics.dtype}, method {cfg.dynamics.method}, clip_eps {cfg.ppo.clip_eps}, "
        f"temperature {cfg.ppo.temperature}, torch {torch.__version__}"
    )
    head = (
        "| step | pi_old    | max abs log rho | clipfrac | "
        + " | ".join(f"G {c.upper():<9}" for c in COMPONENTS)
        + " |"
    )
    print(head)
    print("|" + "|".join("-" * len(cell) for cell in head[1:-1].split("|")) + "|")
    for step in sorted(log_ratio):
        for choice in ("recorded", "recompute"):
            frame = tables[choice]
            rows = frame[(frame["step"] == step) & (frame["layer"] == "all")].set_index("component")
            ratio = log_ratio[step] if choice == "recorded" else 0.0
            cells = " | ".join(f"{rows.loc[c, 'G']:+.4e}  " for c in COMPONENTS)
            print(f"| {step:4d} | {choice:<9} | {ratio:15.3e} | {rows['clipfrac'].iloc[0]:8.4f} | {cells} |")


if __name__ == "__main__":
    main()
