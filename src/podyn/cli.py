"""``podyn``: the command-line entry points that the Snakemake rules call.

Every stage takes ``--config``: a config file (validated against the schema, defaults
filled) or the JSON excerpt that a rule passes. Run ``podyn <stage> --help`` for a stage's
arguments."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    # PPO checkpoints the post-update state on purpose: a resumed run continues after it
    warnings.filterwarnings("ignore", "Using ModelCheckpoint with manual optimization")


STAGES: dict[str, tuple[str, list[tuple[str, dict]]]] = {
    "prepare-data": ("Generate (synthetic) or load (paper) every data split as JSON lines.", [("--out", {"required": True, "help": "output directory"})]),
    "build-checkpoint": (
        "A random Pythia-architecture model and a locally trained BPE tokenizer, saved as an HF model directory.",
        [
            ("--text", {"nargs": "*", "default": [], "help": "prepared JSON-lines splits whose text trains the tokenizer"}),
            ("--size", {"default": None, "help": "Pythia size (70m ... 12b); default model.build_checkpoint.size"}),
            ("--tokenizer", {"default": None, "help": "use this tokenizer instead of training one"}),
            ("--out", {"required": True}),
        ],
    ),
    "base-model": ("Build (scratch) or fetch (pretrained) the initial model and tokenizer.", [("--out", {"required": True})]),
    "sft": ("Supervised fine-tuning on the demonstrations.", [("--data", {"required": True}), ("--base", {"required": True}), ("--out", {"required": True}), ("--workdir", {"required": True})]),
    "reward-model": ("Bradley-Terry reward model, initialised from the SFT model.", [("--data", {"required": True}), ("--sft", {"required": True}), ("--out", {"required": True}), ("--metrics", {"required": True}), ("--workdir", {"required": True}), ("--split", {"default": "prefs_train", "help": "pairs to train on (judge_prefs: the reward-model judge)"})]),
    "reference-logps": ("Reference log-probs of every training pair, for all DPO runs.", [("--data", {"required": True}), ("--sft", {"required": True}), ("--out", {"required": True})]),
    "generate": ("Greedy responses of a saved policy to the test prompts.", [("--data", {"required": True}), ("--model", {"required": True}), ("--out", {"required": True})]),
    "train": (
        "Train one preference-optimization run (a DPO- or PPO-family entry of `runs`).",
        [
            ("--run", {"required": True}), ("--seed", {"type": int, "required": True}),
            ("--data", {"required": True}), ("--sft", {"required": True}), ("--reward", {"required": True}),
            ("--ref-logps", {"required": True}), ("--workdir", {"required": True}),
            ("--generations", {"required": True}), ("--checkpoints", {"required": True}),
            ("--records", {"required": True}), ("--metrics", {"required": True}),
        ],
    ),
    "final-responses": ("D': the final policy's responses to the evaluation prompts.", [("--data", {"required": True}), ("--checkpoints", {"required": True}), ("--seed", {"type": int, "required": True}), ("--run", {"default": None}), ("--out", {"required": True})]),
    "dynamics": (
        "Gradient alignment G per component at every analysis checkpoint of a run.",
        [
            ("--run", {"required": True}), ("--seed", {"type": int, "required": True}), ("--data", {"required": True}),
            ("--ref-logps", {"required": True}), ("--checkpoints", {"required": True}), ("--final-responses", {"required": True}),
            ("--out", {"required": True}), ("--samples-out", {"required": True}),
        ],
    ),
    "judge": ("Judge a run's responses against the SFT model's, per judged step.", [("--run", {"required": True}), ("--seed", {"type": int, "required": True}), ("--generations", {"required": True}), ("--baseline", {"required": True}), ("--out", {"required": True}), ("--scores-out", {"default": None}), ("--cache", {"required": True}), ("--judge-model", {"default": None, "help": "judge.type reward_model: the judge's model directory"})]),
    "figures": ("Figures 1, 2, 3 and 5 from cached dynamics tables and records.", [("--dpo", {"required": True}), ("--ppo", {"required": True}), ("--dpo-records", {"nargs": "+", "required": True}), ("--ppo-records", {"nargs": "+", "required": True}), ("--out", {"required": True})]),
    "claims": ("The paper-claims report (claims.md and claims.csv).", [("--dpo", {"required": True}), ("--ppo", {"required": True}), ("--ppo-records", {"nargs": "+", "required": True}), ("--comparisons", {"default": None}), ("--out", {"required": True}), ("--csv-out", {"required": True})]),
    "ablations": ("Win-rate tables, paired comparisons with baselines, and figure 4.", [("--winrates", {"required": True}), ("--scores", {"nargs": "+", "required": True}), ("--tables", {"required": True}), ("--figures", {"required": True})]),
    "concat": ("Concatenate CSV tables with the same columns.", [("--inputs", {"nargs": "+", "required": True}), ("--out", {"required": True})]),
    "winrates": ("Collect per-run judgements into winrates.csv.", [("--inputs", {"nargs": "+", "required": True}), ("--out", {"required": True}), ("--gold-out", {})]),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="podyn", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="stage", required=True)
    for name, (help_text, arguments) in STAGES.items():
        stage = sub.add_parser(name, help=help_text, description=help_text)
        stage.add_argument("--config", required=name not in ("winrates", "concat", "build-checkpoint"), help="config file, or the JSON a rule passes")
        stage.add_argument("--threads", type=int, default=None, help="torch threads (default: config's `threads`)")
        for flag, kwargs in arguments:
            stage.add_argument(flag, **kwargs)
    return parser


TORCH_STAGES = {"prepare-data", "build-checkpoint", "base-model", "sft", "reward-model", "reference-logps", "generate", "train", "final-responses", "dynamics"}


def run_stage(args: argparse.Namespace) -> None:
    """Dispatch to the stage's function. Modules are imported only by the stages that use them:
    a judging or plotting job does not pay for importing torch, transformers and Lightning."""
    from .config import ConfigError, load_config

    cfg = load_config(args.config) if args.config else {}
    stage = args.stage
    if stage in TORCH_STAGES:
        _quiet_libraries()
        import torch

        torch.set_num_threads(args.threads or cfg.get("threads") or torch.get_num_threads())
    paths = {k: Path(v) for k, v in vars(args).items() if isinstance(v, str) and k not in ("config", "stage", "run")}
    if stage == "prepare-data":
        from .pipeline import prepare_data

        prepare_data(cfg, paths["out"])
    elif stage == "build-checkpoint":
        from .pythia import build_checkpoint_dir

        spec = {"bpe_vocab_size": 8192, "overrides": {}, **(cfg.get("model", {}).get("build_checkpoint") or {})}
        spec.update({k: getattr(args, k) for k in ("size", "tokenizer") if getattr(args, k)})
        if not spec.get("size"):
            raise ConfigError("build-checkpoint: no size (--size or model.build_checkpoint.size)")
        build_checkpoint_dir(spec, [Path(p) for p in args.text], paths["out"], cfg.get("seed", 0))
    elif stage == "base-model":
        from .pipeline import base_model

        base_model(cfg, paths["out"])
    elif stage == "sft":
        from .pipeline import sft

        sft(cfg, paths["data"], paths["base"], paths["out"], paths["workdir"])
    elif stage == "reward-model":
        from .pipeline import reward_model

        reward_model(cfg, paths["data"], paths["sft"], paths["out"], paths["metrics"], paths["workdir"], args.split)
    elif stage == "reference-logps":
        from .pipeline import reference_logps

        reference_logps(cfg, paths["data"], paths["sft"], paths["out"])
    elif stage == "generate":
        from .pipeline import generate_responses

        generate_responses(cfg, paths["data"], paths["model"], paths["out"])
    elif stage == "train":
        from .pipeline import train_run

        train_run(cfg, args.run, args.seed, {k: paths[k] for k in ("data", "sft", "reward", "ref_logps", "workdir", "generations", "checkpoints", "records", "metrics")})
    elif stage == "final-responses":
        from .analysis import final_responses

        final_responses(cfg, paths["data"], paths["checkpoints"], args.seed, paths["out"])
    elif stage == "dynamics":
        from .analysis import run_dynamics

        run_dynamics(cfg, args.run, args.seed, paths["data"], paths["ref_logps"], paths["checkpoints"], paths["final_responses"], paths["out"], paths["samples_out"])
    elif stage == "judge":
        from .evaluation import judge_run

        judge_run(cfg, args.run, args.seed, paths["generations"], paths["baseline"], paths["out"], paths["cache"], paths.get("scores_out"), paths.get("judge_model"))
    elif stage == "figures":
        from .figures import dynamics_figures

        dynamics_figures(cfg, paths["dpo"], paths["ppo"], [Path(p) for p in args.dpo_records], [Path(p) for p in args.ppo_records], paths["out"])
    elif stage == "claims":
        from .claims import claims_report

        claims_report(cfg, paths["dpo"], paths["ppo"], [Path(p) for p in args.ppo_records], paths["out"], paths["csv_out"], paths.get("comparisons"))
    elif stage == "ablations":
        from .ablations import ablation_stage

        ablation_stage(cfg, paths["winrates"], [Path(p) for p in args.scores], paths["tables"], paths["figures"])
    elif stage == "concat":
        from .evaluation import concat_tables

        concat_tables([Path(p) for p in args.inputs], paths["out"])
    elif stage == "winrates":
        from .evaluation import collect_winrates

        collect_winrates([Path(p) for p in args.inputs], paths["out"], paths.get("gold_out"))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .config import ConfigError
    from .io import DataError

    from .stats import stage_stats

    name = args.stage if getattr(args, "run", None) is None else f"{args.stage}_{args.run}_seed{args.seed}"
    try:
        with stage_stats(name):
            run_stage(args)
    except (ConfigError, DataError) as err:
        print(f"podyn {args.stage}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
