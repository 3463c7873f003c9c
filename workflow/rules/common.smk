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
try:
    SERIAL_THREADS = min(workflow.cores, 8)  # stages with nothing beside them in the DAG
except WorkflowError:  # no --cores: a command that runs no job, such as `snakemake --report`
    SERIAL_THREADS = 1

# `snakemake --report`: its categories (numbered: the report sorts them by name)
REPORT_DYNAMICS = "1. Learning dynamics"
REPORT_WINRATES = "2. Win rates"
REPORT_CLAIMS = "3. Paper claims"
REPORT_DATA = "4. Data"  # CSV files, offered as downloads


def report_file(path, what, caption, category):
    """``path`` marked for `snakemake --report`, with the caption workflow/report/<caption>.rst.
    The report shows images and HTML pages inline and offers other files as downloads."""
    labels = {"result": what, "file": path.removeprefix(f"{RESULTS}/")}
    return report(path, caption=f"../report/{caption}.rst", category=category, labels=labels)


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
        *rules.report_pages.output,
    ]
