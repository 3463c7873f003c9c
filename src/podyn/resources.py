"""Per-stage resource accounting for the benchmarks: wall time, tokens through the model
(forward passes and generated tokens) and peak resident memory. Written as JSON to
``$PODYN_STATS_DIR/<name>.json`` when that variable is set (``bench/pipeline.py`` sets it)."""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .io import write_text

_tokens = 0


def add_tokens(n: int) -> None:
    global _tokens
    _tokens += int(n)


def tokens() -> int:
    return _tokens


def peak_memory_mb() -> float:
    """Peak resident set size of this process (and, on a GPU, the peak allocated device memory)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@contextmanager
def stage_resources(name: str) -> Iterator[None]:
    start, start_tokens, start_cpu = time.perf_counter(), _tokens, time.process_time()
    yield
    target = os.environ.get("PODYN_STATS_DIR")
    if not target:
        return
    wall = time.perf_counter() - start
    # CPU seconds of this process (all its threads): on a shared machine, the load-independent cost
    record = {
        "stage": name,
        "wall_s": wall,
        "cpu_s": time.process_time() - start_cpu,
        "tokens": _tokens - start_tokens,
        "tokens_per_s": (_tokens - start_tokens) / wall if wall else 0.0,
        "peak_rss_mb": peak_memory_mb(),
    }
    try:
        import torch

        if torch.cuda.is_available():
            record["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    except ImportError:
        pass
    write_text(Path(target) / f"{name}.json", json.dumps(record, indent=2) + "\n")
