"""The Slurm profile on a real single-node Slurm (``scripts/slurm-local.sh``, installed and started by
the fixture, stopped by its own pid files afterwards, whatever the outcome):

- the tiny config end to end with ``--workflow-profile workflow/profiles/slurm`` and the local overlay
  (``workflow/profiles/slurm/local.env``): every Snakemake job went through its own ``sbatch`` (Slurm's
  job records and the plugin's job logs say so), and the results equal those of a local run;
- pre-emption: a training job cancelled with ``scancel`` while it runs is resubmitted by Snakemake, resumes
  from its last Lightning checkpoint, and ends with the outputs of an uninterrupted run.

Skipped, with the reason, where Slurm cannot be set up: not root, or neither Slurm nor apt-get."""

from __future__ import annotations

import filecmp
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from conftest import REPO, TINY_CONFIG, run_cmd, snakemake, write_config

pytestmark = pytest.mark.slow

SLURM_SCRIPT = REPO / "scripts" / "slurm-local.sh"
PROFILE = REPO / "workflow" / "profiles" / "slurm"
RUN_TIMEOUT = 1500  # seconds for one Snakemake run under Slurm; SIGINT then (SIGTERM does not stop it)
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")
# files of a run that depend on where or when it ran, not on what it computed: logs, the training work
# directories (checkpoints), PDFs (their creation date)
VOLATILE_DIRS = ("logs", "work")
VOLATILE_SUFFIXES = (".pdf",)
VOLATILE_NAMES = ("timing.csv",)  # wall-clock times of a training run
TEXT_SUFFIXES = (".json", ".jsonl", ".csv", ".md", ".tex")
# torch's results depend on its thread count: the Slurm run gives the stages that take every local core in a
# local run (SERIAL_THREADS, 2 in the local run) the same count
LOCAL_RUN_THREADS = ("--set-threads", "sft=2", "reward_model=2", "reference_logps=2")


@dataclass
class Slurm:
    state: Path

    def records(self, run_uuid: str) -> list[dict[str, str]]:
        """Slurm's job completion records (jobcomp/filetxt) of the jobs one Snakemake run submitted
        (the plugin names every job after the run's UUID)."""
        log = self.state / "jobcomp.log"
        lines = log.read_text().splitlines() if log.exists() else []
        rows = [dict(re.findall(r"(\w+)=(\S*)", line)) for line in lines]
        return [row for row in rows if row.get("Name") == run_uuid]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory) -> Slurm:
    if os.geteuid() != 0:
        pytest.skip("a local Slurm needs root: scripts/slurm-local.sh installs and starts munged, slurmctld, slurmd")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        pytest.skip("Slurm is not installed and there is no apt-get to install it")
    plugin = importlib.util.find_spec("snakemake_executor_plugin_slurm")
    assert plugin, "the Slurm executor plugin is missing: bash scripts/setup.sh dev,slurm"
    state = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "PODYN_SLURM_DIR": str(state)}
    try:
        up = subprocess.run(["bash", str(SLURM_SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=900)
        logs = "".join(f"\n== {p}\n{p.read_text()[-2000:]}" for p in sorted(state.glob("*.log")))
        assert up.returncode == 0, f"slurm-local.sh up failed:\n{up.stdout}\n{up.stderr}{logs}"
        yield Slurm(state)
    finally:
        down = subprocess.run(["bash", str(SLURM_SCRIPT), "down"], env=env, capture_output=True, text=True, timeout=99)
        assert down.returncode == 0, down.stdout + down.stderr


def local_overlay() -> dict[str, str]:
    """The environment of workflow/profiles/slurm/local.env (KEY=VALUE lines)."""
    lines = (PROFILE / "local.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def slurm_snakemake(
    workdir: Path, results: Path, *args: str, targets: list[str] = (), configfile: Path = TINY_CONFIG
) -> list[str]:
    """A Snakemake run through the Slurm profile with the local overlay; test-speed status checks; Slurm
    logs kept, so that every job's log shows it ran under sbatch. (Targets follow a one-value option: after
    --config or --allowed-rules they would be read as more of their values.)"""
    return [
        "timeout", "-s", "INT", "-k", "30", str(RUN_TIMEOUT),
        *snakemake(workdir, "--workflow-profile", str(PROFILE), "--latency-wait", "5", *targets,
                   "--config", f"results_dir={results}", "--slurm-init-seconds-before-status-checks", "2",
                   "--slurm-keep-successful-logs", *args, configfile=configfile),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def slurm_env(env) -> dict[str, str]:
    return {**env, **local_overlay()}


def run_uuid(log: str) -> str:
    """The plugin's name for this run's jobs."""
    match = re.search(r"SLURM run ID: ([0-9a-f-]{36})", log)
    assert match, "no SLURM run ID in Snakemake's log:\n" + log[-3000:]
    return match.group(1)


def submitted(log: str) -> list[tuple[str, str, Path]]:
    """(Snakemake job id, Slurm job id, Slurm log) of every submission, in order."""
    return [(m.group(1), m.group(2), Path(m.group(3))) for m in SUBMITTED.finditer(log)]


def job_stats(log: str) -> Counter:
    table = log.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return Counter({m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.MULTILINE)})


def result_files(root: Path) -> list[Path]:
    files = (p.relative_to(root) for p in root.rglob("*") if p.is_file())
    return sorted(
        f
        for f in files
        if f.parts[0] not in VOLATILE_DIRS and f.suffix not in VOLATILE_SUFFIXES and f.name not in VOLATILE_NAMES
    )


def same_content(got: Path, expected: Path, got_root: Path, expected_root: Path) -> bool:
    """Byte for byte, except for what names the run's own directory: text files may name paths under their
    results directory (checkpoints.json does), and torch archives name their (temporary) file inside."""
    if got.suffix == ".pt":
        a, b = torch.load(got, weights_only=False), torch.load(expected, weights_only=False)
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if got.suffix in TEXT_SUFFIXES:
        return got.read_text().replace(str(got_root), "<results>") == expected.read_text().replace(
            str(expected_root), "<results>"
        )
    return filecmp.cmp(got, expected, shallow=False)


def assert_same_files(got: Path, expected: Path, files: list[Path]) -> None:
    """``got`` and ``expected``: two results directories (``results_dir``); ``files`` relative to them."""
    differ = [str(f) for f in files if not same_content(got / f, expected / f, got, expected)]
    assert not differ, f"differ from the reference run: {differ}"


@pytest.fixture(scope="module")
def slurm_e2e(slurm, slurm_env, tmp_path_factory):
    """The whole tiny DAG under Slurm."""
    workdir = tmp_path_factory.mktemp("slurm_e2e")
    results = workdir / "out"
    cmd = slurm_snakemake(workdir, results, *LOCAL_RUN_THREADS)
    proc = run_cmd(cmd, slurm_env, cwd=workdir, timeout=RUN_TIMEOUT + 60)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"rc {proc.returncode} (124: hung until the timeout):\n{log[-6000:]}"
    return workdir, results, log


def test_every_job_runs_through_its_own_sbatch(slurm, slurm_e2e):
    workdir, _, log = slurm_e2e
    expected = job_stats(log)
    expected.pop("all")  # the target rule runs no command: Snakemake finishes it itself
    expected.pop("total")
    jobs = submitted(log)
    # one sbatch per Snakemake job, each with its own Slurm job
    assert len(jobs) == sum(expected.values()), (len(jobs), expected)
    assert len({slurm_id for _, slurm_id, _ in jobs}) == len(jobs)
    # Slurm's records: exactly these jobs, all completed
    records = {row["JobId"]: row for row in slurm.records(run_uuid(log))}
    assert set(records) == {slurm_id for _, slurm_id, _ in jobs}
    assert {row["JobState"] for row in records.values()} == {"COMPLETED"}
    # the plugin's log of each job: the rule it ran, under the Slurm job step executor
    per_rule: Counter = Counter()
    for _, slurm_id, path in jobs:
        text = path.read_text()
        assert "--executor slurm-jobstep" in text, path
        assert path.name == f"{slurm_id}.log"
        per_rule[re.search(r"^rule (\w+):", text, re.MULTILINE).group(1)] += 1
    assert per_rule == expected


def test_slurm_results_equal_a_local_run(slurm_e2e, e2e, tiny_raw):
    _, slurm_results, _ = slurm_e2e
    _, local_results = e2e
    experiment = tiny_raw["experiment"]
    files = [experiment / f for f in result_files(local_results / experiment)]
    assert [experiment / f for f in result_files(slurm_results / experiment)] == files
    assert_same_files(slurm_results, local_results, files)


def preemption_config(tmp_path: Path, tiny_raw: dict) -> Path:
    """The tiny config with a DPO run long enough to be cancelled between two checkpoints."""
    cfg = dict(tiny_raw)
    cfg["dpo"] = {**tiny_raw["dpo"], "max_steps": 150, "checkpoint_every": 50, "eval_every": 50}
    cfg["trainer"] = {**tiny_raw["trainer"], "checkpoint_every_n_steps": 10}
    return write_config(tmp_path / "preemption.yaml", cfg)


def copy_inputs(results: Path, dest: Path, experiment: str) -> None:
    """The upstream outputs of the training stage (data, models, reference log-probs), times kept."""
    for part in ("data", "models", "cache"):
        shutil.copytree(results / experiment / part, dest / experiment / part)


def train_outputs(results: Path, experiment: str, run: str) -> list[Path]:
    names = ("generations.jsonl", "checkpoints.json", "records.csv", "metrics.csv")
    return [results / experiment / "runs" / run / "seed0" / name for name in names]


def test_preempted_training_resumes_and_matches_an_uninterrupted_run(slurm, e2e, slurm_env, env, tmp_path, tiny_raw):
    _, e2e_results = e2e  # the training stage's inputs come from the local run (equal to the Slurm run's)
    experiment, run = tiny_raw["experiment"], "dpo"
    config = preemption_config(tmp_path, tiny_raw)
    targets = [str(p) for p in train_outputs(Path("out"), experiment, run)]

    # the uninterrupted reference: the same training stage, run locally
    reference = tmp_path / "reference"
    copy_inputs(e2e_results, reference / "out", experiment)
    local = snakemake(
        reference,
        "--cores",
        "1",
        *targets,
        "--allowed-rules",
        "train",
        "--config",
        "results_dir=out",
        configfile=config,
    )
    proc = run_cmd(local, env, cwd=reference, timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]

    # under Slurm: cancel the training job once it has written a checkpoint
    workdir = tmp_path / "preempted"
    copy_inputs(e2e_results, workdir / "out", experiment)
    last_ckpt = workdir / "out" / experiment / "work" / run / "seed0" / "lightning" / "last.ckpt"
    log_path = tmp_path / "snakemake.log"
    cmd = slurm_snakemake(workdir, Path("out"), "--allowed-rules", "train", targets=targets, configfile=config)
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(cmd, env=slurm_env, cwd=workdir, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            cancelled = cancel_after_checkpoint(proc, log_path, last_ckpt)
            proc.wait(timeout=RUN_TIMEOUT + 60)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # Snakemake cancels its Slurm jobs on SIGINT
                proc.wait(timeout=60)
    log = log_path.read_text()
    assert proc.returncode == 0, f"rc {proc.returncode}:\n{log[-6000:]}"

    # Slurm ran the training job twice: cancelled, then resubmitted by Snakemake and completed
    jobs = submitted(log)
    assert [slurm_id for _, slurm_id, _ in jobs][0] == cancelled and len(jobs) == 2, jobs
    states = {row["JobId"]: row["JobState"] for row in slurm.records(run_uuid(log))}
    assert states == {cancelled: "CANCELLED", jobs[1][1]: "COMPLETED"}, states
    # the second attempt resumed from the first one's checkpoint instead of starting again
    train_log = (workdir / "out" / experiment / "logs" / "train" / f"{run}_seed0.log").read_text()
    assert f"resuming from {last_ckpt.relative_to(workdir)}" in train_log, train_log[-3000:]

    names = [p.relative_to(Path("out")) for p in train_outputs(Path("out"), experiment, run)]
    assert_same_files(workdir / "out", reference / "out", names)


def cancel_after_checkpoint(proc: subprocess.Popen, log_path: Path, last_ckpt: Path, timeout: float = 900) -> str:
    """Wait until the Slurm training job has written ``last_ckpt``, then ``scancel`` it while it still
    runs. Returns its Slurm job id."""
    deadline = time.monotonic() + timeout
    while not last_ckpt.exists():
        if proc.poll() is not None:
            pytest.fail(f"Snakemake ended (rc {proc.returncode}) before a checkpoint:\n{log_path.read_text()[-5000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no checkpoint after {timeout} s:\n{log_path.read_text()[-5000:]}")
        time.sleep(0.05)
    jobs = submitted(log_path.read_text())
    assert len(jobs) == 1, jobs
    slurm_id = jobs[0][1]
    state = subprocess.run(["squeue", "-h", "-j", slurm_id, "-o", "%T"], capture_output=True, text=True).stdout.strip()
    assert state == "RUNNING", f"job {slurm_id} is {state!r}, not running, at its first checkpoint: give it more steps"
    subprocess.run(["scancel", slurm_id], check=True)
    return slurm_id
