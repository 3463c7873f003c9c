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
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import REPO, TRAIN_OUTPUTS, podyn_exe, run_cmd, snakemake, train_cmd, write_config
from podyn import warm_start

pytestmark = pytest.mark.skipif(not warm_start.supported(), reason="warm start forks: Linux only")


def job_environment() -> dict[str, str]:
    """The environment Snakemake gives a 1-thread job (this process's, plus its per-job variables)."""
    env = {**os.environ, **dict.fromkeys(warm_start.THREAD_VARS, "1")}
    env.update(dict.fromkeys(warm_start.TMPDIR_VARS, tempfile.gettempdir()))
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server (1 thread), ready, and the environment of a 1-thread job that uses it."""
    logs = tmp_path_factory.mktemp("warm_logs")
    servers = warm_start.start_servers({1}, logs)
    try:
        job_env = job_environment()
        del os.environ[warm_start.ENV_VAR]  # this process and the other tests' commands stay cold
        wait_for(warm_start.ready_path(warm_start.socket_path(servers.directory, "1")))
        yield job_env, logs / "threads-1.log"
    finally:
        servers.stop()
    assert all(proc.poll() is not None for proc in servers.processes)
    assert not servers.directory.exists()


def cold_env(job_env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in job_env.items() if k != warm_start.ENV_VAR}


def forked(log: Path, stage: str) -> list[int]:
    """Pids of the children the server forked for `podyn <stage>` (logged before the command hears of it)."""
    return [int(pid) for pid in re.findall(rf"podyn {stage} in process (\d+)", log.read_text())]


def test_a_warm_command_gives_the_cold_ones_outputs(server, tmp_path, tiny_raw):
    job_env, log = server
    config = write_config(tmp_path / "tiny.yaml", tiny_raw)
    before = {stage: len(forked(log, stage)) for stage in ("prepare-data", "base-model")}
    for mode, env in (("cold", cold_env(job_env)), ("warm", job_env)):
        for stage in ("prepare-data", "base-model"):
            proc = run_cmd([*podyn_exe(), stage, "--config", str(config), "--out", str(tmp_path / mode / stage)], env)
            assert proc.returncode == 0, proc.stderr
            assert "declined" not in proc.stderr
    assert {stage: len(forked(log, stage)) - n for stage, n in before.items()} == {"prepare-data": 1, "base-model": 1}
    cold, warm = tmp_path / "cold", tmp_path / "warm"
    files = sorted(p.relative_to(cold) for p in cold.rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(warm) for p in warm.rglob("*") if p.is_file())
    assert [f for f in files if (cold / f).read_bytes() != (warm / f).read_bytes()] == []


def test_exit_status_and_output_equal_the_cold_commands(server, tmp_path):
    """Errors, usage and help: the same exit status, stdout and stderr warm as cold."""
    job_env, log = server
    missing = tmp_path / "missing.yaml"
    commands = {
        "base-model": ["base-model", "--config", str(missing), "--out", str(tmp_path / "m")],  # exit 2, one line
        "no-such-stage": ["no-such-stage"],  # argparse: usage, exit 2
        "sft": ["sft", "--help"],  # exit 0, help on stdout
    }
    for stage, args in commands.items():
        before = len(forked(log, stage))
        warm, cold = run_cmd([*podyn_exe(), *args], job_env), run_cmd([*podyn_exe(), *args], cold_env(job_env))
        assert len(forked(log, stage)) == before + 1
        assert (warm.returncode, warm.stdout, warm.stderr) == (cold.returncode, cold.stdout, cold.stderr)
    assert cold.returncode == 0 and "Config keys read:" in cold.stdout


def test_a_different_environment_is_declined_and_runs_cold(server, tmp_path, tiny_raw):
    job_env, log = server
    config = write_config(tmp_path / "tiny.yaml", tiny_raw)
    env = {**job_env, "PODYN_TEST_SECRET": "value-never-shown"}
    before = len(forked(log, "prepare-data"))
    proc = run_cmd([*podyn_exe(), "prepare-data", "--config", str(config), "--out", str(tmp_path / "d")], env)
    assert proc.returncode == 0, proc.stderr
    assert "warm start declined (differs: PODYN_TEST_SECRET); running cold" in proc.stderr
    assert "value-never-shown" not in proc.stderr + log.read_text()
    assert (tmp_path / "d").is_dir() and len(forked(log, "prepare-data")) == before


def test_a_server_that_died_while_importing_costs_nothing(tmp_path, tiny_raw):
    """A command finds its server's socket but nobody behind it: it runs cold at once."""
    servers = warm_start.start_servers({1}, tmp_path / "logs")
    try:
        job_env = job_environment()
        del os.environ[warm_start.ENV_VAR]
        wait_for(warm_start.socket_path(servers.directory, "1"))  # bound: it imports now
        servers.processes[0].kill()
        servers.processes[0].wait()
        config = write_config(tmp_path / "tiny.yaml", tiny_raw)
        started = time.monotonic()
        proc = run_cmd([*podyn_exe(), "base-model", "--config", str(config), "--out", str(tmp_path / "b")], job_env)
        assert proc.returncode == 0, proc.stderr
        assert time.monotonic() - started < 60  # its own imports, not a wait for the dead server
        assert "in process" not in (tmp_path / "logs" / "threads-1.log").read_text()
    finally:
        servers.stop()


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


@contextmanager
def training(cmd: list[str], env: dict[str, str], workdir: Path, sigint_ignored: bool = False):
    """`cmd` (a long `podyn sft`) started, and training (Lightning's logger has made its directory);
    killed on the way out if it still runs. It starts with SIGINT ignored or not: a shell's background
    commands inherit it ignored (so did this suite's, started with `nohup ... &`), and Python then
    leaves it ignored."""
    sigint = signal.SIG_IGN if sigint_ignored else signal.SIG_DFL
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGINT, sigint),
    )
    try:
        wait_for(workdir / "csv")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def interrupted(cmd: list[str], env: dict[str, str], workdir: Path, sig: int, sigint_ignored: bool) -> int | None:
    """The exit status of `cmd` sent `sig` while it trains, or None if it still runs 15 s later."""
    with training(cmd, env, workdir, sigint_ignored) as proc:
        time.sleep(0.5)
        assert proc.poll() is None
        proc.send_signal(sig)
        try:
            return proc.wait(timeout=15 if sigint_ignored else 60)
        except subprocess.TimeoutExpired:
            return None


@pytest.mark.parametrize(
    ("sig", "sigint_ignored"),
    [(signal.SIGTERM, False), (signal.SIGINT, False), (signal.SIGINT, True), (signal.SIGKILL, False)],
)
def test_a_signal_to_the_command_reaches_its_job(server, tmp_path, tiny_raw, sig, sigint_ignored):
    """SIGTERM and SIGINT are forwarded: the job handles them as the cold command does (Lightning stops
    training on either), and the command ends with the cold command's status. A SIGINT that the command
    inherited ignored is ignored by the job too, as by a cold command: both train on. SIGKILL cannot be
    forwarded: the job ends when the server sees the command's socket close."""
    job_env, log = server
    cmd = long_sft(tmp_path, tiny_raw)
    before = len(forked(log, "sft"))
    warm = interrupted(cmd, job_env, tmp_path / "work", sig, sigint_ignored)
    child = forked(log, "sft")[before:]
    assert len(child) == 1
    assert gone(child[0]), f"job {child[0]} still runs after its command ended"
    if sig == signal.SIGKILL:
        assert warm == -signal.SIGKILL
    else:
        cold_cmd = [*cmd[:-1], str(tmp_path / "cold_work")]
        cold = interrupted(cold_cmd, cold_env(job_env), tmp_path / "cold_work", sig, sigint_ignored)
        assert warm == cold
        assert (warm is None) == sigint_ignored


def test_the_job_ignores_what_its_command_inherited_ignored(server, tmp_path, tiny_raw):
    """SIGINT sent to the job itself (not through its command), which started with SIGINT ignored: the
    job ignores it, as a cold command does (the case above: it trains on)."""
    job_env, log = server
    cmd = long_sft(tmp_path, tiny_raw)
    before = len(forked(log, "sft"))
    with training(cmd, job_env, tmp_path / "work", sigint_ignored=True) as proc:
        (child,) = forked(log, "sft")[before:]
        os.kill(child, signal.SIGINT)
        time.sleep(5)
        assert proc.poll() is None and not gone(child, timeout=0.1)


def test_a_job_killed_by_a_signal_ends_its_command_with_it(server, tmp_path, tiny_raw):
    """The command reports its job's wait status as its own: killed by SIGKILL (as by the OOM killer)."""
    job_env, log = server
    cmd = long_sft(tmp_path, tiny_raw)
    before = len(forked(log, "sft"))
    with training(cmd, job_env, tmp_path / "work") as proc:
        (child,) = forked(log, "sft")[before:]
        os.kill(child, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL


@pytest.mark.slow
def test_a_two_process_run_started_warm_equals_it_cold(server, tmp_path, tiny_raw, assets):
    """Lightning starts rank 1 from ``__main__`` (as ``python <script> <args>``): the warm child's
    ``__main__`` is the script's, and rank 1, whose environment Lightning extends, runs cold."""
    job_env, log = server
    cfg = {**tiny_raw, "trainer": {**tiny_raw["trainer"], "strategy": "ddp", "devices": 2, "accelerator": "cpu"}}
    cfg["dpo"] = {**tiny_raw["dpo"], "max_steps": 4, "checkpoint_every": 2, "eval_every": 2}
    config = write_config(tmp_path / "ddp.yaml", cfg)
    before = len(forked(log, "train"))
    for mode, env in (("cold", cold_env(job_env)), ("warm", job_env)):
        proc = run_cmd(train_cmd("dpo", 0, config, assets, tmp_path / mode), env, timeout=400)
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert "MEMBER: 2/2" in proc.stdout + proc.stderr  # rank 1 joined
    assert len(forked(log, "train")) == before + 1  # rank 0 of the warm run
    for name in TRAIN_OUTPUTS.values():
        if name != "timing.csv":  # wall-clock
            # checkpoints.json names paths under the run's own directory
            warm, cold = (
                (tmp_path / mode / "out" / name).read_text().replace(str(tmp_path / mode), "")
                for mode in ("warm", "cold")
            )
            assert warm == cold, name


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
