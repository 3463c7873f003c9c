"""Throughput of the LLM judge against the local OpenAI-compatible server (podyn.judge_server)
with a fixed latency per request, as a real API has: requests/s at several concurrencies, and
the time to judge 10,000 comparisons. The judge's whole path is measured: the official openai
client over HTTP, the thread pool, the cache appends, the scoring. Every measurement starts
from an empty cache, and its scores are checked against the gold judge's.

    python bench/judge.py                      # latency 50 ms; concurrency 1, 8, 32; 10,000 comparisons
    python bench/judge.py --requests 200 --comparisons 2000 --log bench/reference/judge.log

Target (issue 8): at concurrency 32, at least 20x the requests/s of concurrency 1.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from podyn.config import Config, validate_config  # noqa: E402
from podyn.data.synthetic import Demonstrator, format_prompt  # noqa: E402
from podyn.judges import Comparison, GoldJudge, make_judge  # noqa: E402

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
KEY_ENV = "PODYN_BENCH_JUDGE_KEY"


def comparisons(n: int, seed: int) -> list[Comparison]:
    """``n`` distinct synthetic comparisons that the gold judge does not call a tie (a tie asked in
    one order is the server's position bias, so only these have a known one-order answer)."""
    rng = np.random.default_rng(seed)
    good = Demonstrator({"copy": 0.0, "reverse": 0.2, "sort": 0.2}, token_noise=0.1, length_noise=0.2)
    lazy = Demonstrator({"copy": 0.0, "reverse": 0.8, "sort": 0.8}, token_noise=0.1, length_noise=0.2)
    out: dict[Comparison, None] = {}
    while len(out) < n:
        family = ("copy", "reverse", "sort")[int(rng.integers(3))]
        items = [WORDS[k] for k in rng.integers(10, size=int(rng.integers(3, 9)))]
        c = Comparison(
            format_prompt(family, items), good.respond(family, items, rng), lazy.respond(family, items, rng)
        )
        if GoldJudge().compare(c.prompt, c.response, c.baseline) != 0.5:
            out[c] = None
    return list(out)


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "podyn.judge_server", "--latency", str(latency)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit(f"the judge server did not start: {line!r}")
    return proc, line.split("listening on ", 1)[1].strip()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    cfg: Config, items: list[Comparison], concurrency: int, order: str, server_pid: int
) -> tuple[float, int, float]:
    """(seconds, requests, CPU milliseconds per request of judge + server) to judge ``items``
    from an empty cache."""
    run_cfg = cfg.model_copy(
        update={"judge": cfg.judge.model_copy(update={"concurrency": concurrency, "order": order})}
    )
    with tempfile.TemporaryDirectory() as tmp:
        judge = make_judge(run_cfg, Path(tmp) / "judge" / "bench.jsonl")
        cpu = time.process_time() + cpu_seconds(server_pid)
        start = time.perf_counter()
        scores = judge.judge(items)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() + cpu_seconds(server_pid) - cpu
    if scores != GoldJudge().judge(items):
        raise SystemExit("the judge's scores differ from the gold judge's: the benchmark is void")
    return elapsed, judge.calls, 1000 * cpu / judge.calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the server adds to every request")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 8, 32], help="judge.concurrency values to measure"
    )
    parser.add_argument(
        "--requests", type=int, default=100, help="requests per concurrency-1 measurement (scaled up with c)"
    )
    parser.add_argument(
        "--comparisons", type=int, default=10_000, help="comparisons in the timed full run (both orders)"
    )
    parser.add_argument("--full-concurrency", type=int, default=32, help="judge.concurrency of the timed full run")
    parser.add_argument("--log", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args()

    os.environ[KEY_ENV] = "sk-bench-not-a-secret"
    proc, url = start_server(args.latency)
    lines = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    try:
        raw = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())
        cfg = validate_config({**raw, "judge": {"type": "openai", "base_url": url, "api_key_env": KEY_ENV}}, "tiny")
        latency_ms = args.latency * 1000
        say(f"# bench/judge.py: LLM judge over HTTP, local server with {latency_ms:.0f} ms latency per request")
        load, version = os.getloadavg()[0], sys.version.split()[0]
        say(f"# machine: {os.cpu_count()} CPUs, load average {load:.1f} at start; python {version}")
        say("")
        say(
            "| concurrency | requests | seconds | requests/s | speed-up vs c=1 | CPU ms per request (judge + server) |"
        )
        say("|---|---|---|---|---|---|")
        measure(cfg, comparisons(20, seed=0), 4, "random", proc.pid)  # warm-up: imports, first connections
        base_rate = None
        for c in args.concurrency:
            n = args.requests * max(1, min(c, 16))  # each measurement lasts a few seconds
            elapsed, calls, cpu_ms = measure(cfg, comparisons(n, seed=c), c, "random", proc.pid)
            rate = calls / elapsed
            base_rate = base_rate or rate
            say(f"| {c} | {calls} | {elapsed:.2f} | {rate:.1f} | {rate / base_rate:.1f}x | {cpu_ms:.2f} |")
        say("")
        items = comparisons(args.comparisons, seed=12345)
        elapsed, calls, cpu_ms = measure(cfg, items, args.full_concurrency, "both", proc.pid)
        say(
            f"{len(items):,} comparisons in both orders ({calls:,} requests) at concurrency {args.full_concurrency}: "
            f"{elapsed:.1f} s ({calls / elapsed:.1f} requests/s, {cpu_ms:.2f} CPU ms per request)"
        )
        say(
            f"load average at the end: {os.getloadavg()[0]:.1f}. With the latency L and c requests in flight, "
            f"the ceiling is c / L requests/s, or the CPUs' {os.cpu_count()} / (CPU ms per request) when lower."
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    if args.log:
        args.log.parent.mkdir(parents=True, exist_ok=True)
        args.log.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
