"""Warm start (podyn.warm_start): a command forked from a server that has imported torch once gives
what the same command gives cold, byte for byte, with the same exit status, streams and signals;
a command whose environment differs is declined and runs cold; the tiny DAG warm equals it cold."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import REPO, podyn_exe, run_cmd, snakemake, write_config
from podyn import warm_start

pytestmark = pytest.mark.skipif(not warm_start.supported(), reason="warm start forks: Linux only")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server (1 thread), and the environment Snakemake would give a 1-thread job beside it."""
    logs = tmp_path_factory.mktemp("warm_logs")
    servers = warm_start.start_servers({1}, logs)
    wait_for(warm_start.socket_path(servers.directory, "1"))  # a cheap command would not wait for it
    job_env = {**os.environ, **dict.fromkeys(warm_start.THREAD_VARS, "1")}
    job_env.update(dict.fromkeys(warm_start.TMPDIR_VARS, tempfile.gettempdir()))
    del os.environ[warm_start.ENV_VAR]  # this process and the other tests' commands stay cold
    yield job_env, logs / "threads-1.log"
    servers.stop()
    assert all(proc.poll() is not None for proc in servers.processes)
    assert not servers.directory.exists()


def cold_env(job_env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in job_env.items() if k != warm_start.ENV_VAR}


def forked(log: Path, stage: str) -> list[int]:
    """Pids of the children the server forked for `podyn <stage>`."""
    return [int(pid) for pid in re.findall(rf"podyn {stage} in process (\d+)", log.read_text())]


def test_a_warm_command_gives_the_cold_ones_outputs(server, tmp_path, tiny_raw):
    job_env, log = server
    config = write_config(tmp_path / "tiny.yaml", tiny_raw)
    for mode, env in (("cold", cold_env(job_env)), ("warm", job_env)):
        for stage in ("prepare-data", "base-model"):
            proc = run_cmd([*podyn_exe(), stage, "--config", str(config), "--out", str(tmp_path / mode / stage)], env)
            assert proc.returncode == 0, proc.stderr
            assert "declined" not in proc.stderr
    assert len(forked(log, "prepare-data")) == 1 and len(forked(log, "base-model")) == 1
    cold, warm = tmp_path / "cold", tmp_path / "warm"
    files = sorted(p.relative_to(cold) for p in cold.rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(warm) for p in warm.rglob("*") if p.is_file())
    assert [f for f in files if (cold / f).read_bytes() != (warm / f).read_bytes()] == []


def test_exit_status_and_error_messages_pass_through(server, tmp_path):
    job_env, log = server
    missing = tmp_path / "missing.yaml"
    proc = run_cmd([*podyn_exe(), "base-model", "--config", str(missing), "--out", str(tmp_path / "m")], job_env)
    assert proc.returncode == 2
    assert f"podyn base-model: error: config file not found: {missing}" in proc.stderr
    proc = run_cmd([*podyn_exe(), "no-such-stage"], job_env)
    assert proc.returncode == 2 and "invalid choice: 'no-such-stage'" in proc.stderr
    proc = run_cmd([*podyn_exe(), "sft", "--help"], job_env)
    assert proc.returncode == 0 and "Config keys read:" in proc.stdout
    assert len(forked(log, "no-such-stage")) == 1


def test_a_different_environment_is_declined_and_runs_cold(server, tmp_path, tiny_raw):
    job_env, log = server
    config = write_config(tmp_path / "tiny.yaml", tiny_raw)
    env = {**job_env, "PODYN_TEST_SECRET": "value-never-shown"}
    proc = run_cmd([*podyn_exe(), "prepare-data", "--config", str(config), "--out", str(tmp_path / "d")], env)
    assert proc.returncode == 0, proc.stderr
    assert "warm start declined (environment differs: PODYN_TEST_SECRET); running cold" in proc.stderr
    assert "value-never-shown" not in proc.stderr + log.read_text()
    assert (tmp_path / "d").is_dir()


def long_sft(tmp_path: Path, tiny_raw: dict) -> list[str]:
    """`podyn sft` for far longer than a test waits, on data and a base model made cold."""
    cfg = {**tiny_raw, "sft": {**tiny_raw["sft"], "max_steps": 100_000}}
    config = write_config(tmp_path / "long.yaml", cfg)
    for stage in ("prepare-data", "base-model"):
        subprocess.run([*podyn_exe(), stage, "--config", str(config), "--out", str(tmp_path / stage)], check=True)
    return [
        *podyn_exe(), "sft", "--config", str(config), "--data", str(tmp_path / "prepare-data"),
        "--base", str(tmp_path / "base-model"), "--out", str(tmp_path / "sft"), "--workdir", str(tmp_path / "work"),
    ]  # fmt: skip


def wait_for(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.1)


def gone(pid: int, timeout: float = 10) -> bool:
    """The process ended (the server's children are reaped by the kernel: no zombie stays)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def interrupted(cmd: list[str], env: dict[str, str], workdir: Path, sig: int) -> int:
    """The exit status of `cmd` sent `sig` while it trains (once Lightning's logger has made its directory)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(workdir / "csv")
    time.sleep(0.5)
    assert proc.poll() is None
    proc.send_signal(sig)
    return proc.wait(timeout=60)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_a_signal_to_the_command_reaches_its_job(server, tmp_path, tiny_raw, sig):
    """SIGTERM and SIGINT are forwarded: the job handles them as the cold command does (Lightning stops
    training and exits 0 on SIGTERM, 1 on SIGINT), with the same exit status. SIGKILL cannot be
    forwarded: the job ends when the command's socket closes."""
    job_env, log = server
    cmd = long_sft(tmp_path, tiny_raw)
    before = len(forked(log, "sft"))
    warm = interrupted(cmd, job_env, tmp_path / "work", sig)
    child = forked(log, "sft")[before:]
    assert len(child) == 1
    assert gone(child[0]), f"job {child[0]} still runs after {sig!r} to its command"
    if sig == signal.SIGKILL:
        assert warm == -signal.SIGKILL
    else:
        cold = interrupted([*cmd[:-1], str(tmp_path / "cold_work")], cold_env(job_env), tmp_path / "cold_work", sig)
        assert warm == cold


@pytest.mark.slow
def test_the_tiny_dag_warm_equals_it_cold(e2e, env, tmp_path):
    """The session's tiny DAG ran warm (the default); the same DAG cold gives the same files."""
    _, warm_results = e2e
    results = tmp_path / "cold"
    proc = run_cmd(
        snakemake(tmp_path, "--cores", "2", "--config", f"results_dir={results}", "warm_start=False"),
        env,
        cwd=tmp_path,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    # every torch job was forked from the server of its thread count: none imported torch itself
    servers = warm_results / "tiny" / "logs" / "warm_start"
    assert sorted(p.name for p in servers.iterdir()) == ["threads-1.log", "threads-2.log"]
    assert len(forked(servers / "threads-1.log", "train")) == 2  # dpo and ppo, 1 thread each
    assert len(forked(servers / "threads-2.log", "sft")) == 1  # the stages that take every core
    job_logs = [p.read_text() for p in (warm_results / "tiny" / "logs").rglob("*.log")]
    assert not any("warm start declined" in text for text in job_logs)
    assert not (results / "tiny" / "logs" / "warm_start").exists()
    script = REPO / "scripts" / "compare_results.py"
    compare = [sys.executable, str(script), str(warm_results / "tiny"), str(results / "tiny")]
    proc = run_cmd([*compare, "--ignore", "logs/warm_start/*"], env)
    assert proc.returncode == 0, proc.stdout[-5000:]
