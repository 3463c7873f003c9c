#!/usr/bin/env python
"""CPU seconds of the default DAG's jobs for two source trees, side by side, and whether their
outputs are byte-identical: a measurement that a shared, loaded machine does not spoil the way
it spoils wall times.

Given the results of a finished default run (``--results``, e.g. ``bench/pipeline.py``'s
``<out>/results/default``), it runs by hand, for the source tree ``--before`` (a checkout of
the older commit) and for this one, alternately:

* ``podyn train`` of each ``--runs`` entry, exactly as the DAG's ``train`` rule runs it
  (``--threads 1``), into a scratch directory; CPU seconds (user + sys) of the whole process,
  start-up and imports included; the run's records, generations, metrics, analysis
  checkpoints and final model are compared byte for byte between the two trees;
* optionally (``--supervised sft reward-model``) those stages, by hand with ``--threads 1``
  (the DAG gives them every core: thread counts change float reductions, so these outputs are
  compared between the two trees, not with the DAG's) and optionally fewer steps; the saved
  model and the reward model's accuracy table are compared byte for byte;
* the collators of the SFT, reward-model and DPO stages over the batches those stages draw
  (``sft.max_steps`` and ``reward_model.max_steps`` batches, ``dpo.max_steps`` for DPO): CPU
  seconds and whether every batch is equal (the rest of those stages did not change).

The before tree is imported through ``PYTHONPATH`` (it must be a source tree with
``src/podyn``); the same interpreter and libraries run both. Prints a table; the last line
is ``outputs identical: yes|no``."""

from __future__ import annotations

import argparse
import filecmp
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from podyn import registry  # noqa: E402
from podyn.config import load_config  # noqa: E402

TRAIN_OUTPUTS = ("records.csv", "generations.jsonl", "metrics.csv")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/stage_cpu.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=Path, required=True, help="a finished default run's results/<experiment>")
    parser.add_argument("--before", type=Path, required=True, help="source tree of the commit to compare with")
    parser.add_argument("--config", type=Path, default=ROOT / "config.yaml")
    parser.add_argument("--runs", nargs="*", default=["dpo", "ppo"], help="training jobs to run (default: dpo ppo)")
    parser.add_argument(
        "--supervised",
        nargs="*",
        default=[],
        choices=["sft", "reward-model"],
        help="also run these stages by hand (--threads 1; default: none)",
    )
    parser.add_argument(
        "--supervised-steps",
        type=int,
        default=None,
        help="max_steps of those stages (default: the config's; fewer for a shorter measurement)",
    )
    parser.add_argument("--no-collators", action="store_true", help="skip the collator measurement")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "stage_cpu", help="scratch directory")
    return parser.parse_args(argv)


def environment(src: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(src / "src"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false"
    )
    env.pop("PODYN_STATS_DIR", None)
    return env


def child_cpu(cmd: list[str], env: dict[str, str], log: Path) -> float:
    """Run ``cmd``; return its CPU seconds (user + sys of the process and its children)."""
    with open(log, "w") as handle:
        proc = subprocess.Popen(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd[:4])} ... failed (exit {proc.returncode}); see {log}")
    return usage.ru_utime + usage.ru_stime


def train_command(cfg, run: str, results: Path, out: Path) -> list[str]:
    paths = {
        "--data": results / "data",
        "--sft": results / "models" / "sft",
        "--reward": results / "models" / "reward",
        "--ref-logps": results / "cache" / "ref_logps.pt",
        "--workdir": out / "work",
        "--generations": out / "generations.jsonl",
        "--checkpoints": out / "checkpoints.json",
        "--records": out / "records.csv",
        "--metrics": out / "metrics.csv",
        "--timing": out / "timing.csv",
    }
    flags = [str(part) for flag, path in paths.items() for part in (flag, path)]
    config = registry.stage_config(cfg, "train", run)
    return [sys.executable, "-m", "podyn.cli", "train", "--config", config, "--threads", "1", "--run", run,
            "--seed", "0", *flags]  # fmt: skip


def supervised_command(cfg, stage: str, results: Path, out: Path, steps: int | None) -> list[str]:
    """``podyn sft`` on the default's base model, or ``podyn reward-model`` on its SFT model,
    with ``steps`` training steps if given."""
    if steps is not None:
        key = "sft" if stage == "sft" else "reward_model"
        cfg = cfg.model_copy(update={key: getattr(cfg, key).model_copy(update={"max_steps": steps})})
    paths = {"--data": results / "data", "--out": out / "model", "--workdir": out / "work"}
    if stage == "sft":
        paths["--base"] = results / "models" / "base"
    else:
        paths.update({"--sft": results / "models" / "sft", "--metrics": out / "metrics.csv"})
    flags = [str(part) for flag, path in paths.items() for part in (flag, path)]
    config = registry.stage_config(cfg, stage)
    return [sys.executable, "-m", "podyn.cli", stage, "--config", config, "--threads", "1", *flags]


def same_supervised(a: Path, b: Path) -> bool:
    """The saved model directory (and the reward model's accuracy table) byte for byte."""
    metrics = [name for name in ("metrics.csv",) if (a / name).exists() or (b / name).exists()]
    return same_tree(a / "model", b / "model") and all(filecmp.cmp(a / m, b / m, shallow=False) for m in metrics)


def same_tree(a: Path, b: Path) -> bool:
    """Every file under ``a`` and ``b`` (the same relative paths) byte-identical."""
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return files_a == files_b and all(filecmp.cmp(a / f, b / f, shallow=False) for f in files_a)


def same_run(a: Path, b: Path) -> bool:
    """A training job's declared outputs (timing.csv is wall-clock; checkpoints.json names the
    work directory) and the weights it saved for the analysis and as the final policy."""
    if not all(filecmp.cmp(a / name, b / name, shallow=False) for name in TRAIN_OUTPUTS):
        return False
    return same_tree(a / "work" / "analysis", b / "work" / "analysis") and same_tree(
        a / "work" / "final", b / "work" / "final"
    )


def load_batching(src: Path):
    spec = importlib.util.spec_from_file_location(f"batching_{abs(hash(src))}", src / "src" / "podyn" / "batching.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def collator_rows(cfg, results: Path):
    """(stage, make_collator(batching module), batches of rows) for the SFT, reward-model and DPO loaders."""
    import torch

    from podyn import data as data_mod
    from podyn.models import load_tokenizer
    from podyn.training.loader import GlobalBatchSampler

    tokenizer = load_tokenizer(results / "models" / "sft")
    gen = cfg.generation
    out = []
    for stage, split, section, kind in (
        ("sft", "sft", cfg.sft, "sft_collator"),
        ("reward-model", "prefs_train", cfg.reward_model, "pair_collator"),
        ("train (DPO)", "prefs_train", cfg.dpo, "pair_collator"),
    ):
        rows = data_mod.load_split(results / "data", split).to_list()
        sampler = GlobalBatchSampler(len(rows), section.batch_size, section.max_steps, cfg.seed)
        batches = [[rows[i] for i in indices] for indices in sampler]

        def make(module, kind=kind):
            return getattr(module, kind)(tokenizer, gen.max_prompt_tokens, gen.max_response_tokens)

        out.append((stage, make, batches))
    del torch
    return out


def time_collator(make, module, batches) -> tuple[float, list]:
    collate = make(module)
    start = time.process_time()
    result = [collate(batch) for batch in batches]
    return time.process_time() - start, result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config)
    results, before = args.results.resolve(), args.before.resolve()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    rows: list[tuple[str, float, float, bool]] = []
    for run in args.runs:
        cpu, dirs = {}, {}
        for label, src in (("before", before), ("after", ROOT)):
            dirs[label] = args.out / f"{run}_{label}"
            dirs[label].mkdir()
            cmd = train_command(cfg, run, results, dirs[label])
            cpu[label] = child_cpu(cmd, environment(src), args.out / f"{run}_{label}.log")
            print(f"train {run} ({label}): {cpu[label]:.1f} CPU s", flush=True)
        rows.append((f"train {run} (whole job)", cpu["before"], cpu["after"], same_run(dirs["before"], dirs["after"])))
    for stage in args.supervised:
        cpu, dirs = {}, {}
        for label, src in (("before", before), ("after", ROOT)):
            dirs[label] = args.out / f"{stage}_{label}"
            dirs[label].mkdir()
            cmd = supervised_command(cfg, stage, results, dirs[label], args.supervised_steps)
            cpu[label] = child_cpu(cmd, environment(src), args.out / f"{stage}_{label}.log")
            print(f"{stage} ({label}): {cpu[label]:.1f} CPU s", flush=True)
        steps = f", {args.supervised_steps} steps" if args.supervised_steps else ""
        same = same_supervised(dirs["before"], dirs["after"])
        rows.append((f"{stage} (whole job{steps})", cpu["before"], cpu["after"], same))
    if not args.no_collators:
        import torch

        old, new = load_batching(before), load_batching(ROOT)
        for stage, make, batches in collator_rows(cfg, results):
            t_old, out_old = time_collator(make, old, batches)
            t_new, out_new = time_collator(make, new, batches)
            equal = all(
                a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a) for a, b in zip(out_old, out_new)
            )
            rows.append((f"{stage}: collate {len(batches)} batches", t_old, t_new, equal))
    print(f"\nload average {os.getloadavg()[0]:.1f} (CPU seconds: user + sys)\n")
    print("| job | before CPU s | after CPU s | after / before | outputs identical |")
    print("|---|---:|---:|---:|---|")
    for name, b, a, same in rows:
        print(f"| {name} | {b:.2f} | {a:.2f} | {a / b:.2f} | {'yes' if same else 'NO'} |")
    identical = all(r[3] for r in rows)
    print(f"\noutputs identical: {'yes' if identical else 'no'}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
