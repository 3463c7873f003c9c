"""Bad input gets a clear error naming the config key or the file and line, both from the
library and from the ``podyn`` command line (exit code 2); and the HH-RLHF loader on the
real test file."""

from __future__ import annotations

import copy
import gzip
import io
import json
import os
import re
import zipfile
from pathlib import Path

import pytest
import yaml

from conftest import TINY_CONFIG, podyn_exe, run_cmd, write_config
from podyn.config import ConfigError, DataConfig, check_workflow_runs, load_config, read_yaml, validate_config
from podyn.data import load_split
from podyn.data.formats import split_dialogue, split_pair
from podyn.data.sources import load_role
from podyn.io import DataError, read_jsonl, read_torch

HH_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"


# ----------------------------------------------------------------------------- config


def _broken(tiny_raw, mutate):
    cfg = copy.deepcopy(tiny_raw)
    mutate(cfg)
    return cfg


@pytest.mark.parametrize(
    "mutate, key, detail",
    [
        (lambda c: c["dpo"].update(beta=-1), "'dpo.beta'", "-1"),
        (lambda c: c["dpo"].update(betta=0.1), "'dpo'", "betta"),
        (lambda c: c.update(seeed=1), "<top level>", "seeed"),
        (lambda c: c["sft"].update(max_steps="10"), "'sft.max_steps'", "integer"),
        (lambda c: c["runs"]["dpo"].setdefault("weights", {}).update(pos={"value": 1}), "'runs.dpo.weights.pos'", ""),
        (lambda c: c["runs"]["dpo"].setdefault("weights", {}).update(pos="often"), "'runs.dpo.weights.pos'", "often"),
        (
            lambda c: c["runs"]["dpo"].setdefault("weights", {}).update(pos={"wave": {"period": 0, "amplitude": 0.1}}),
            "'runs.dpo.weights.pos.wave.period'",
            "",
        ),
        (lambda c: c["runs"]["dpo"].setdefault("weights", {}).update(poss=1), "'runs.dpo.weights'", "poss"),
        (lambda c: c["runs"]["dpo"].update(objective="kto"), "'runs.dpo.objective'", "kto"),
        (
            lambda c: c["runs"]["dpo"].update(overrides={"clip_eps": 0.1}),
            "'runs.dpo.overrides.clip_eps'",
            "not a key of 'dpo'",
        ),
        (lambda c: c["runs"]["dpo"].update(overrides={"beta": -3}), "'runs.dpo.overrides.beta'", "-3"),
        (lambda c: c["runs"]["ppo"].update(overrides={"iterations": 0}), "'runs.ppo.overrides.iterations'", "0"),
        (lambda c: c.update(select=["nope"]), "'select'", "nope"),
        (
            lambda c: c["data"]["synthetic"].update(train_mix={"copy": 1, "shuffle": 1}),
            "'data.synthetic.train_mix'",
            "shuffle",
        ),
        (lambda c: c["model"]["arch"].update(hidden_size=0), "'model.arch.hidden_size'", ""),
        # values each key accepts alone, refused together (they crashed later, or silently did nothing)
        (lambda c: c["model"]["arch"].update(num_heads=3), "'model.arch.num_heads'", "do not divide"),
        (lambda c: c["data"]["synthetic"].update(min_len=8, max_len=3), "'data.synthetic.min_len'", "max_len 3"),
        (
            lambda c: c["data"]["synthetic"].update(train_mix={"copy": 0.0, "reverse": 0.0, "sort": 0.0}),
            "'data.synthetic.train_mix'",
            "at least one of them > 0",
        ),
        (
            lambda c: c["data"]["synthetic"].update(pref_lazy_prob_range=[0.9, 0.2]),
            "'data.synthetic.pref_lazy_prob_range'",
            "not a range",
        ),
        (lambda c: c["dpo"].update(beta=float("nan")), "'dpo.beta'", "finite"),
        (  # a period of 2 iterations scaled to 0.2: the same weight at every whole iteration
            lambda c: (
                c["ppo"].update(step_scale=0.1),
                c["runs"]["ppo"].update(weights={"pos": {"wave": {"period": 2, "amplitude": 0.08}}}),
            ),
            "'runs.ppo.weights.pos'",
            "same weight 1.08 at each of the run's 4 steps (period 0.2 steps",
        ),
        (
            lambda c: c["runs"]["ppo"].update(ppo_factors={"clip_eps": {"wave": {"period": 4, "amplitude": 1.5}}}),
            "'runs.ppo.ppo_factors.clip_eps'",
            "makes ppo.clip_eps -0.1 at step 2; it must stay > 0",
        ),
        (
            lambda c: c["runs"]["ppo"].update(ppo_factors={"kl_coef": -1.0}),
            "'runs.ppo.ppo_factors.kl_coef'",
            "it must stay >= 0",
        ),
        (
            lambda c: c["runs"]["ppo"].update(weights={"top": {"wave": {"period": 4, "amplitude": float("nan")}}}),
            "'runs.ppo.weights.top",
            "finite",
        ),
        (lambda c: c["dpo"].update(max_grad_norm=float("inf")), "'dpo.max_grad_norm'", "finite"),
        (lambda c: c["runs"]["dpo"].update(cdpo={"t1": 8000.0, "t2": 100.0}), "'runs.dpo.cdpo.t2'", "before"),
        (
            lambda c: c["runs"]["dpo"].update(cdpo={"t1": 100.0, "t2": 100.0, "reading": "linear"}),
            "'runs.dpo.cdpo.t2'",
            "strictly before",
        ),
        (
            lambda c: c["runs"]["dpo"].update(controller={"w_min": 3.0, "w_max": 1.0}),
            "'runs.dpo.controller.w_max'",
            "below w_min",
        ),
        (
            lambda c: c.update(data={"source": "local", "path": "mine.jsonl", "format": "trl_standard"}),
            "'data.roles.sft'",
            "paper's dataset",
        ),
    ],
)
def test_config_error_names_key(tiny_raw, mutate, key, detail):
    with pytest.raises(ConfigError) as info:
        validate_config(_broken(tiny_raw, mutate), "my.yaml")
    message = str(info.value)
    assert message.startswith("my.yaml: invalid value at ")
    assert key in message
    assert detail in message


@pytest.mark.parametrize(
    "mutate, key, detail",
    [
        (lambda c: c["dynamics"].update(runs=["dpo", "nope"]), "'dynamics.runs'", "nope"),
        (lambda c: c.setdefault("figures", {}).update(dpo_run="dop"), "'figures.dpo_run'", "dop"),
        (lambda c: c.setdefault("figures", {}).update(ppo_run="dpo"), "'figures.ppo_run'", "not a ppo run"),
        (lambda c: c.update(select=["dpo"]), "'figures.ppo_run'", "not in 'select'"),
    ],
)
def test_workflow_run_names_are_checked(tiny_raw, mutate, key, detail):
    """Run names the workflow looks up: a misspelled dynamics run was silently dropped, a figure's
    run failed as a missing input file."""
    check_workflow_runs(validate_config(tiny_raw))
    with pytest.raises(ConfigError) as info:
        check_workflow_runs(validate_config(_broken(tiny_raw, mutate)), "my.yaml")
    assert str(info.value).startswith(f"my.yaml: invalid value at {key}") and detail in str(info.value)


def test_valid_configs_pass_and_get_defaults(tiny_raw):
    cfg = validate_config(copy.deepcopy(tiny_raw))
    assert cfg.ppo.clip_eps == 0.2  # a default filled in
    assert cfg.judge.type == "gold"
    validate_config(yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text()))


def test_load_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiment: x\nruns: {dpo: {objective: dpo}\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    assert load_config(TINY_CONFIG).experiment == "tiny"
    repeated = tmp_path / "repeated.yaml"
    repeated.write_text("dpo: {beta: 0.9}\nseed: 1\ndpo: {lr: 0.002}\n")  # the second block would drop beta
    with pytest.raises(ConfigError, match=r"key 'dpo' given twice \(first on line 1\)[\s\S]*line 3"):
        load_config(repeated)
    anchored = tmp_path / "anchored.yaml"  # a merge key's keys may be overridden: not a repetition
    anchored.write_text("experiment: anchored\nx-dpo: &d {beta: 0.3, lr: 0.001}\ndpo:\n  <<: *d\n  beta: 0.4\n")
    assert read_yaml(anchored)["dpo"] == {"beta": 0.4, "lr": 0.001}


def test_own_data_with_every_role_given_passes(tiny_raw):
    """Roles given with rows only take data.path and data.format."""
    ranges = {"sft": (0, 20), "prefs_train": (20, 40), "prefs_heldout": (60, 20), "test": (80, 20)}
    roles = {role: {"start": start, "n": n} for role, (start, n) in ranges.items()}
    raw = {**tiny_raw, "data": {"source": "local", "path": "mine.jsonl", "format": "trl_standard", "roles": roles}}
    assert validate_config(raw).data.roles.test.start == 80


# ----------------------------------------------------------------------------- data rows


def test_read_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n\n{"prompt": "a", "chosen": "b"\n')
    with pytest.raises(DataError) as info:
        read_jsonl(path)
    assert f"{path}:3:" in str(info.value) and "not valid JSON" in str(info.value)

    path.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": "b"}\n')
    with pytest.raises(DataError, match=rf"{path}:2: missing field 'rejected'"):
        read_jsonl(path, {"prompt": str, "chosen": str, "rejected": str})

    path.write_text('{"prompt": "a", "chosen": 3, "rejected": "c"}\n')
    with pytest.raises(DataError, match=rf"{path}:1: field 'chosen' should be str, got int"):
        read_jsonl(path, {"prompt": str, "chosen": str, "rejected": str})

    path.write_text('["a", "b"]\n')
    with pytest.raises(DataError, match=rf"{path}:1: expected a JSON object"):
        read_jsonl(path)


def test_unreadable_data_files_name_the_file(tmp_path):
    damaged = tmp_path / "damaged.jsonl.gz"
    body = gzip.compress(b"".join(b'{"a": %d}\n' % i for i in range(5000)))
    damaged.write_bytes(body[:200] + bytes(b ^ 0xFF for b in body[200:400]) + body[400:])  # a corrupt stream
    with pytest.raises(DataError, match=rf"{re.escape(str(damaged))}(:\d+)?: cannot read \(zlib.error"):
        read_jsonl(damaged)
    gz = tmp_path / "rows.jsonl.gz"
    gz.write_bytes(gzip.compress(b'{"a": 1}\n' * 1000)[:60])  # cut short: the gzip stream has no end
    with pytest.raises(DataError, match=rf"{gz}(:\d+)?: cannot read \(EOFError"):
        read_jsonl(gz)
    gz.write_text("not gzip\n")
    with pytest.raises(DataError, match=rf"{gz}: cannot read \(gzip.BadGzipFile"):
        read_jsonl(gz)
    latin = tmp_path / "rows.jsonl"
    latin.write_bytes(b'{"a": "caf\xe9"}\n')
    with pytest.raises(DataError, match=rf"{latin}: cannot read \(UnicodeDecodeError"):
        read_jsonl(latin)
    with pytest.raises(DataError, match=rf"{tmp_path}: cannot read \(IsADirectoryError"):
        read_jsonl(tmp_path)


def test_damaged_resume_checkpoints_name_the_file(tmp_path):
    import torch

    from podyn.training.resume import AtomicCheckpointIO, check_checkpoint

    whole = tmp_path / "whole.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 3, "w": torch.arange(4.0)}, whole)
    check_checkpoint(whole)
    assert AtomicCheckpointIO().load_checkpoint(whole)["global_step"] == 3
    body = whole.read_bytes()
    cut = tmp_path / "last.ckpt"
    cut.write_bytes(body[: len(body) // 2])  # a copy cut short: the zip directory at the end is gone
    with pytest.raises(DataError, match=rf"{re.escape(str(cut))}: not a complete checkpoint .*delete it"):
        check_checkpoint(cut)
    # the archive intact, its pickled record damaged: the load names the file, without torch's
    # advice to load with weights_only=False
    damaged = tmp_path / "damaged.ckpt"
    with zipfile.ZipFile(whole) as source, zipfile.ZipFile(damaged, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            data = source.read(info)
            target.writestr(info, b"\xff" * len(data) if info.filename.endswith("data.pkl") else data)
    check_checkpoint(damaged)
    expected = rf"{re.escape(str(damaged))}: cannot read: its pickled record is damaged.*; if it is damaged, delete it"
    with pytest.raises(DataError, match=expected) as info:
        AtomicCheckpointIO().load_checkpoint(damaged)
    assert "weights_only" not in str(info.value)
    with pytest.raises(DataError, match=rf"{re.escape(str(damaged))}: cannot read: .*rerun the stage") as info:
        read_torch(damaged)  # the same message for a stage's own torch files
    assert "weights_only" not in str(info.value)
    with pytest.raises(DataError, match=rf"{re.escape(str(tmp_path))}: a directory, not a checkpoint file"):
        check_checkpoint(tmp_path)


def test_load_split_checks_rows(tmp_path):
    (tmp_path / "test.jsonl").write_text('{"prompt": "p1"}\n{"prompt": "p2"}\n{"question": "p3"}\n')
    with pytest.raises(DataError, match=r"test.jsonl:3: missing field 'prompt'"):
        load_split(tmp_path, "test")
    (tmp_path / "test.jsonl").write_text('{"prompt": "p1"}\n{"prompt": "p2"}\n')
    assert load_split(tmp_path, "test")["prompt"] == ["p1", "p2"]


def _hh(path, role="prefs_train"):
    data = {
        "source": "local",
        "path": str(path),
        "format": "hh_rlhf",
        "shuffle": False,
        "on_bad_row": "error",
        "roles": {role: {}},
    }
    return load_role(DataConfig.model_validate(data), role, seed=0, log=io.StringIO())


def test_hh_rlhf_bad_rows(tmp_path):
    path = tmp_path / "hh.jsonl.gz"
    good = {"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go away"}
    with gzip.open(path, "wt") as f:
        f.write(
            json.dumps(good)
            + "\n"
            + json.dumps({"chosen": "\n\nHuman: hi\n\nAssistant: a", "rejected": "\n\nHuman: bye\n\nAssistant: b"})
            + "\n"
        )
    with pytest.raises(DataError, match="row 2: field 'rejected': chosen and rejected share no prompt"):
        _hh(path)
    with gzip.open(path, "wt") as f:
        f.write(json.dumps(good) + "\n" + json.dumps({"chosen": "no turns here", "rejected": "x"}) + "\n")
    with pytest.raises(DataError, match="row 2"):
        _hh(path)
    assert split_dialogue(good["chosen"]) == ("\n\nHuman: hi\n\nAssistant:", " hello")
    # a response that contains a turn marker of its own stays in the response
    odd = "\n\nHuman: hi\n\nAssistant: hello Human: and?\n\nAssistant: more"
    assert split_pair(odd, good["rejected"]) == (
        "\n\nHuman: hi\n\nAssistant:",
        " hello Human: and?\n\nAssistant: more",
        " go away",
    )


@pytest.mark.skipif(not HH_TEST.exists(), reason=f"{HH_TEST} not present")
def test_hh_rlhf_harmless_test_file():
    """Every row cut into prompt and responses; the few bad rows (an empty response, equal
    responses) are reported as bad but still cut the same way."""
    from podyn.data.formats import RowError, map_row

    raw = read_jsonl(HH_TEST)
    pairs, bad = [], 0
    for row in raw:
        try:
            pairs.append(map_row(row, "hh_rlhf", "pref"))
        except RowError:
            bad += 1
            pairs.append(dict(zip(("prompt", "chosen", "rejected"), split_pair(row["chosen"], row["rejected"]))))
    assert len(pairs) == 2312 and bad < 20
    for pair, row in zip(pairs, raw):
        assert pair["prompt"].endswith("\n\nAssistant:")
        assert pair["prompt"].startswith("\n\nHuman:")
        # chosen and rejected share the prompt: each is the prompt plus its own response
        assert pair["prompt"] + pair["chosen"] == row["chosen"]
        assert pair["prompt"] + pair["rejected"] == row["rejected"]
    # a few responses carry a turn marker of their own; the prompt still ends at the shared turn
    assert 0 < sum("\n\nAssistant:" in p["chosen"] + p["rejected"] for p in pairs) < 20
    prompts = [map_row(row, "hh_rlhf", "prompt")["prompt"] for row in raw]
    assert prompts == [p["prompt"] for p in pairs]


# ----------------------------------------------------------------------------- command line


def test_cli_config_error_exit_code_2(tmp_path, tiny_raw, env):
    cfg = _broken(tiny_raw, lambda c: c["dpo"].update(beta=-1))
    path = write_config(tmp_path / "broken.yaml", cfg)
    proc = run_cmd([*podyn_exe(), "prepare-data", "--config", str(path), "--out", str(tmp_path / "data")], env)
    assert proc.returncode == 2, proc.stderr
    assert f"podyn prepare-data: error: {path}: invalid value at 'dpo.beta'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "data").exists()


def test_cli_data_error_exit_code_2(tmp_path, capsys):
    """In-process ``podyn.cli.main`` (the console script's function; the subprocess test above
    covers the process exit code)."""
    from podyn.cli import main

    baseline = tmp_path / "sft.jsonl"
    baseline.write_text(json.dumps({"step": 0, "prompt_index": 0, "prompt": "p", "response": "r"}) + "\n")
    generations = tmp_path / "gens.jsonl"
    generations.write_text(
        json.dumps({"step": 2, "prompt_index": 0, "prompt": "p", "response": "r"})
        + "\n"
        + '{"step": 2, "prompt_index": "zero"}\n'
    )
    cfg = json.dumps(
        {"judge": {"type": "gold"}, "winrate": {"bootstrap_samples": 10, "confidence": 0.95}}
    )  # an excerpt
    argv = [
        "judge",
        "--config",
        cfg,
        "--run",
        "dpo",
        "--seed",
        "0",
        "--generations",
        str(generations),
        "--baseline",
        str(baseline),
        "--out",
        str(tmp_path / "out.csv"),
        "--cache",
        str(tmp_path / "cache.jsonl"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"podyn judge: error: {generations}:2:" in err
    assert "prompt_index" in err
    assert not (tmp_path / "out.csv").exists()


# ----------------------------------------------------------------------------- writes


class _Saves:
    def __init__(self, text: str, fail: bool = False) -> None:
        self.text, self.fail = text, fail

    def save_pretrained(self, directory) -> None:
        (Path(directory) / "weights.txt").write_text(self.text)
        if self.fail:
            raise RuntimeError("disk full")


def test_atomic_writes_keep_the_umask_modes_and_leave_nothing_behind(tmp_path):
    """Outputs get the modes of a plain open() or mkdir() under the process's umask (mkstemp and
    mkdtemp would make them private to their owner, unreadable to a group sharing the results); a
    failed save keeps the old model."""
    from podyn.io import save_pretrained_atomic, write_text

    previous = os.umask(0o027)
    try:
        (tmp_path / "plain.csv").write_text("a\n")
        (tmp_path / "plain").mkdir()
        write_text(tmp_path / "table.csv", "a\n")
        save_pretrained_atomic(tmp_path / "model", _Saves("old"))
    finally:
        os.umask(previous)
    mode = lambda name: (tmp_path / name).stat().st_mode & 0o777  # noqa: E731
    assert mode("table.csv") == mode("plain.csv") == 0o640 and mode("model") == mode("plain") == 0o750
    with pytest.raises(RuntimeError, match="disk full"):
        save_pretrained_atomic(tmp_path / "model", _Saves("new", fail=True))
    assert (tmp_path / "model" / "weights.txt").read_text() == "old"
    save_pretrained_atomic(tmp_path / "model", _Saves("new"))
    assert (tmp_path / "model" / "weights.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "plain", "plain.csv", "table.csv"]  # no temporary
