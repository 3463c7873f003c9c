import json
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from podyn.config import ConfigError, resolve_run, selected_runs, validate_config

# `--config seeds=[0,1,2]` arrives as strings
if isinstance(config.get("seeds"), list):
    config["seeds"] = [int(s) if isinstance(s, str) and s.strip().lstrip("-").isdigit() else s for s in config["seeds"]]

try:
    validate_config(config, source=", ".join(map(str, workflow.configfiles)) or "config")
except ConfigError as err:
    raise WorkflowError(str(err)) from None

# The rules call `podyn`: find it beside the interpreter running Snakemake, activated or not.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

RESULTS = f"{config['results_dir']}/{config['experiment']}"
RUNS = selected_runs(config)
SEEDS = config["seeds"]


def on_a_cluster() -> bool:
    """True in a cluster run and in its jobs. A cluster executor sets `--jobs` (the nodes resource) and needs
    no --cores; Snakemake runs each cluster job in remote mode."""
    return workflow.remote_exec or workflow.resource_settings.nodes is not None


# Stages with nothing beside them in the DAG take every local core (up to 8). On a cluster they take
# `threads` like every other stage, the same in the submitting process and in the job (the plugin asks
# Slurm for that many CPUs per task; workflow.cores is unset there, or the node's CPU count in the job).
SERIAL_THREADS = config["threads"] if on_a_cluster() else min(workflow.cores, 8)


wildcard_constraints:
    run="|".join(RUNS),
    seed=r"\d+",


def stage_config(*sections, **extra):
    """The config sections a stage reads, as the JSON its entry point takes. Passing only
    these as `params` means that editing another section does not rerun the stage."""
    return json.dumps({**{s: config[s] for s in sections}, **extra}, sort_keys=True)


def run_config(wildcards, extra_sections=()):
    run = {k: v for k, v in config["runs"][wildcards.run].items() if k != "label"}  # a legend label retrains nothing
    return stage_config("model", "trainer", "generation", run["objective"], *extra_sections, runs={wildcards.run: run})


def dynamics_config(keys):
    return {k: config["dynamics"][k] for k in keys}


DYNAMICS_RUNS = [r for r in config["dynamics"]["runs"] if r in RUNS]


def run_outputs(run, seed):
    return {
        "generations": f"{RESULTS}/runs/{run}/seed{seed}/generations.jsonl",
        "checkpoints": f"{RESULTS}/runs/{run}/seed{seed}/checkpoints.json",
        "records": f"{RESULTS}/runs/{run}/seed{seed}/records.csv",
        "metrics": f"{RESULTS}/runs/{run}/seed{seed}/metrics.csv",
    }


def final_targets():
    return [
        f"{RESULTS}/eval/winrates.csv",
        f"{RESULTS}/eval/reward_model.csv",
        *expand(f"{RESULTS}/dynamics/{{run}}.csv", run=DYNAMICS_RUNS),
        *rules.dynamics_figures.output,
        *rules.ablations.output,
        f"{RESULTS}/claims.md",
    ]
