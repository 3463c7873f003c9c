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
    "base-model": ("Build (scratch) or fetch (pretrained) the initial model and tokenizer.", [("--out", {"required": True})]),
    "sft": ("Supervised fine-tuning on the demonstrations.", [("--data", {"required": True}), ("--base", {"required": True}), ("--out", {"required": True}), ("--workdir", {"required": True})]),
    "reward-model": ("Bradley-Terry reward model, initialised from the SFT model.", [("--data", {"required": True}), ("--sft", {"required": True}), ("--out", {"required": True}), ("--metrics", {"required": True}), ("--workdir", {"required": True})]),
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
    "judge": ("Judge a run's responses against the SFT model's, per judged step.", [("--run", {"required": True}), ("--seed", {"type": int, "required": True}), ("--generations", {"required": True}), ("--baseline", {"required": True}), ("--out", {"required": True}), ("--scores-out", {"default": None}), ("--cache", {"required": True})]),
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
        stage.add_argument("--config", required=name not in ("winrates", "concat"), help="config file, or the JSON a rule passes")
        stage.add_argument("--threads", type=int, default=None, help="torch threads (default: config's `threads`)")
        for flag, kwargs in arguments:
            stage.add_argument(flag, **kwargs)
    return parser


def run_stage(args: argparse.Namespace) -> None:
    from . import analysis, evaluation, pipeline
    from .config import load_config
    from .training.common import configure_threads

    cfg = load_config(args.config) if args.config else {}
    configure_threads(args.threads or cfg.get("threads"))
    stage = args.stage
    if stage == "prepare-data":
        pipeline.prepare_data(cfg, Path(args.out))
    elif stage == "base-model":
        pipeline.base_model(cfg, Path(args.out))
    elif stage == "sft":
        pipeline.sft(cfg, Path(args.data), Path(args.base), Path(args.out), Path(args.workdir))
    elif stage == "reward-model":
        pipeline.reward_model(cfg, Path(args.data), Path(args.sft), Path(args.out), Path(args.metrics), Path(args.workdir))
    elif stage == "reference-logps":
        pipeline.reference_logps(cfg, Path(args.data), Path(args.sft), Path(args.out))
    elif stage == "generate":
        pipeline.generate_responses(cfg, Path(args.data), Path(args.model), Path(args.out))
    elif stage == "train":
        paths = {k: Path(getattr(args, k)) for k in ("data", "sft", "reward", "ref_logps", "workdir", "generations", "checkpoints", "records", "metrics")}
        pipeline.train_run(cfg, args.run, args.seed, paths)
    elif stage == "final-responses":
        analysis.final_responses(cfg, Path(args.data), Path(args.checkpoints), args.seed, Path(args.out))
    elif stage == "dynamics":
        analysis.run_dynamics(cfg, args.run, args.seed, Path(args.data), Path(args.ref_logps), Path(args.checkpoints), Path(args.final_responses), Path(args.out), Path(args.samples_out))
    elif stage == "judge":
        evaluation.judge_run(cfg, args.run, args.seed, Path(args.generations), Path(args.baseline), Path(args.out), Path(args.cache), Path(args.scores_out) if args.scores_out else None)
    elif stage == "figures":
        from .figures import dynamics_figures

        dynamics_figures(cfg, Path(args.dpo), Path(args.ppo), [Path(p) for p in args.dpo_records], [Path(p) for p in args.ppo_records], Path(args.out))
    elif stage == "claims":
        from .claims import claims_report

        claims_report(cfg, Path(args.dpo), Path(args.ppo), [Path(p) for p in args.ppo_records], Path(args.out), Path(args.csv_out), Path(args.comparisons) if args.comparisons else None)
    elif stage == "ablations":
        from .ablations import ablation_stage

        ablation_stage(cfg, Path(args.winrates), [Path(p) for p in args.scores], Path(args.tables), Path(args.figures))
    elif stage == "concat":
        evaluation.concat_tables([Path(p) for p in args.inputs], Path(args.out))
    elif stage == "winrates":
        evaluation.collect_winrates([Path(p) for p in args.inputs], Path(args.out), Path(args.gold_out) if args.gold_out else None)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
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
