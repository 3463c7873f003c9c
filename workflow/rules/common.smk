import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from podyn import registry, warm_start
from podyn.config import ConfigError, check_workflow_runs, read_yaml, selected_runs, validate_config

try:
    for path in workflow.configfiles:  # Snakemake's own YAML reading keeps the last of a repeated key
        read_yaml(path)
    CONFIG_SOURCE = ", ".join(map(str, workflow.configfiles)) or "config"
    CFG = validate_config(config, source=CONFIG_SOURCE)
    check_workflow_runs(CFG, CONFIG_SOURCE)
except ConfigError as err:
    raise WorkflowError(str(err)) from None
# the report's captions (workflow/report/) read `snakemake.config`: give it every key, defaults included
config.update(CFG.model_dump(mode="json", by_alias=True))

# The rules call `podyn`: find it beside the interpreter running Snakemake, activated or not.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

RESULTS = f"{CFG.results_dir}/{CFG.experiment}"
RUNS = selected_runs(CFG)
SEEDS = CFG.seeds


def on_a_cluster() -> bool:
    """True in a cluster run and in its jobs. A cluster executor sets `--jobs` (the nodes resource) and needs
    no --cores; Snakemake runs each cluster job in remote mode."""
    return workflow.remote_exec or workflow.resource_settings.nodes is not None


# Stages with nothing beside them in the DAG take every local core (up to 8). On a cluster they take
# `threads` like every other stage, the same in the submitting process and in the job (the plugin asks
# Slurm for that many CPUs per task; workflow.cores is unset there, or the node's CPU count in the job).
try:
    SERIAL_THREADS = CFG.threads if on_a_cluster() else min(workflow.cores, 8)
except WorkflowError:  # no --cores: a command that runs no job, such as `snakemake --report`
    SERIAL_THREADS = 1

# Warm start (podyn.warm_start): in a local run the jobs fork from processes that have imported torch,
# transformers and Lightning once (one per thread count the jobs use) instead of importing them each;
# the outputs are the same. Started when the first job is about to run, stopped by their pids at the end.
# A workflow keeps one handler per hook: a Snakefile that includes this one and defines its own onstart,
# onsuccess or onerror must call these too.
WARM_SERVERS = []


onstart:
    os.environ.pop(warm_start.ENV_VAR, None)  # never an inherited one: this run starts its own or none
    if CFG.warm_start and warm_start.supported() and workflow.local_exec:  # not with a cluster executor
        threads = {min(n, workflow.cores) for n in (1, CFG.threads, SERIAL_THREADS)}  # as Snakemake scales them
        try:
            WARM_SERVERS.append(warm_start.start_servers(threads, Path(RESULTS) / "logs" / "warm_start"))
        except OSError as err:
            print(f"warm start: not started ({err}); every job imports its own libraries", file=sys.stderr)


onsuccess:
    for servers in WARM_SERVERS:
        servers.stop()


onerror:
    for servers in WARM_SERVERS:
        servers.stop()


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


def stage_config(stage, run=None):
    """The config keys `stage` reads (declared in podyn.registry), as the JSON its entry point
    takes. Passing only these as `params` means that editing another key does not rerun it."""
    return registry.stage_config(CFG, stage, run)


DYNAMICS_RUNS = [r for r in CFG.dynamics.runs if r in RUNS]

# Job order where cores are few (Snakemake starts the ready jobs of highest priority first; the outputs
# do not depend on it). The dynamics of a run start as soon as it is trained, between the other runs'
# training jobs, instead of after all of them; and the longest training jobs start first, so that
# the last ones to finish are short: runs with a Coordinated-PO controller (they measure G while
# training), then the runs whose dynamics are analysed.
DYNAMICS_PRIORITY = 10


def train_priority(wildcards):
    run = CFG.runs[wildcards.run]
    return 2 if run.controller is not None else 1 if wildcards.run in DYNAMICS_RUNS else 0


def run_outputs(run, seed):
    return {
        "generations": f"{RESULTS}/runs/{run}/seed{seed}/generations.jsonl",
        "checkpoints": f"{RESULTS}/runs/{run}/seed{seed}/checkpoints.json",
        "records": f"{RESULTS}/runs/{run}/seed{seed}/records.csv",
        "metrics": f"{RESULTS}/runs/{run}/seed{seed}/metrics.csv",
        "timing": f"{RESULTS}/runs/{run}/seed{seed}/timing.csv",
    }


def final_targets():
    return [
        f"{RESULTS}/eval/winrates.csv",
        f"{RESULTS}/eval/reward_model.csv",
        *expand(f"{RESULTS}/dynamics/{{run}}.csv", run=DYNAMICS_RUNS),
        *rules.dynamics_figures.output,
        *rules.ablations.output,
        *rules.coordination.output,
        f"{RESULTS}/claims.md",
        *rules.report_pages.output,
        *(rules.claims_robustness.output if CFG.robustness.settings else []),
    ]
