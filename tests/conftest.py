"""Shared fixtures: the tiny config, a subprocess environment that finds ``podyn`` and stays
offline, and a session-wide set of tiny assets (data, base model, reward model, reference
log-probs) built in-process once for the tests that run single stages."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from podyn.cli import prepare_torch  # noqa: E402

prepare_torch(None)  # as every job does: torch work done in this process does not depend on a thread race

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "tests" / "configs" / "tiny.yaml"
SNAKEFILE = REPO / "Snakefile"
BIN = Path(sys.executable).parent


def podyn_exe() -> list[str]:
    """The ``podyn`` console script of this environment (``python -m podyn.cli`` as fallback)."""
    script = BIN / "podyn"
    return [str(script)] if script.exists() else [sys.executable, "-m", "podyn.cli"]


# the outputs of `podyn train`, by flag: one run's files under its output directory
TRAIN_OUTPUTS = {
    "generations": "generations.jsonl",
    "checkpoints": "checkpoints.json",
    "records": "records.csv",
    "metrics": "metrics.csv",
    "timing": "timing.csv",
}


def train_cmd(run: str, seed: int, config: Path, assets: dict, root: Path) -> list[str]:
    """`podyn train` of one run on the shared test assets: work directory ``root/work``, outputs
    under ``root/out``."""
    inputs = {
        "data": assets["data"],
        "sft": assets["base"],
        "reward": assets["reward"],
        "ref-logps": assets["ref_logps"],
    }
    paths = {**inputs, "workdir": root / "work", **{k: root / "out" / name for k, name in TRAIN_OUTPUTS.items()}}
    flags = [part for flag, path in paths.items() for part in (f"--{flag}", str(path))]
    return [*podyn_exe(), "train", "--config", str(config), "--run", run, "--seed", str(seed), *flags]


@pytest.fixture(scope="session")
def env() -> dict[str, str]:
    """Environment for subprocesses: this venv's bin first on PATH, offline, quiet."""
    e = dict(os.environ)
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    e.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    e.pop("PODYN_STATS_DIR", None)
    return e


def run_cmd(
    cmd: list[str], env: dict[str, str], cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_raw() -> dict:
    """The tiny config as written (no defaults filled)."""
    return yaml.safe_load(TINY_CONFIG.read_text())


@pytest.fixture
def tiny_cfg(tiny_raw):
    """The tiny config, validated and completed with the defaults (a typed :class:`podyn.config.Config`)."""
    from podyn.config import validate_config

    return validate_config(copy.deepcopy(tiny_raw), str(TINY_CONFIG))


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def assets(tmp_path_factory, tiny_raw) -> dict[str, Path]:
    """Tiny data, an untrained base model (used as the "SFT" policy and reference), a scalar
    model initialised from it (reward and value model) and its reference log-probs. Built
    in-process with the pipeline's stage functions; a few seconds."""
    from podyn.config import validate_config
    from podyn.io import save_pretrained_atomic
    from podyn.models import load_scalar_model, load_tokenizer
    from podyn.stages.base_model import base_model
    from podyn.stages.prepare_data import prepare_data
    from podyn.stages.reference_logps import reference_logps

    root = tmp_path_factory.mktemp("assets")
    cfg = validate_config({**copy.deepcopy(tiny_raw), "results_dir": str(root / "results")}, "tiny")
    prepare_data(cfg, out=root / "data")
    base_model(cfg, out=root / "base")
    save_pretrained_atomic(root / "reward", load_scalar_model(root / "base", cfg.model), load_tokenizer(root / "base"))
    reference_logps(cfg, data=root / "data", sft=root / "base", out=root / "ref_logps.pt")
    return {
        "root": root,
        "data": root / "data",
        "base": root / "base",
        "reward": root / "reward",
        "ref_logps": root / "ref_logps.pt",
    }


# ----------------------------------------------------------------------------- local OpenAI-compatible server


class JudgeServerHandle:
    """A running ``python -m podyn.judge_server`` process: its URL, its counters, its faults."""

    def __init__(self, proc: subprocess.Popen, url: str) -> None:
        self.proc, self.url = proc, url

    def _call(self, path: str, payload: dict | None = None) -> dict:
        import json
        import urllib.request

        data = None if payload is None else json.dumps(payload).encode()
        root = self.url.removesuffix("/v1")
        with urllib.request.urlopen(
            urllib.request.Request(root + path, data=data, method="GET" if data is None else "POST"), timeout=10
        ) as reply:
            return json.loads(reply.read())

    def stats(self) -> dict:
        return self._call("/_stats")

    def configure(self, **options) -> None:
        self._call("/_config", options)

    def fault_next(self, *kinds: str) -> None:
        self._call("/_faults", {"next": list(kinds)})

    def reset(self) -> None:
        self._call("/_reset", {})

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_judge_server(*args: str, env: dict[str, str] | None = None) -> JudgeServerHandle:
    import tempfile

    errors = tempfile.TemporaryFile()  # a file, not a pipe: a long run's tracebacks cannot block the server
    proc = subprocess.Popen(
        [sys.executable, "-m", "podyn.judge_server", *args], stdout=subprocess.PIPE, stderr=errors, text=True, env=env
    )
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        proc.wait()
        errors.seek(0)
        raise RuntimeError(f"judge server did not start: {line!r} {errors.read()[-2000:]!r}")
    return JudgeServerHandle(proc, line.split("listening on ", 1)[1].strip())


@pytest.fixture
def judge_server():
    """Start local OpenAI-compatible servers (``start(*cli_args)``); each is stopped by its own
    process handle when the test ends, passed or failed."""
    handles: list[JudgeServerHandle] = []

    def start(*args: str, env: dict[str, str] | None = None) -> JudgeServerHandle:
        handles.append(start_judge_server(*args, env=env))
        return handles[-1]

    yield start
    for handle in handles:
        handle.stop()


def snakemake(workdir: Path, *args: str, configfile: Path = TINY_CONFIG) -> list[str]:
    """A Snakemake command on the repository's Snakefile, run in ``workdir`` (so the checkout's
    config.yaml is not read and nothing is written into the checkout)."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(SNAKEFILE),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        *args,
    ]


@pytest.fixture(scope="session")
def e2e(tmp_path_factory, env) -> tuple[Path, Path]:
    """The whole DAG on the tiny config, run locally (about a minute on 2 cores); shared by the
    workflow tests and the Slurm tests, which compare their results with it."""
    workdir = tmp_path_factory.mktemp("e2e")
    results = workdir / "out"
    proc = run_cmd(
        snakemake(workdir, "--cores", "2", "--config", f"results_dir={results}"), env, cwd=workdir, timeout=900
    )
    logs = (
        "\n".join(f"== {p}\n{p.read_text()[-2000:]}" for p in sorted(results.rglob("*.log")))
        if results.exists()
        else ""
    )
    assert proc.returncode == 0, proc.stderr[-5000:] + logs
    return workdir, results
