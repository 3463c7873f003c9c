"""The paper config's DAG on one GPU, without the hub, at Pythia-410M size or larger.

    python bench/paper_gpu.py HH_RLHF_FILE [--size 410m] [--out bench/out/paper_gpu]

It builds the offline dataset fixtures (scripts/build_fixtures.py: UltraFeedback-binarized
and HH-RLHF helpful-base laid out like the hub repos, from a real HH-RLHF file), then runs
``snakemake --workflow-profile workflow/profiles/gpu`` on ``config.yaml`` +
``config/paper.yaml`` + an override that (1) points the data roles at the fixtures,
(2) replaces EleutherAI/pythia-2.8b by a checkpoint built by the local_checkpoint rule with
Pythia-``size``'s architecture (random weights, a BPE tokenizer trained on the fixture text,
Pythia's 50304-row embedding), (3) judges with a reward model trained on the fixture's
test_sft pairs instead of GPT-4 (no network), and (4) cuts every step count so the whole DAG
(DPO and PPO with dynamics, two ablation runs) takes minutes. Everything else is the paper
config's: bf16-mixed, 512-token prompts, 256 new tokens, SDPA attention.

Prints the per-stage table (wall time, tokens/s, peak GPU memory) and writes it, with the
Snakemake log, under --out; copy them to bench/reference/ when they are worth keeping.
Needs the project's environment (scripts/setup.sh) with a CUDA torch; nothing is downloaded.
Not yet run on a GPU (``bash bench/device_session.sh paper`` runs it on a GPU box without network).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def override(hub: Path, size: str) -> dict:
    uf, hh = str(hub / "ultrafeedback_binarized"), str(hub / "hh-rlhf")
    return {
        "experiment": f"paper-gpu-{size}",
        "seeds": [0],
        "data": {
            "roles": {
                "sft": {"path": uf, "split": "train_sft", "format": "ultrafeedback_binarized"},
                "prefs_train": {"path": uf, "split": "train_prefs", "format": "ultrafeedback_binarized"},
                "prefs_heldout": {"path": uf, "split": "test_prefs", "format": "ultrafeedback_binarized", "n": 64},
                "judge_prefs": {"path": uf, "split": "test_sft", "format": "ultrafeedback_binarized"},
                "test": {"path": hh, "data_dir": "helpful-base", "split": "test", "format": "hh_rlhf", "n": 64},
            }
        },
        "model": {
            "name_or_path": f"results/paper-gpu-{size}/checkpoint",
            "build_checkpoint": {"size": size, "bpe_vocab_size": 8192},
        },
        "sft": {"max_steps": 20, "batch_size": 16, "warmup_steps": 2},
        "reward_model": {"max_steps": 20, "batch_size": 16, "warmup_steps": 2},
        "dpo": {"max_steps": 20, "checkpoint_every": 10, "eval_every": 10, "step_scale": 0.002},
        "ppo": {
            "iterations": 4,
            "rollout_batch_size": 16,
            "mini_batch_size": 8,
            "ppo_epochs": 1,
            "checkpoint_every": 2,
            "eval_every": 2,
        },
        "select": ["dpo", "dpo_wo_neg_early", "ppo", "ppo_wo_top"],
        "dynamics": {"n_prompts": 16},
        "judge": {"type": "reward_model"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("hh_file", type=Path, help="an HH-RLHF jsonl(.gz) file; the fixtures are built from it")
    parser.add_argument("--size", default="410m", help="Pythia size of the built checkpoint (default: %(default)s)")
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench" / "out" / "paper_gpu", help="fixtures, results and logs"
    )
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO / "scripts"))
    from build_fixtures import build_fixtures

    build_fixtures(args.hh_file, out / "hub", n_rows=800)
    config = out / "override.yaml"
    config.write_text(yaml.safe_dump(override(out / "hub", args.size)))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PODYN_STATS_DIR": str(out / "stats")}
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(out),
        "--workflow-profile",
        str(REPO / "workflow" / "profiles" / "gpu"),
        "--configfile",
        str(REPO / "config.yaml"),
        str(REPO / "config" / "paper.yaml"),
        str(config),
    ]
    start = time.perf_counter()
    with open(out / "snakemake.log", "w") as log:
        code = subprocess.call(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=out)
    wall = time.perf_counter() - start
    rows = [json.loads(p.read_text()) for p in sorted((out / "stats").glob("*.json"))]
    lines = [
        f"# paper DAG, Pythia-{args.size} architecture, exit code {code}, {wall:.1f} s end to end",
        "",
        "| stage | wall s | tokens/s | peak GPU MB |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r['stage']} | {r['wall_s']:.1f} | {r['tokens_per_s']:,.0f} | {r.get('peak_gpu_mb', 0):,.0f} |"
        for r in rows
    ]
    (out / "paper_gpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    sys.exit(code)


if __name__ == "__main__":
    main()
