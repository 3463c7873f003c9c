"""The typed config and the stage registry: one source of defaults (the models), a schema
generated from them and committed up to date, stage excerpts validated against the keys the
stage declares, and a command line derived from the registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from podyn.cli import build_parser, main
from podyn.config import (
    SCHEMA_PATH,
    Config,
    ConfigError,
    DPOConfig,
    excerpt,
    excerpt_model,
    load_config,
    resolve_run,
    schema_text,
    validate_config,
    validate_excerpt,
)
from podyn.registry import STAGES, stage_config

REPO = Path(__file__).resolve().parents[1]


def test_committed_schema_is_generated_from_the_models():
    assert SCHEMA_PATH.read_text() == schema_text(), (
        "run `python -m podyn.config --write-schema` and commit the schema"
    )


def _documented_defaults(schema: dict[str, Any], node: dict[str, Any]) -> Any:
    """The defaults the schema documents for ``node``: its own ``default``, else those of its
    properties (following ``$ref``)."""
    if "default" in node:
        return node["default"]
    if "$ref" in node:
        return _documented_defaults(schema, schema["$defs"][node["$ref"].rsplit("/", 1)[1]])
    return {name: _documented_defaults(schema, prop) for name, prop in node.get("properties", {}).items()}


def test_empty_config_is_the_documented_defaults(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing set\n")
    cfg = load_config(empty)
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    documented = _documented_defaults(schema, schema)
    assert cfg.model_dump(mode="json", by_alias=True) == documented
    assert cfg == validate_config(documented) == Config()
    # every key of every section has a default and help text in the schema
    for name, node in schema["$defs"].items():
        for key, prop in node.get("properties", {}).items():
            assert "description" in prop or "$ref" in prop, f"{name}.{key} has no help text"


def test_defaults_that_used_to_disagree():
    cfg = Config()
    assert cfg.trainer.checkpoint_every_n_steps == 50
    assert cfg.ppo.missing_eos_penalty == 1.0
    assert cfg.figures.ablation_panels["c"].runs == ["cdpo_1", "cdpo_2", "cdpo_3"]


def test_beta_reaches_the_objective_under_its_name(tiny_raw):
    """YAML ``dpo.beta`` -> typed ``DPOConfig.beta`` -> ``dpo_terms(..., beta=...)``; a run's
    override is validated as the objective's section."""
    cfg = validate_config(
        {
            **tiny_raw,
            "runs": {"dpo": {"objective": "dpo"}, "hot": {"objective": "dpo", "overrides": {"beta": 0.9}}},
            "select": None,
        }
    )
    assert isinstance(resolve_run(cfg, "dpo").hyper, DPOConfig)
    assert resolve_run(cfg, "dpo").hyper.beta == tiny_raw["dpo"]["beta"]
    assert resolve_run(cfg, "hot").hyper.beta == 0.9
    source = (REPO / "src" / "podyn" / "training" / "dpo.py").read_text()
    assert "beta=self.hyper.beta" in source


def test_excerpt_round_trip_and_validation(tiny_cfg):
    keys = STAGES["train"].keys("dpo", "dpo")
    raw = json.loads(stage_config(tiny_cfg, "train", "dpo"))
    assert set(raw) == {"model", "trainer", "generation", "dpo", "runs"}
    assert set(raw["runs"]) == {"dpo"} and "label" not in raw["runs"]["dpo"]
    part = validate_excerpt(raw, keys, "--config")
    assert part.dpo == tiny_cfg.dpo and part.model == tiny_cfg.model
    assert resolve_run(part, "dpo").hyper == resolve_run(tiny_cfg, "dpo").hyper
    with pytest.raises(AttributeError):
        _ = part.ppo  # a section the stage does not read is not there
    # keys the stage does not read, and bad values, are errors naming the key
    with pytest.raises(ConfigError, match=r"--config: invalid value at '<top level>': unknown key 'judge'"):
        validate_excerpt({**raw, "judge": {}}, keys, "--config")
    with pytest.raises(ConfigError, match=r"--config: invalid value at 'dpo.beta': .*got -1"):
        validate_excerpt({**raw, "dpo": {**raw["dpo"], "beta": -1}}, keys, "--config")
    # a nested key: the judge stage reads only data.synthetic.length_penalty of `data`
    judge = json.loads(stage_config(tiny_cfg, "judge"))
    assert judge["data"] == {"synthetic": {"length_penalty": tiny_cfg.data.synthetic.length_penalty}}
    assert excerpt(tiny_cfg, ("dpo.batch_size",)) == {"dpo": {"batch_size": tiny_cfg.dpo.batch_size}}


def test_every_stage_entry_point_and_keys_exist(tiny_cfg):
    import importlib
    import inspect

    for stage in STAGES.values():
        module, function = stage.entry.split(":")
        if stage.torch:  # importing the torch stages costs seconds each: check the file only
            path = REPO / "src" / Path(*module.split(".")).with_suffix(".py")
            assert f"def {function}(" in path.read_text(), stage.entry
        else:
            entry = getattr(importlib.import_module(module), function)
            params = inspect.signature(entry).parameters
            assert {a.dest for a in stage.args} <= set(params), stage.name
        keys = stage.keys("dpo", "dpo") if stage.per_run else stage.keys()
        passed = json.loads(stage_config(tiny_cfg, stage.name, "dpo" if stage.per_run else None))
        # keys of PASSED_WHEN_SET are left out while at their default, and the stage fills the default back
        assert passed == excerpt(tiny_cfg, tuple(k for k in keys if k != "runs.dpo.ppo_factors"))
        assert validate_excerpt(passed, keys, "rule").model_dump() == excerpt_model(keys).model_validate(
            excerpt(tiny_cfg, keys)
        ).model_dump()


def test_ppo_factors_reach_the_rule_only_when_set(tiny_raw):
    """A key added after results existed must not change the rules' params while unset (Snakemake
    would rerun every training job); set, it is passed."""
    from podyn.registry import PASSED_WHEN_SET

    assert PASSED_WHEN_SET == ("runs.{run}.ppo_factors",)
    plain = validate_config(tiny_raw)
    assert "ppo_factors" not in stage_config(plain, "train", "ppo")
    raw = {**tiny_raw, "runs": {**tiny_raw["runs"], "ppo": {"objective": "ppo", "ppo_factors": {"kl_coef": 0.5}}}}
    passed = json.loads(stage_config(validate_config(raw), "train", "ppo"))
    assert passed["runs"]["ppo"]["ppo_factors"] == {"clip_eps": None, "kl_coef": 0.5}


def test_cli_help_per_stage(capsys):
    parser = build_parser()
    assert set(parser._subparsers._group_actions[0].choices) == set(STAGES)
    with pytest.raises(SystemExit):
        main(["judge", "--help"])
    out = capsys.readouterr().out
    assert "Config keys read: judge, winrate, data.synthetic.length_penalty" in out
    assert "--scores-out" in out and "per-prompt scores" in out


def test_cli_rejects_an_excerpt_with_a_bad_value(tmp_path, capsys):
    cfg = json.dumps({"judge": {"type": "oracle"}})
    argv = [
        "judge",
        "--config",
        cfg,
        "--run",
        "dpo",
        "--seed",
        "0",
        "--generations",
        "g",
        "--baseline",
        "b",
        "--out",
        str(tmp_path / "o.csv"),
        "--cache",
        "c",
    ]
    assert main(argv) == 2
    assert (
        "podyn judge: error: --config: invalid value at 'judge.type': Input should be 'gold', 'openai' or "
        "'reward_model', got 'oracle'" in capsys.readouterr().err
    )


def test_seeds_from_the_snakemake_command_line():
    assert validate_config({"seeds": ["0", "1", "2"]}).seeds == [0, 1, 2]
    with pytest.raises(ConfigError, match="'seeds.0'"):
        validate_config({"seeds": ["zero"]})


def test_snakefile_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, podyn.config, podyn.registry; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


def test_bfloat16_finite_difference_is_refused_with_the_key_named(tmp_path):
    """A central difference in bfloat16 measured G with a relative error of about 1 (H200 and CPU),
    so the combination is a config error, not a silent wrong figure."""
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"dynamics": {"dtype": "bfloat16", "method": "finite_difference"}}))
    with pytest.raises(ConfigError, match="dynamics.dtype bfloat16 with dynamics.method finite_difference"):
        load_config(path)
    path.write_text(yaml.safe_dump({"dynamics": {"dtype": "bfloat16", "method": "jvp"}}))
    assert load_config(path).dynamics.dtype == "bfloat16"


def test_show_merges_files_like_snakemake_and_reports_errors(tmp_path, capsys):
    from podyn.config import main as config_main

    mine = tmp_path / "mine.yaml"
    mine.write_text("dpo: {beta: 0.25}\n")
    assert config_main(["--show", str(REPO / "config.yaml"), str(mine)]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["dpo"]["beta"] == 0.25 and shown["dpo"]["max_steps"] == 300  # the rest from config.yaml
    mine.write_text("dpo: {beta: -1}\n")
    assert config_main(["--show", str(mine)]) == 2
    assert f"{mine}: invalid value at 'dpo.beta'" in capsys.readouterr().err
