"""Warm start: a local Snakemake run pays the imports of torch, transformers and Lightning once,
not once per job.

A default training job spends about 7.8 of its 25 to 35 s importing them
(``bench/import_time.py``), every other torch job 5 to 7.5 s. For a local run the workflow starts,
before its first job, one server per thread count that its jobs use (``python -m
podyn.warm_start SOCKET``). Each imports every stage's modules, then listens on a Unix socket.
A ``podyn`` command that finds the servers' directory in ``$PODYN_WARM_START`` connects to the
server of its thread count and sends its arguments, working directory, environment and standard
streams instead of importing; the server forks, and the child runs the command as ``podyn`` would
(the same entry point, streams, directory and environment) and sends back its exit status. The
command waits for it, forwards the signals it receives to the child, and exits with that status.

Why the results cannot change: the child is a copy of a process that has done nothing but import,
under the environment a cold job of the same thread count imports under. Snakemake sets
``OMP_NUM_THREADS`` and five others per job (OpenMP and OpenBLAS read them when they load),
hence one server per thread count; a command whose environment differs anywhere else is
declined and runs cold. Every stage seeds what it draws from; Python's and numpy's global
generators are reseeded in every child, as a fresh process seeds them. A test runs the tiny DAG
warm and cold and compares every output byte for byte (``tests/test_warm_start.py``).

Where it is used: local runs on Linux with ``warm_start: true`` (the default). Never on a
cluster, where every job runs in its own allocation, and not on macOS, where forking a process
that has loaded these libraries is not safe.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import importlib
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "PODYN_WARM_START"  # the servers' directory; unset: every command runs cold
# set by Snakemake for each job to its thread count; OpenMP, OpenBLAS, MKL and numexpr read them when they load
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
# set by Snakemake for each job to its `tmpdir` resource, by default the system's temporary directory
TMPDIR_VARS = ("TMPDIR", "TMP", "TEMP", "TEMPDIR")
# set by the shell that runs a job's command
IGNORED_VARS = frozenset({"PWD", "OLDPWD", "SHLVL", "_"})
STARTUP_TIMEOUT_S = 120.0  # a torch command waits this long for a server that is still importing
_LENGTH = struct.Struct("!Q")
_INT = struct.Struct("!i")


def supported() -> bool:
    """Forking a process that has loaded torch is safe on Linux only."""
    return sys.platform.startswith("linux")


def socket_path(directory: str | Path, threads: str) -> Path:
    return Path(directory) / f"threads-{threads}.sock"


def _starting_path(directory: str | Path, threads: str) -> Path:
    """Exists while that server imports; holds its pid."""
    return Path(directory) / f"threads-{threads}.starting"


# ----------------------------------------------------------------------------- the workflow's side


@dataclass
class Servers:
    directory: Path
    processes: list[subprocess.Popen]

    def stop(self) -> None:
        """Stop the servers (by their own pids) and remove their sockets; running children finish."""
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(self.directory, ignore_errors=True)
        if os.environ.get(ENV_VAR) == str(self.directory):
            del os.environ[ENV_VAR]


def start_servers(thread_counts: Iterable[int], log_dir: Path) -> Servers:
    """Start one server per thread count (in the background: they import while the first jobs
    run) and point this process's future children at them through ``$PODYN_WARM_START``."""
    directory = Path(tempfile.mkdtemp(prefix="podyn-warm-"))  # mode 0700: only this user connects
    log_dir.mkdir(parents=True, exist_ok=True)
    os.environ[ENV_VAR] = str(directory)
    processes = []
    for threads in sorted(set(thread_counts)):
        # the environment Snakemake gives a job with this many threads
        env = {**os.environ, **dict.fromkeys(THREAD_VARS, str(threads))}
        env.update(dict.fromkeys(TMPDIR_VARS, tempfile.gettempdir()))
        with open(log_dir / f"threads-{threads}.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "podyn.warm_start", str(socket_path(directory, str(threads)))],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C reaches the jobs, not the servers they fork from
            )
        _starting_path(directory, str(threads)).write_text(str(proc.pid))
        processes.append(proc)
    return Servers(directory, processes)


# ----------------------------------------------------------------------------- the server


def preload() -> None:
    """Import what every stage imports: each stage's entry module (see podyn.registry)."""
    from . import cli  # noqa: F401
    from .registry import STAGES

    for stage in STAGES.values():
        importlib.import_module(stage.entry.split(":")[0])
    if any(stage.torch for stage in STAGES.values()):
        import transformers  # noqa: F401  # cli._quiet_libraries imports it in every torch job


def serve(path: Path) -> None:
    """Import, then fork a child for every request, until the workflow that started this ends."""
    started, env = time.perf_counter(), dict(os.environ)
    preload()
    gc.freeze()  # the imported objects stay shared with the children instead of being copied
    # what the imports set (Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK, torch TORCHINDUCTOR_CACHE_DIR):
    # a cold command's imports would set the same in its environment
    set_by_imports = {k: v for k, v in os.environ.items() if env.get(k) != v}
    parent = os.getppid()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the children
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(64)
    path.with_suffix(".starting").unlink(missing_ok=True)
    print(f"warm start: {path} ready after {time.perf_counter() - started:.1f} s of imports", flush=True)
    while os.getppid() == parent:  # the workflow is gone (even killed): stop
        if select.select([listener], [], [], 1.0)[0]:
            conn, _ = listener.accept()
            _handle(conn, listener, env, set_by_imports)
    path.unlink(missing_ok=True)
    shutil.rmtree(path.parent, ignore_errors=True)


@dataclass
class _Request:
    argv: list[str]
    cwd: str
    env: dict[str, str]
    fds: list[int]


def _receive(conn: socket.socket) -> _Request:
    header, fds, _, _ = socket.recv_fds(conn, _LENGTH.size, 3)
    header += _receive_exactly(conn, _LENGTH.size - len(header))
    body = _receive_exactly(conn, _LENGTH.unpack(header)[0])
    return _Request(**json.loads(body), fds=fds)


def _receive_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the command hung up")
        data += chunk
    return data


def env_difference(server: dict[str, str], command: dict[str, str]) -> list[str]:
    """Names of the variables (never their values: they may hold keys) that differ."""
    keys = (server.keys() | command.keys()) - IGNORED_VARS
    return sorted(k for k in keys if server.get(k) != command.get(k))


def _handle(conn: socket.socket, listener: socket.socket, env: dict[str, str], set_by_imports: dict[str, str]) -> None:
    try:
        request = _receive(conn)
    except (OSError, ValueError, TypeError) as err:
        print(f"warm start: a malformed request ({err}) was dropped", flush=True)
        conn.close()
        return
    if difference := env_difference(env, request.env):
        conn.sendall(b"D" + ", ".join(difference).encode())
        _close(conn, request.fds)
        return
    if pid := os.fork():
        print(f"warm start: podyn {' '.join(request.argv[:1])} in process {pid}", flush=True)
        _close(conn, request.fds)
        return
    code = 1  # whatever happens in the child, it must not return into the server's loop
    try:
        listener.close()
        request.env.update(set_by_imports)
        code = _run_child(conn, request)
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def _close(conn: socket.socket, fds: list[int]) -> None:
    conn.close()
    for fd in fds:
        os.close(fd)


# ----------------------------------------------------------------------------- the child


def _run_child(conn: socket.socket, request: _Request) -> int:
    """Become the command: its streams, directory, environment and fresh random state; run it."""
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for target, fd in enumerate(request.fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", buffering=1 if os.isatty(1) else -1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, errors="backslashreplace", closefd=False)  # noqa: SIM115
    os.chdir(request.cwd)
    os.environ.clear()
    os.environ.update(request.env)
    sys.argv = ["podyn", *request.argv]
    _reseed_global_generators()
    conn.sendall(b"P" + _INT.pack(os.getpid()))
    threading.Thread(target=_die_with_command, args=(conn,), daemon=True).start()
    code = _run_command(request.argv)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    conn.sendall(b"X" + _INT.pack(code))
    return code


def _reseed_global_generators() -> None:
    """Python's `random` reseeds itself in a forked child; numpy's global generator, which a fresh
    process seeds from the OS, does not."""
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()


def _die_with_command(conn: socket.socket) -> None:
    """The command is gone (killed with SIGKILL, say): so is its job."""
    if not conn.recv(1):
        os.kill(os.getpid(), signal.SIGKILL)


def _run_command(argv: list[str]) -> int:
    """`podyn <argv>` in this process, with the exit status Python gives a script."""
    from .cli import main

    try:
        return main(argv)
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            return exit_.code or 0
        print(exit_.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        traceback.print_exc()
        return 128 + signal.SIGINT
    except BaseException:
        traceback.print_exc()
        return 1


# ----------------------------------------------------------------------------- the command's side


def run_in_server(argv: list[str], torch_stage: bool) -> int | None:
    """Run ``podyn <argv>`` in a server's child and return its exit status; None where no server
    takes it (none running, still importing for a cheap command, or a different environment): the
    caller then runs it cold."""
    directory = os.environ.get(ENV_VAR)
    if not directory or not supported():
        return None
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    path = socket_path(directory, threads)
    if torch_stage:  # its own imports would take longer than waiting for the server's
        _wait_for_server(directory, threads)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(str(path))
        _send(client, argv)
        if _receive_exactly(client, 1) != b"P":
            declined = client.recv(65536).decode()
            print(f"podyn: warm start declined (environment differs: {declined}); running cold", file=sys.stderr)
            client.close()
            return None
        pid = _INT.unpack(_receive_exactly(client, _INT.size))[0]
    except OSError:  # no server, or it hung up before forking: cold
        client.close()
        return None
    with client:  # the child runs the command: from here on its exit status is the command's
        return _wait_for_child(client, pid)


def _wait_for_server(directory: str, threads: str) -> None:
    starting = _starting_path(directory, threads)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while starting.exists() and time.monotonic() < deadline:
        try:
            os.kill(int(starting.read_text()), 0)
        except (OSError, ValueError):
            return  # the server died while importing (its log says why)
        time.sleep(0.05)


def _send(client: socket.socket, argv: list[str]) -> None:
    for fd in (0, 1, 2):  # a closed standard stream becomes /dev/null, as the child needs all three
        try:
            os.fstat(fd)
        except OSError:
            os.dup2(os.open(os.devnull, os.O_RDWR), fd)
    body = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    socket.send_fds(client, [_LENGTH.pack(len(body))], [0, 1, 2])
    client.sendall(body)


def _wait_for_child(client: socket.socket, pid: int) -> int:
    forwarded: list[int] = []

    def forward(sig: int, _frame) -> None:
        forwarded.append(sig)
        os.kill(pid, sig)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, forward)
    reply = b""
    while chunk := client.recv(1 + _INT.size - len(reply)):
        reply += chunk
        if len(reply) == 1 + _INT.size:
            return _INT.unpack(reply[1:])[0]
    if forwarded:  # the child died of the signal it was sent: so does this process
        signal.signal(forwarded[-1], signal.SIG_DFL)
        os.kill(os.getpid(), forwarded[-1])
    print(f"podyn: the job's process {pid} ended without an exit status (killed?)", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m podyn.warm_start", description=__doc__.split("\n\n")[0])
    parser.add_argument("socket", type=Path, help="the Unix socket to listen on (threads-<n>.sock)")
    serve(parser.parse_args(argv).socket)


if __name__ == "__main__":
    main()
