"""Resource records (``PODYN_STATS_DIR``, read by bench/pipeline.py): one per job of the DAG,
none replacing another's."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from podyn.cli import build_parser, record_name

REPO = Path(__file__).resolve().parents[1]


def name_of(*argv: str) -> str:
    return record_name(build_parser().parse_args(list(argv)))


def test_every_job_of_a_stage_gets_its_own_record():
    common = ["--config", "{}", "--data", "d", "--sft", "s", "--out", "o", "--metrics", "m", "--workdir", "w"]
    # the reward model and the judge model (judge.type: reward_model) are both `podyn reward-model` jobs
    assert name_of("reward-model", *common) == "reward-model"
    assert name_of("reward-model", *common, "--split", "prefs_train") == "reward-model"
    assert name_of("reward-model", *common, "--split", "judge_prefs") == "reward-model_judge_prefs"
    # one concat job per run's dynamics table
    assert name_of("concat", "--inputs", "a.csv", "--out", "dynamics/dpo.csv") == "concat_dpo"
    assert name_of("concat", "--inputs", "a.csv", "--out", "dynamics/ppo.csv") == "concat_ppo"
    assert name_of("sft", "--config", "{}", "--data", "d", "--base", "b", "--out", "o", "--workdir", "w") == "sft"


SNAKEMAKE_LOG = """\
Execute 1 jobs...

[Fri Nov 27 21:15:32 2026]
localrule sft:
    output: results/default/models/sft
    jobid: 5
    reason: Missing output files: results/default/models/sft
    threads: 2
    resources: tmpdir=/tmp
[Fri Nov 27 21:15:42 2026]
Finished jobid: 5 (Rule: sft)
1 of 4 steps (25%) done
Execute 2 jobs...

[Fri Nov 27 21:15:42 2026]
localrule train:
    jobid: 7
    wildcards: run=dpo, seed=0
    priority: 1
    resources: tmpdir=/tmp
[Fri Nov 27 21:15:42 2026]
localrule judge:
    jobid: 8
    resources: tmpdir=/tmp
[Fri Nov 27 21:15:52 2026]
Finished jobid: 8 (Rule: judge)
[Fri Nov 27 21:16:02 2026]
Finished jobid: 7 (Rule: train)
Execute 1 jobs...

[Fri Nov 27 21:16:02 2026]
localrule winrates:
    jobid: 9
    resources: tmpdir=/tmp
[Fri Nov 27 21:16:05 2026]
Finished jobid: 9 (Rule: winrates)
"""


def test_pipeline_cpu_reads_core_occupancy_from_the_snakemake_log(monkeypatch):
    """bench/pipeline_cpu.py: jobs, threads and times from Snakemake's log, and the idle
    core-seconds by phase (on 2 cores: sft holds both for 10 s; train 20 s and judge 10 s beside
    it leave one core idle for 10 s; winrates alone leaves one idle for 3 s)."""
    spec = importlib.util.spec_from_file_location("bench_pipeline_cpu", REPO / "bench" / "pipeline_cpu.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # its dataclass looks its module up there
    spec.loader.exec_module(bench)
    jobs = bench.snakemake_jobs(SNAKEMAKE_LOG)
    assert [(j.rule, j.threads, j.start, j.end) for j in jobs] == [
        ("sft", 2, 0, 10),
        ("judge", 1, 10, 20),
        ("train", 1, 10, 30),
        ("winrates", 1, 30, 33),
    ]
    assert bench.idle_core_seconds(jobs, 2, 0, 33) == 13
    assert bench.occupancy(jobs, 2).endswith(
        "jobs held 53 of 66 core-s; idle 13 core-s: 0 before the first training job (10 s),"
        " 10 while training jobs ran (20 s), 3 after the last one (3 s)"
    )
