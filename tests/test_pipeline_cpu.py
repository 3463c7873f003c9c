"""bench/pipeline_cpu.py's core occupancy: jobs, threads and times read from Snakemake's log,
and the core-seconds no job held; bench/pipeline.py's warning for jobs that ran cold."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "pipeline_cpu.py"

# As Snakemake 9 writes a local run's log; `threads:` is left out for one thread. The judge job's
# block puts `threads:` before `jobid:`, and a `Finished` line names a job that never started here
# (a log cut at its start): neither may change what is read. The run crosses midnight.
LOG = """\
Provided cores: 2
Rules claiming more threads will be scaled down.
Execute 1 jobs...

[Fri Nov 27 23:59:32 2026]
localrule sft:
    output: results/default/models/sft
    jobid: 5
    reason: Missing output files: results/default/models/sft
    threads: 2
    resources: tmpdir=/tmp
[Fri Nov 27 23:59:42 2026]
Finished jobid: 5 (Rule: sft)
1 of 4 steps (25%) done
[Fri Nov 27 23:59:42 2026]
Finished jobid: 3 (Rule: base_model)
Execute 2 jobs...

[Fri Nov 27 23:59:42 2026]
localrule train:
    jobid: 7
    wildcards: run=dpo, seed=0
    priority: 1
    resources: tmpdir=/tmp
[Fri Nov 27 23:59:42 2026]
localrule judge:
    threads: 1
    jobid: 8
    resources: tmpdir=/tmp
[Fri Nov 27 23:59:52 2026]
Finished jobid: 8 (Rule: judge)
[Sat Nov 28 00:00:02 2026]
Finished jobid: 7 (Rule: train)
Execute 1 jobs...

[Sat Nov 28 00:00:02 2026]
localrule winrates:
    jobid: 9
    resources: tmpdir=/tmp
[Sat Nov 28 00:00:05 2026]
Finished jobid: 9 (Rule: winrates)
"""


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_pipeline_cpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_jobs_threads_and_times_from_the_log(bench):
    assert [(j.rule, j.threads, j.start, j.end) for j in bench.snakemake_jobs(LOG)] == [
        ("sft", 2, 0, 10),
        ("judge", 1, 10, 20),
        ("train", 1, 10, 30),
        ("winrates", 1, 30, 33),
    ]
    assert bench.provided_cores(LOG) == 2


def test_idle_core_seconds_by_phase(bench):
    """On 2 cores: sft holds both for 10 s; train (20 s) and judge (10 s) beside it leave one
    core idle for 10 s; winrates alone leaves one idle for 3 s."""
    jobs = bench.snakemake_jobs(LOG)
    assert bench.idle_core_seconds(jobs, 2, 0, 33) == 13
    assert bench.idle_core_seconds(jobs, 2, 10, 25) == 5
    assert bench.occupancy(jobs, 2).endswith(
        "jobs held 53 of 66 core-s; idle 13 core-s: 0 before the first training job (10 s),"
        " 10 while training jobs ran (20 s), 3 after the last one (3 s)"
    )
    without_training = [j for j in jobs if j.rule != "train"]
    # without it: one core idle 10-20 s, both 20-30 s, one 30-33 s
    assert bench.occupancy(without_training, 2).endswith("idle 33 core-s: 33 in all (33 s)")


def test_pipeline_names_the_jobs_that_ran_cold(tmp_path):
    """bench/pipeline.py warns when jobs declined warm start (their times include the imports)."""
    spec = importlib.util.spec_from_file_location("bench_pipeline", BENCH.with_name("pipeline.py"))
    pipeline = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = pipeline
    try:
        spec.loader.exec_module(pipeline)
        logs = tmp_path / "default" / "logs"
        (logs / "train").mkdir(parents=True)
        declined = "podyn: warm start declined (differs: sys.path, sys.executable); running cold"
        (logs / "sft.log").write_text(f"{declined}\n[podyn] sft ...\n")
        (logs / "train" / "dpo_seed0.log").write_text(f"{declined}\n")
        (logs / "judge.log").write_text("judge: 0 requests sent\n")
        cold = ["default/logs/sft.log", "default/logs/train/dpo_seed0.log"]
        assert pipeline.cold_job_logs(tmp_path) == {declined: cold}
    finally:
        del sys.modules[spec.name]
