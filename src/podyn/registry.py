"""The stage registry: every ``podyn <stage>`` declared once.

A :class:`Stage` names its entry point (``module:function``, imported only when the stage
runs), the config keys it reads, whether it needs torch, and its arguments with help. From
it come the command line (:mod:`podyn.cli`, ``podyn <stage> --help``) and the config excerpt
a Snakemake rule passes (:func:`stage_config`, used by ``workflow/rules/common.smk``).

The entry point is called as ``function(cfg, **arguments)``: ``cfg`` is the typed config
(a :class:`podyn.config.Config`, or the excerpt restricted to ``reads``) and every argument
arrives under its flag's name (``--ref-logps`` -> ``ref_logps``), paths as :class:`Path`.

How to add a stage
------------------
1. Write its function in a module named for what it does (e.g. ``podyn/stages/<stage>.py``),
   ``def my_stage(cfg, *, data: Path, out: Path) -> None``, reading config as ``cfg.section.key``.
2. Add a :class:`Stage` to ``STAGES`` below: entry ``"podyn.stages.my_stage:my_stage"``, the
   dotted config keys it reads (``"{objective}"`` and ``"runs.{run}..."`` for per-run
   stages), ``torch=True`` if it imports torch, and its arguments with help.
3. Add its rule in ``workflow/rules/<stage>.smk``:
   ``params: cfg=stage_config("my-stage")`` (per run: ``cfg=lambda w: stage_config("my-stage", run=w.run)``)
   and ``shell: "podyn my-stage --config {params.cfg:q} --data ... --out {output} > {log} 2>&1"``.

This module imports nothing heavy: the Snakefile imports it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ArgKind = Literal["path", "paths", "int", "ints", "str", "strs"]


@dataclass(frozen=True)
class Arg:
    """A command-line argument of a stage. ``paths``/``ints``/``strs`` take one or more values."""

    flag: str
    help: str
    kind: ArgKind = "path"
    required: bool = True

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    def convert(self, value: Any) -> Any:
        if value is None:
            return None
        if self.kind == "path":
            return Path(value)
        if self.kind == "paths":
            return [Path(v) for v in value]
        return value


RUN = Arg("--run", "the run: an entry of the config's `runs`", "str")
SEED = Arg("--seed", "the preference-optimization seed", "int")
DATA = Arg("--data", "directory of the prepared data splits")
SFT = Arg("--sft", "directory of the SFT model")

# the keys a run's training reads: its objective's section and its entry of `runs` (not its
# legend label, which retrains nothing)
RUN_KEYS = (
    "{objective}",
    "runs.{run}.objective",
    "runs.{run}.weights",
    "runs.{run}.overrides",
    "runs.{run}.cdpo",
    "runs.{run}.controller",
    "runs.{run}.ppo_factors",
)
MODEL_KEYS = ("model", "trainer", "generation")
# keys added after results directories existed: passed only when set, so that their default (which
# changes nothing) does not change the rules' params and rerun every job of existing results
PASSED_WHEN_SET = ("runs.{run}.ppo_factors",)


@dataclass(frozen=True)
class Stage:
    """``name``: the ``podyn`` sub-command; ``entry``: ``module:function``; ``reads``: dotted
    config keys (``{objective}``/``{run}`` filled per run); ``torch``: whether its job imports
    torch (then ``--threads`` is offered); ``args``: its other arguments."""

    name: str
    entry: str
    help: str
    reads: tuple[str, ...] = ()
    torch: bool = False
    args: tuple[Arg, ...] = field(default_factory=tuple)

    @property
    def per_run(self) -> bool:
        return any("{run}" in key or "{objective}" in key for key in self.reads)

    def keys(self, objective: str | None = None, run: str | None = None) -> tuple[str, ...]:
        """The dotted config keys this stage reads, for one run where the stage is per run."""
        if self.per_run and (run is None or objective is None):
            raise ValueError(f"stage {self.name!r} reads a run's config: name the run")
        return tuple(key.format(objective=objective, run=run) for key in self.reads)


STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in (
        Stage(
            "prepare-data",
            "podyn.stages.prepare_data:prepare_data",
            "Generate (synthetic) or load (hf, local) every data split as JSON lines.",
            reads=("seed", "data", "model.name_or_path"),  # the model's chat template, with data.render chat_template
            args=(Arg("--out", "output directory of the splits"),),
        ),
        Stage(
            "build-checkpoint",
            "podyn.pythia:build_checkpoint_stage",
            "A random Pythia-architecture model and a locally trained BPE tokenizer, saved as an HF model directory.",
            reads=("seed", "model.build_checkpoint"),
            torch=True,
            args=(
                Arg("--text", "prepared JSON-lines splits whose text trains the tokenizer", "paths", required=False),
                Arg("--size", "Pythia size (14m ... 12b); default model.build_checkpoint.size", "str", required=False),
                Arg("--tokenizer", "use this tokenizer instead of training one", "str", required=False),
                Arg("--out", "output model directory"),
            ),
        ),
        Stage(
            "base-model",
            "podyn.stages.base_model:base_model",
            "Build (scratch) or fetch (pretrained) the initial model and tokenizer.",
            reads=("seed", "data.source", "model"),
            torch=True,
            args=(Arg("--out", "output model directory"),),
        ),
        Stage(
            "sft",
            "podyn.stages.sft:sft",
            "Supervised fine-tuning on the demonstrations.",
            reads=("seed", *MODEL_KEYS, "sft"),
            torch=True,
            args=(
                DATA,
                Arg("--base", "directory of the base model"),
                Arg("--out", "output model directory"),
                Arg("--workdir", "work directory (Lightning checkpoints; a rerun resumes from it)"),
            ),
        ),
        Stage(
            "reward-model",
            "podyn.stages.reward_model:reward_model",
            "Bradley-Terry reward model, initialised from the SFT model, and its held-out accuracy.",
            reads=("seed", *MODEL_KEYS, "reward_model", "winrate"),
            torch=True,
            args=(
                DATA,
                SFT,
                Arg("--out", "output model directory"),
                Arg("--metrics", "output CSV of held-out accuracy"),
                Arg("--workdir", "work directory (Lightning checkpoints; a rerun resumes from it)"),
                Arg(
                    "--split",
                    "pairs to train on: prefs_train (default) or judge_prefs (the judge)",
                    "str",
                    required=False,
                ),
            ),
        ),
        Stage(
            "reference-logps",
            "podyn.stages.reference_logps:reference_logps",
            "Reference log-probs of every training pair, for all DPO runs.",
            reads=(*MODEL_KEYS, "dpo.batch_size"),
            torch=True,
            args=(DATA, SFT, Arg("--out", "output .pt file")),
        ),
        Stage(
            "generate",
            "podyn.stages.generate:generate_responses",
            "Greedy responses of a saved policy to the test prompts.",
            reads=MODEL_KEYS,
            torch=True,
            args=(DATA, Arg("--model", "directory of the policy"), Arg("--out", "output JSON lines")),
        ),
        Stage(
            "train",
            "podyn.stages.train:train_run",
            "Train one preference-optimization run (a DPO- or PPO-family entry of `runs`).",
            reads=(*MODEL_KEYS, *RUN_KEYS),
            torch=True,
            args=(
                RUN,
                SEED,
                DATA,
                SFT,
                Arg("--reward", "directory of the reward model"),
                Arg("--ref-logps", "reference log-probs (.pt)"),
                Arg("--workdir", "work directory (checkpoints; a rerun resumes from it)"),
                Arg("--generations", "output JSON lines of the judged steps' responses"),
                Arg("--checkpoints", "output manifest of the analysis checkpoints"),
                Arg("--records", "output CSV of per-step records"),
                Arg("--metrics", "output CSV of Lightning's metrics"),
                Arg(
                    "--timing", "output CSV of this attempt's wall-clock times (training, Coordinated PO's controller)"
                ),
            ),
        ),
        Stage(
            "final-responses",
            "podyn.analysis:final_responses",
            "D': the final policy's responses to the evaluation prompts.",
            reads=(*MODEL_KEYS, "dynamics.n_prompts", "dynamics.decoding"),
            torch=True,
            args=(
                DATA,
                Arg("--checkpoints", "the run's checkpoint manifest"),
                SEED,
                Arg("--run", "the run (for the log only)", "str", required=False),
                Arg("--out", "output JSON lines"),
            ),
        ),
        Stage(
            "dynamics",
            "podyn.analysis:run_dynamics",
            "Gradient alignment G per component at every analysis checkpoint of a run.",
            reads=(*MODEL_KEYS, *RUN_KEYS, "dynamics"),
            torch=True,
            args=(
                RUN,
                SEED,
                DATA,
                Arg("--ref-logps", "reference log-probs (.pt)"),
                Arg("--checkpoints", "the run's checkpoint manifest"),
                Arg("--final-responses", "D' (JSON lines)"),
                Arg("--out", "output CSV of G"),
                Arg("--samples-out", "output CSV of per-sample derivatives and loss weights"),
            ),
        ),
        Stage(
            "judge",
            "podyn.evaluation:judge_run",
            "Judge a run's responses against the SFT model's, per judged step.",
            reads=(
                "judge",
                "winrate",
                "data.synthetic.length_penalty",
                *MODEL_KEYS,
            ),  # the model's: reward_model judge
            args=(
                RUN,
                SEED,
                Arg("--generations", "the run's responses (JSON lines)"),
                Arg("--baseline", "the SFT model's responses"),
                Arg("--out", "output CSV of win rates"),
                Arg("--scores-out", "output CSV of per-prompt scores", required=False),
                Arg("--cache", "this job's file of the experiment-wide judge cache (every *.jsonl beside it is read)"),
                Arg("--judge-model", "judge.type reward_model: the judge's model directory", required=False),
            ),
        ),
        Stage(
            "figures",
            "podyn.figures:dynamics_figures",
            "Figures 1, 2, 3 and 5 from cached dynamics tables and records.",
            reads=("figures",),
            args=(
                Arg("--dpo", "dynamics table of the DPO run"),
                Arg("--ppo", "dynamics table of the PPO run"),
                Arg("--seeds", "seed of each records file, in order", "ints"),
                Arg("--dpo-records", "the DPO run's records, one per seed", "paths"),
                Arg("--ppo-records", "the PPO run's records, one per seed", "paths"),
                Arg("--out", "output directory"),
            ),
        ),
        Stage(
            "claims",
            "podyn.claims:claims_report",
            "The paper-claims report (claims.md and claims.csv).",
            reads=("claims",),
            args=(
                Arg("--dpo", "dynamics table of the DPO run"),
                Arg("--ppo", "dynamics table of the PPO run"),
                Arg("--seeds", "seed of each records file, in order", "ints"),
                Arg("--ppo-records", "the PPO run's records, one per seed", "paths"),
                Arg("--comparisons", "paired comparisons with baselines (CSV)", required=False),
                Arg("--out", "output Markdown"),
                Arg("--csv-out", "output CSV"),
            ),
        ),
        Stage(
            "ablations",
            "podyn.winrate_tables:ablation_stage",
            "Win-rate tables, paired comparisons with baselines, and figure 4.",
            reads=("figures", "winrate", "runs"),
            args=(
                Arg("--winrates", "winrates.csv"),
                Arg("--runs", "run of each scores file, in order", "strs"),
                Arg("--seeds", "seed of each scores file, in order", "ints"),
                Arg("--scores", "per-prompt scores, one file per run and seed", "paths"),
                Arg("--tables", "output directory of the tables"),
                Arg("--figures", "output directory of figure 4"),
            ),
        ),
        Stage(
            "coordination",
            "podyn.winrate_tables:coordination_stage",
            "Figures of the weights each run applied and of Coordinated PO; tables/copo.csv (cost, weights, "
            "comparisons).",
            reads=("figures", "winrate", "runs"),
            args=(
                Arg("--winrates", "winrates.csv"),
                Arg("--runs", "run of each scores and records file, in order", "strs"),
                Arg("--seeds", "seed of each scores and records file, in order", "ints"),
                Arg("--scores", "per-prompt scores, one file per run and seed", "paths"),
                Arg("--records", "per-step records, one file per run and seed (the order of --scores)", "paths"),
                Arg(
                    "--timing",
                    "training and controller times, one file per run and seed (the order of --scores)",
                    "paths",
                ),
                Arg("--tables", "output directory of the tables"),
                Arg("--figures", "output directory of the figures"),
            ),
        ),
        Stage(
            "claims-robustness",
            "podyn.claims:robustness_stage",
            "The dynamics claims under every robustness setting: tables/claims_robustness.csv and its heatmap.",
            reads=("claims", "figures", "winrate", "robustness"),
            args=(
                Arg("--dynamics", "dynamics tables of the settings' runs", "paths"),
                Arg("--dynamics-runs", "run of each dynamics table, in order", "strs"),
                Arg("--records", "the PPO runs' records, one per run and seed", "paths"),
                Arg("--record-runs", "run of each records file, in order", "strs"),
                Arg("--seeds", "seed of each records file, in order", "ints"),
                Arg("--out", "output CSV"),
                Arg("--figure", "output stem of the heatmap (one file per figures.formats)"),
            ),
        ),
        Stage(
            "concat",
            "podyn.evaluation:concat_tables",
            "Concatenate CSV tables with the same columns.",
            args=(Arg("--inputs", "CSV tables", "paths"), Arg("--out", "output CSV")),
        ),
        Stage(
            "winrates",
            "podyn.evaluation:collect_winrates",
            "Collect per-run judgements into winrates.csv.",
            args=(
                Arg("--inputs", "per-run judgements (CSV)", "paths"),
                Arg("--out", "output winrates.csv"),
                Arg("--gold-out", "output CSV of gold rewards", required=False),
            ),
        ),
        Stage(
            "report-pages",
            "podyn.report_pages:write_report_pages",
            "HTML views of the win-rate table, paired comparisons, Coordinated PO's table and claims report, "
            "for `snakemake --report`.",
            args=(
                Arg("--winrates", "the win-rate table (tables/winrates.md)"),
                Arg("--comparisons", "paired comparisons with the baselines (tables/comparisons.csv)"),
                Arg("--copo", "Coordinated PO's cost and comparisons (tables/copo.csv)"),
                Arg("--claims", "the claims report (claims.md)"),
                Arg("--out", "output directory of the pages"),
            ),
        ),
    )
}


def stage_config(cfg: Any, stage: str, run: str | None = None) -> str:
    """The JSON excerpt of ``cfg`` that ``stage`` reads (for ``run``, if it is per run): what
    a rule passes as ``--config``. Passing only these keys means that editing another key
    does not rerun the stage."""
    from .config import excerpt

    spec = STAGES[stage]
    objective = cfg.runs[run].objective if spec.per_run else None
    when_set = {key.format(run=run) for key in PASSED_WHEN_SET} if spec.per_run else set()
    keys = tuple(k for k in spec.keys(objective, run) if k not in when_set or not _at_default(cfg, k))
    return json.dumps(excerpt(cfg, keys), sort_keys=True)


def _at_default(cfg: Any, path: str) -> bool:
    """Whether the section at dotted ``path`` equals its type's default."""
    node = cfg
    for part in path.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part, None)
    return node is None or node == type(node)()
