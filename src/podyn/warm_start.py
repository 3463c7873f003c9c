"""Warm start: a local Snakemake run pays the imports of torch, transformers and Lightning once,
not once per job.

A default training job spends about 7.8 of its 25 to 35 s importing them
(``bench/import_time.py``), every other torch job 5 to 7.5 s. For a local run the workflow starts,
before its first job, one server per thread count that its jobs use (``python -m
podyn.warm_start SOCKET``). Each listens on a Unix socket, imports every stage's modules, and then
serves. A ``podyn`` command that finds the servers' directory in ``$PODYN_WARM_START`` sends the
server of its thread count its interpreter, ``sys.argv``, ``sys.path``, working directory, umask,
environment and standard streams instead of importing; the server forks, and the child runs the
command as the ``podyn`` script would (with a ``__main__`` like the script's, from which
Lightning starts the other ranks of a multi-process run). The server reaps the child and sends
the command its wait status; the command exits with it (or dies of the same signal), and
forwards the signals it receives to the child meanwhile.

Why the results do not change: the child is a copy of a process that has done nothing but
import, under the environment and ``sys.path`` that a cold job of the same thread count imports
under. Snakemake sets ``OMP_NUM_THREADS`` and five others per job (OpenMP and OpenBLAS read them
when they load), hence one server per thread count; a command whose environment, interpreter or
``sys.path`` differs in anything else is declined and runs cold (the other ranks of a multi-process
run, whose environment Lightning extends, run cold). The server checks before serving that the
imports left torch's generator unused, CUDA uninitialised and no Python thread running.
Python's and numpy's global generators are reseeded in each child, as a fresh process seeds them;
every stage seeds what it draws from. ``tests/test_warm_start.py`` runs the tiny DAG warm and cold
and compares every file (``scripts/compare_results.py``: byte for byte, but for what differs
between any two runs, such as logs and wall-clock times).

What does differ from a cold process: warnings raised while importing go to the server's log
(``logs/warm_start/``), not the job's; a job's peak resident memory counts the pages it shares
with the server.

Where it is used: local runs on Linux with ``warm_start: true`` (the default). Never on a
cluster, where every job runs in its own allocation, and not on macOS, where forking a process
that has loaded these libraries is not safe.

The protocol, on one stream connection per command: the command sends an 8-byte length and its
request (JSON) with its three standard streams attached (SCM_RIGHTS); the server answers
``DECLINED`` and the names of the variables that differ, or ``STARTED`` and the child's pid, and
later ``EXITED`` and the child's wait status. A command that hangs up takes its child with it.
"""

from __future__ import annotations

import argparse
import atexit
import builtins
import gc
import importlib
import io
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
import types
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
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
# the server's answers: one byte, then a 4-byte integer or the declined variables' names
DECLINED, STARTED, EXITED = b"D", b"S", b"E"
_REQUEST_LENGTH = struct.Struct("!Q")
_NUMBER = struct.Struct("!i")
STARTUP_TIMEOUT_S = 600.0  # a torch command waits this long for a server still importing, then runs cold
REQUEST_TIMEOUT_S = 10.0  # a command sends its request at once: one that stalls does not hold up the others
REAP_INTERVAL_S = 0.05  # how often the server looks for ended children


def supported() -> bool:
    """Forking a process that has loaded torch is safe on Linux only."""
    return sys.platform.startswith("linux")


def socket_path(directory: str | Path, threads: str) -> Path:
    """The socket of the server for jobs with ``OMP_NUM_THREADS=threads``."""
    return Path(directory) / f"threads-{threads}.sock"


def ready_path(socket: Path) -> Path:
    """Exists once that server has imported everything."""
    return socket.with_suffix(".ready")


# ----------------------------------------------------------------------------- the workflow's side


@dataclass
class Servers:
    directory: Path
    processes: list[subprocess.Popen[bytes]]

    def stop(self) -> None:
        """Stop the servers (by their own pids) and remove their sockets. A server lets the jobs it
        forked finish first (up to 10 s); jobs still running then run on without it."""
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
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
        command = [sys.executable, "-m", "podyn.warm_start", str(socket_path(directory, str(threads)))]
        with open(log_dir / f"threads-{threads}.log", "ab") as log:
            processes.append(
                subprocess.Popen(
                    command,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a Ctrl-C reaches the jobs (through their commands), not the servers
                )
            )
    return Servers(directory, processes)


# ----------------------------------------------------------------------------- the server


def preload() -> None:
    """Import what every stage imports: each stage's entry module (see podyn.registry)."""
    from . import cli  # noqa: F401
    from .registry import STAGES

    for stage in STAGES.values():
        importlib.import_module(stage.entry.split(":")[0])
    import transformers  # noqa: F401  # cli._quiet_libraries imports it in every torch job


def fork_safety_problems() -> list[str]:
    """What would make a child differ from a fresh process: state the imports should not have touched."""
    import torch

    problems = []
    fresh = torch.Generator().manual_seed(torch.initial_seed())
    if not torch.equal(fresh.get_state(), torch.get_rng_state()):
        problems.append("torch's default generator was drawn from")
    if torch.cuda.is_initialized():
        problems.append("CUDA is initialised")
    if threading.active_count() > 1:
        problems.append(f"{threading.active_count() - 1} Python threads run")
    return problems


def serve(path: Path) -> None:
    """Listen, import, then fork a child for every request, until the workflow that started this
    process ends (or it is sent SIGTERM: then it serves no one new and waits for its children)."""
    parent = os.getppid()  # before the imports: the workflow may end while they run
    started = time.perf_counter()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # bound before importing: a command that connects waits in the queue, and sees the connection
    # closed at once if this process dies
    listener.bind(str(path))
    listener.listen(128)
    env, sys_path = dict(os.environ), list(sys.path)
    preload()
    if problems := fork_safety_problems():
        print(f"warm start: not serving ({'; '.join(problems)}): every command runs cold", flush=True)
        return
    gc.freeze()  # the imported objects stay shared with the children instead of being copied
    # what the imports set (Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK, torch TORCHINDUCTOR_CACHE_DIR):
    # a cold command's imports would set the same in its environment
    set_by_imports = {k: v for k, v in os.environ.items() if env.get(k) != v}
    server = _Server(listener, env, sys_path, set_by_imports)
    signal.signal(signal.SIGTERM, lambda *_: server.close_listener())
    ready_path(path).touch()
    print(f"warm start: {path} ready after {time.perf_counter() - started:.1f} s of imports", flush=True)
    server.run(parent)
    path.unlink(missing_ok=True)
    if os.getppid() != parent:  # nobody is left to remove the directory
        shutil.rmtree(path.parent, ignore_errors=True)


@dataclass
class _Request:
    executable: str
    argv: list[str]
    ignored_signals: list[int]
    sys_path: list[str]
    cwd: str
    umask: int
    env: dict[str, str]
    fds: list[int]


class _Server:
    def __init__(self, listener: socket.socket, env: dict[str, str], sys_path: list[str], set_by_imports: dict):
        self.listener: socket.socket | None = listener
        self.env, self.sys_path, self.set_by_imports = env, sys_path, set_by_imports
        self.children: dict[int, socket.socket] = {}  # pid -> its command's connection

    def close_listener(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None

    def run(self, parent: int) -> None:
        while self.listener is not None or self.children:
            if os.getppid() != parent:  # the workflow is gone, even killed: serve no one new
                self.close_listener()
            sockets = [*self.children.values(), *([self.listener] if self.listener else [])]
            try:
                readable = select.select(sockets, [], [], REAP_INTERVAL_S)[0]
            except (OSError, ValueError):  # the listener was closed by SIGTERM meanwhile
                readable = []
            for sock in readable:
                if sock is self.listener:
                    self.accept()
                else:
                    self.hung_up(sock)
            self.reap()

    def accept(self) -> None:
        """One request; a failure costs that command a cold start, never the server."""
        try:
            conn, _ = self.listener.accept()
        except OSError as err:
            print(f"warm start: accept failed ({err})", flush=True)
            return
        try:
            conn.settimeout(REQUEST_TIMEOUT_S)
            request = _receive(conn)
        except Exception as err:  # noqa: BLE001  # malformed, or the command is gone
            print(f"warm start: a request failed ({type(err).__name__}: {err})", flush=True)
            conn.close()
            return
        if difference := self.difference(request):
            self.unserved(conn, request, DECLINED + ", ".join(difference).encode())
            return
        try:
            pid = os.fork()
        except OSError as err:  # no fork (memory): the command runs cold
            print(f"warm start: a request failed ({type(err).__name__}: {err})", flush=True)
            self.unserved(conn, request)
            return
        if pid == 0:
            self.become_child(conn, request)
        _close(request.fds)  # the child has them
        print(f"warm start: podyn {' '.join(request.argv[1:2])} in process {pid}", flush=True)
        self.children[pid] = conn
        try:
            conn.sendall(STARTED + _NUMBER.pack(pid))
        except OSError:  # its command is gone: so is the job
            self.hung_up(conn)

    @staticmethod
    def unserved(conn: socket.socket, request: _Request, answer: bytes = b"") -> None:
        """Leave a request to run cold: send ``answer`` (if any), close its streams and connection."""
        try:
            conn.sendall(answer)
        except OSError as err:  # the command is gone
            print(f"warm start: a request failed ({type(err).__name__}: {err})", flush=True)
        _close(request.fds)
        conn.close()

    def difference(self, request: _Request) -> list[str]:
        """Names of what differs (never values: a variable may hold a key)."""
        keys = (self.env.keys() | request.env.keys()) - IGNORED_VARS
        names = sorted(k for k in keys if self.env.get(k) != request.env.get(k))
        names += ["sys.path"] if request.sys_path != self.sys_path else []
        return names + (["sys.executable"] if request.executable != sys.executable else [])

    def become_child(self, conn: socket.socket, request: _Request) -> None:
        """The forked child: never returns into the server's loop."""
        status = 1
        try:
            self.close_listener()
            for other in self.children.values():
                other.close()
            conn.close()
            request.env.update(self.set_by_imports)
            status = _run_child(request)
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
        finally:
            os._exit(status)

    def hung_up(self, conn: socket.socket) -> None:
        """A command sends nothing after its request: readable means it is gone. So is its job."""
        pid = next(pid for pid, c in self.children.items() if c is conn)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is not None:
                try:
                    conn.sendall(EXITED + _NUMBER.pack(status))
                except OSError:
                    pass
                conn.close()


def _receive(conn: socket.socket) -> _Request:
    header, fds, _, _ = socket.recv_fds(conn, _REQUEST_LENGTH.size, 3)
    try:
        header += _receive_exactly(conn, _REQUEST_LENGTH.size - len(header))
        body = _receive_exactly(conn, min(_REQUEST_LENGTH.unpack(header)[0], 2**26))
        return _Request(**json.loads(body), fds=fds)
    except BaseException:
        _close(fds)
        raise


def _close(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def _receive_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the other side hung up")
        data += chunk
    return data


# ----------------------------------------------------------------------------- the child


def _run_child(request: _Request) -> int:
    """Become the command (its streams, directory, umask, environment, argv, sys.path and fresh
    random state), run it, and leave as a forked child of ``multiprocessing`` does (with atexit's
    handlers run too, as a script's exit runs them). Returns its exit status."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for sig in FORWARDED_SIGNALS:  # as Python sets them up: ignored where the command inherited them ignored
        default = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
        signal.signal(sig, signal.SIG_IGN if sig in request.ignored_signals else default)
    for target, fd in enumerate(request.fds):
        os.dup2(fd, target)
        os.close(fd)
    _reopen_standard_streams()
    os.chdir(request.cwd)
    os.umask(request.umask)
    os.environ.clear()
    os.environ.update(request.env)
    sys.argv, sys.path[:] = request.argv, request.sys_path
    sys.modules["__main__"] = _script_main(request.argv[0])
    _reseed_global_generators()
    try:
        status = _run_command(request.argv[1:])
    finally:
        threading._shutdown()  # as a script's exit: wait for the threads that are not daemons
        atexit._run_exitfuncs()  # not run by os._exit
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            stream.flush()
    return status


def _reopen_standard_streams() -> None:
    """Standard streams on the command's files, set up as the interpreter sets them up: the
    encoding, error handler and write-through of the server's (same environment), and stdout
    line-buffered only on a terminal."""

    def reopen(fd: int, like: io.TextIOWrapper, line_buffering: bool) -> io.TextIOWrapper:
        mode = "rb" if fd == 0 else "wb"
        binary = open(fd, mode, buffering=0 if like.write_through and fd else -1, closefd=False)  # noqa: SIM115
        return io.TextIOWrapper(
            binary,
            encoding=like.encoding,
            errors=like.errors,
            line_buffering=line_buffering,
            write_through=like.write_through,
        )

    sys.stdin = reopen(0, sys.__stdin__, False)
    sys.stdout = reopen(1, sys.__stdout__, os.isatty(1))
    sys.stderr = reopen(2, sys.__stderr__, True)


def _script_main(script: str) -> types.ModuleType:
    """A ``__main__`` like a console script's: Lightning's multi-process launcher starts the other
    ranks as ``python <__main__.__file__> <args>`` when ``__main__.__spec__`` is None, and as
    ``python -m <spec name>`` (here: this server) otherwise."""
    module = types.ModuleType("__main__")
    module.__file__ = script
    module.__builtins__ = builtins
    return module


def _reseed_global_generators() -> None:
    """Python's `random` reseeds itself in a forked child; numpy's global generator, which a fresh
    process seeds from the OS, does not."""
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()


def _run_command(argv: list[str]) -> int:
    """`podyn <argv>` in this process, with the exit status a script's interpreter gives: an
    uncaught KeyboardInterrupt kills the process with SIGINT, as Python does."""
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
        sys.stderr.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        return 128 + signal.SIGINT  # not reached
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        return 1


# ----------------------------------------------------------------------------- the command's side


def run_in_server(torch_stage: bool) -> int | None:
    """Run this ``podyn`` command (``sys.argv``) in a server's child and return its exit status;
    None where no server takes it (none running or left, a cheap command while the server still
    imports, or a different environment): the caller then runs it cold."""
    directory = os.environ.get(ENV_VAR)
    if not directory or not supported():
        return None
    path = socket_path(directory, os.environ.get("OMP_NUM_THREADS", "unset"))
    if not path.exists() or not (torch_stage or ready_path(path).exists()):
        return None  # a cheap command runs cold rather than wait for the imports
    signals = _SignalForwarder()
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(STARTUP_TIMEOUT_S)  # for a server that hangs while importing
    try:
        client.connect(str(path))
        _send(client, signals.ignored)
        answer = _receive_exactly(client, 1)
        if answer == DECLINED:
            declined = b"".join(iter(lambda: client.recv(4096), b"")).decode()
            print(f"podyn: warm start declined (differs: {declined}); running cold", file=sys.stderr)
            signals.restore()
            return None
        pid = _NUMBER.unpack(_receive_exactly(client, _NUMBER.size))[0]
    except OSError:  # no server (any more), or it hung up before forking: cold
        client.close()
        signals.restore()
        return None
    signals.target(pid)
    client.settimeout(None)  # the job takes as long as it takes
    with client:
        try:
            _receive_exactly(client, 1)
            status = _NUMBER.unpack(_receive_exactly(client, _NUMBER.size))[0]
        except ConnectionError:
            print(f"podyn: the server ended before job {pid}; its exit status is unknown", file=sys.stderr)
            return 1
    code = os.waitstatus_to_exitcode(status)
    if code < 0:  # the job died of a signal: so does this process, as a cold one would have
        if -code != signal.SIGKILL:  # the only one of them whose handler cannot be set
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


class _SignalForwarder:
    """From before the request is sent: signals go to the child once its pid is known, and the
    ones received before are sent to it then (or raised here if the command runs cold). A signal
    this process inherited ignored (a command started in the background by a shell ignores SIGINT
    and SIGQUIT; under nohup, SIGHUP) stays ignored here, and the child ignores it too, as a cold
    command's Python would."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.pending: list[int] = []
        self.ignored = [int(sig) for sig in FORWARDED_SIGNALS if signal.getsignal(sig) == signal.SIG_IGN]
        forwarded = [sig for sig in FORWARDED_SIGNALS if sig not in self.ignored]
        self.previous = {sig: signal.signal(sig, self.handle) for sig in forwarded}

    def handle(self, sig: int, _frame: object) -> None:
        if self.pid is None:
            self.pending.append(sig)
            return
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:  # it has just ended: its status is on the way
            pass

    def target(self, pid: int) -> None:
        self.pid = pid
        for sig in self.pending:
            self.handle(sig, None)

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        for sig in self.pending:
            os.kill(os.getpid(), sig)


def _send(client: socket.socket, ignored_signals: list[int]) -> None:
    for fd in (0, 1, 2):  # a closed standard stream becomes /dev/null, as the child needs all three
        try:
            os.fstat(fd)
        except OSError:
            os.dup2(os.open(os.devnull, os.O_RDWR), fd)
    umask = os.umask(0)
    os.umask(umask)
    request = {
        "executable": sys.executable,
        "argv": sys.argv,
        "ignored_signals": ignored_signals,
        "sys_path": sys.path,
        "cwd": os.getcwd(),
        "umask": umask,
        "env": dict(os.environ),
    }
    body = json.dumps(request).encode()
    socket.send_fds(client, [_REQUEST_LENGTH.pack(len(body))], [0, 1, 2])
    client.sendall(body)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m podyn.warm_start", description=__doc__.split("\n\n")[0])
    parser.add_argument("socket", type=Path, help="the Unix socket to listen on (threads-<n>.sock)")
    socket_file = parser.parse_args(argv).socket
    # a console script's sys.path starts with its own directory (the interpreter's, in a venv), where
    # `python -m` puts the working directory: modules are found where a `podyn` command finds them
    sys.path[0] = str(Path(sys.executable).parent)
    serve(socket_file)


if __name__ == "__main__":
    main()
