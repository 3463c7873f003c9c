"""Configuration: loading, schema validation with defaults, and run resolution.

The schema is ``workflow/schemas/config.schema.yaml``; the Snakefile validates the user's
config against it at start-up, and so does every entry point that is handed a whole
config file.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .schedules import WEIGHT_KEYS, scale_steps

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A malformed configuration; the message names the offending key."""


def _with_defaults(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _key_path(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    return path or "<top level>"


def validate_config(cfg: dict[str, Any], source: str = "config", schema_path: Path = SCHEMA_PATH) -> dict[str, Any]:
    """Validate ``cfg`` in place, filling defaults; raise :class:`ConfigError` naming the key."""
    schema = yaml.safe_load(schema_path.read_text())
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        err = jsonschema.exceptions.best_match(errors)
        raise ConfigError(f"{source}: invalid value at '{_key_path(err)}': {err.message}")
    for name, run in cfg["runs"].items():
        objective, overrides = run["objective"], run.get("overrides", {})
        for key in overrides:
            if key not in cfg[objective]:
                raise ConfigError(f"{source}: invalid value at 'runs.{name}.overrides.{key}': not a key of '{objective}'")
        # an override's value must be valid where the objective's section would accept it
        section_schema = {**schema, "required": [], "properties": {objective: schema["properties"][objective]}}
        err = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(section_schema).iter_errors({objective: copy.deepcopy(overrides)}))
        if err is not None:
            where = ".".join(str(p) for p in list(err.absolute_path)[1:])
            raise ConfigError(f"{source}: invalid value at 'runs.{name}.overrides.{where}': {err.message}")
    if cfg["judge"]["type"] == "reward_model" and (cfg["data"]["source"] == "synthetic" or not cfg["data"]["roles"].get("judge_prefs")):
        raise ConfigError(f"{source}: invalid value at 'judge.type': 'reward_model' needs data.roles.judge_prefs (hf or local data)")
    if cfg["model"]["build_checkpoint"] and cfg["model"]["init"] != "pretrained":
        raise ConfigError(f"{source}: invalid value at 'model.build_checkpoint': the built checkpoint is loaded by model.init 'pretrained'")
    for name in cfg.get("select", []):
        if name not in cfg["runs"]:
            raise ConfigError(f"{source}: invalid value at 'select': run {name!r} is not defined under 'runs'")
    return cfg


def load_config(source: str | Path) -> dict[str, Any]:
    """A config from a YAML/JSON file path or an inline JSON string. A whole config (one with
    ``experiment``) is validated and completed with defaults; a stage's excerpt, as the
    Snakemake rules pass, was validated by the Snakefile already."""
    text = str(source)
    if text.lstrip().startswith("{"):
        cfg, where = json.loads(text), "--config"
    else:
        path = Path(text)
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        try:
            cfg = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        where = str(path)
    if not isinstance(cfg, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    return validate_config(cfg, where) if "experiment" in cfg else cfg


def selected_runs(cfg: dict[str, Any]) -> list[str]:
    return list(cfg.get("select") or cfg["runs"])


def resolve_run(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    """A run's objective, hyper-parameters (its objective's section with the run's overrides)
    and component-weight specs with step-valued keys multiplied by ``step_scale``."""
    run = cfg["runs"][name]
    objective = run["objective"]
    hyper = {**cfg[objective], **run.get("overrides", {})}
    weights = {k: scale_steps(v, hyper["step_scale"]) for k, v in run.get("weights", {}).items() if k in WEIGHT_KEYS}
    return {"name": name, "objective": objective, "hyper": hyper, "weights": weights, "label": run.get("label", name)}


def results_root(cfg: dict[str, Any]) -> Path:
    return Path(cfg.get("results_dir", "results")) / cfg["experiment"]
