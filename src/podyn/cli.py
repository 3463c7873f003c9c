"""``podyn``: the command-line entry points that the Snakemake rules call, one per stage of
:data:`podyn.registry.STAGES`.

A stage that reads config takes ``--config``: a whole config file (validated, defaults filled
in), or the JSON excerpt that a rule passes (validated against the keys the stage reads).
Run ``podyn <stage> --help`` for a stage's arguments and the config keys it reads."""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from .registry import STAGES, Arg, Stage


def _plain(docstring: str) -> str:
    """A docstring as help text: ``code`` and :role:`target` markup without the markup."""
    import re

    return re.sub(r":\w+:`~?([^`]+)`", r"\1", docstring).replace("``", "")


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


_ARG_TYPES: dict[str, dict[str, Any]] = {
    "path": {},
    "str": {},
    "int": {"type": int},
    "paths": {"nargs": "+"},
    "strs": {"nargs": "+"},
    "ints": {"nargs": "+", "type": int},
}


def _add_argument(parser: argparse.ArgumentParser, arg: Arg) -> None:
    parser.add_argument(arg.flag, required=arg.required, default=None, help=arg.help, **_ARG_TYPES[arg.kind])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="podyn", description=_plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="stage", required=True, metavar="<stage>")
    for stage in STAGES.values():
        reads = ", ".join(stage.reads) if stage.reads else "nothing"
        description = f"{stage.help}\n\nConfig keys read: {reads}."
        parser_ = sub.add_parser(
            stage.name, help=stage.help, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        if stage.reads:
            parser_.add_argument("--config", required=True, help="a config file, or the JSON excerpt a rule passes")
        if stage.torch:
            parser_.add_argument(
                "--threads", type=int, default=None, help="torch threads (default: the config file's `threads`)"
            )
        for arg in stage.args:
            _add_argument(parser_, arg)
    return parser


def stage_config(stage: Stage, source: str, run: str | None) -> Any:
    """The typed config a stage gets: a whole config file, or the excerpt of the keys it reads."""
    from .config import OBJECTIVES, ConfigError, load_config, validate_excerpt

    if not source.lstrip().startswith("{"):
        cfg = load_config(source)
        if stage.per_run and run not in cfg.runs:
            raise ConfigError(f"{source}: invalid value at 'runs': run {run!r} is not defined")
        return cfg
    try:
        raw = json.loads(source)
    except json.JSONDecodeError as err:
        raise ConfigError(f"--config: not valid JSON: {err}") from None
    objective = None
    if stage.per_run:  # the run's objective names the section the excerpt must hold
        try:
            objective = raw["runs"][run]["objective"]
        except (KeyError, TypeError):
            raise ConfigError(f"--config: missing 'runs.{run}.objective'") from None
        if objective not in OBJECTIVES:
            raise ConfigError(
                f"--config: invalid value at 'runs.{run}.objective': "
                f"expected one of {', '.join(OBJECTIVES)}, got {objective!r}"
            )
    return validate_excerpt(raw, stage.keys(objective, run), "--config")


def prepare_torch(threads: int | None) -> None:
    """Set torch's thread count, after initialising MKL's vector-math library on this thread alone.

    MKL initialises that library (behind torch's exp, cos, log ... on the CPU) on its first call. When
    the first call is a parallel one, two threads initialise it at once, and 1 to 4 processes in 100
    (measured on this project's 2-core machine) then compute that call's share on the second thread
    with a low-accuracy kernel: cos wrong by up to 1.4e-4 in the rotary embedding of the first forward
    pass, so that two runs of the same job could differ (a reference-logps job under Slurm against the
    same job run locally). One call on one element initialises it first (tests/test_thread_determinism.py)."""
    import torch

    torch.ones(1).exp()
    if threads:
        torch.set_num_threads(threads)


def run_stage(args: argparse.Namespace) -> None:
    """Validate the config, then call the stage's entry point. Modules are imported only by
    the stages that use them: a judging or plotting job does not import torch."""
    stage = STAGES[args.stage]
    values = {arg.dest: arg.convert(getattr(args, arg.dest)) for arg in stage.args}
    cfg = stage_config(stage, args.config, values.get("run")) if stage.reads else None
    if stage.torch:
        _quiet_libraries()
        from .config import Config

        prepare_torch(args.threads or (cfg.threads if isinstance(cfg, Config) else None))
    module, function = stage.entry.split(":")
    entry = getattr(importlib.import_module(module), function)
    # The modules just imported (torch, Lightning, transformers: millions of objects) live as long as
    # the process: kept out of the cyclic garbage collector's sight, and its collections made rarer
    # (first generation: 20,000 allocations instead of 700), the collector no longer takes 5% of a
    # small training job's CPU time (1.3 of 28 s measured in a default DPO job; 0.5 s this way).
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)
    entry(cfg, **values) if stage.reads else entry(**values)


def record_name(args: argparse.Namespace) -> str:
    """The name of a job's resource record (``$PODYN_STATS_DIR/<name>.json``): unique among the
    DAG's jobs, so that no job's record replaces another's. A run's jobs carry the run and seed;
    the judge model's ``reward-model`` job its split; each ``concat`` job its output's name."""
    name = args.stage
    run, seed = getattr(args, "run", None), getattr(args, "seed", None)
    if run is not None:
        name += f"_{run}_seed{seed}"
    split = getattr(args, "split", None)
    if split not in (None, "prefs_train"):
        name += f"_{split}"
    if args.stage == "concat":
        name += f"_{Path(args.out).stem}"
    return name


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the `podyn` command: in a local Snakemake run, forked from a warm server
        from .warm_start import run_in_server

        stage = STAGES.get(sys.argv[1]) if len(sys.argv) > 1 else None
        if (status := run_in_server(torch_stage=bool(stage and stage.torch))) is not None:
            return status
    args = build_parser().parse_args(argv)
    from .config import ConfigError
    from .io import DataError
    from .judges import JudgeError
    from .resources import stage_resources

    try:
        with stage_resources(record_name(args)):
            run_stage(args)
    except (ConfigError, DataError, JudgeError) as err:
        print(f"podyn {args.stage}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
