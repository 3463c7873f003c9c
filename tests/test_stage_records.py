"""Resource records (``PODYN_STATS_DIR``, read by bench/pipeline.py): one per job of the DAG,
none replacing another's."""

from __future__ import annotations

from podyn.cli import build_parser, record_name


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
