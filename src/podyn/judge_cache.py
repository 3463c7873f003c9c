"""The experiment-wide cache of LLM-judge answers.

One folder holds it (``<results>/cache/judge/``); every judging job appends to a file of its
own in that folder and reads all of them, so parallel jobs never write to the same file and a
comparison answered for one run, seed or step is not asked again for another. Files are
append-only JSON lines ``{"key": ..., "verdict": ...}``, flushed line by line: a job killed
mid-write leaves at most a torn last line, which is skipped on read (and sealed with a newline
before the next append), never fatal. A line whose verdict is not one a judge gives ('A', 'B' or a
probability) is skipped too, so a damaged file costs calls, never a wrong score. Keys are hashes
(see :func:`podyn.llm_judge.cache_key`): no prompt, response or credential is stored.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any


def is_verdict(value: Any) -> bool:
    """What a judge answers: 'A' or 'B' (the dpo template), or P(A preferred) (weighted)."""
    if value in ("A", "B"):
        return True
    return isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0


class JudgeCache:
    """Answers of every cache file in ``own_file``'s folder; new answers go to ``own_file``."""

    def __init__(self, own_file: str | Path) -> None:
        self.own_file = Path(own_file)
        self.folder = self.own_file.parent
        self.answers: dict[str, Any] = {}
        self.skipped: dict[Path, int] = {}  # unreadable lines per file (torn by a kill, or damaged)
        self._handle = None
        self._offsets: dict[Path, int] = {}
        self._lock = threading.Lock()
        self._last_refresh = 0.0
        self.reload()

    def reload(self) -> None:
        """Read what every ``*.jsonl`` file of the folder gained since the last read (the other
        jobs' answers included). A last line without its newline (being written, or torn by a
        kill) waits for the next read; once sealed by a later append, a torn line is skipped."""
        if not self.folder.exists():
            return
        with self._lock:
            for path in sorted(p for p in self.folder.glob("*.jsonl") if p.is_file()):
                start = self._offsets.get(path, 0)
                with open(path, "rb") as handle:
                    handle.seek(start)
                    data = handle.read()
                end = data.rfind(b"\n") + 1
                self._offsets[path] = start + end
                for line in data[:end].split(b"\n"):
                    if line.strip() and not self._parse(line):
                        self.skipped[path] = self.skipped.get(path, 0) + 1
            self._last_refresh = time.monotonic()

    @property
    def skipped_lines(self) -> int:
        return sum(self.skipped.values())

    def _parse(self, line: bytes) -> bool:
        """Take one line's answer; False for a line that is not a valid answer."""
        try:
            row = json.loads(line)
            key, verdict = row["key"], row["verdict"]
        except (ValueError, KeyError, TypeError):
            return False
        if not isinstance(key, str) or not is_verdict(verdict):
            return False
        self.answers[key] = verdict
        return True

    def lookup_fresh(self, key: str, every_s: float = 1.0) -> tuple[bool, Any]:
        """(found, verdict) for ``key``, first reading what parallel jobs appended if the last
        read is older than ``every_s``: a comparison that another running job has answered
        meanwhile is not asked again."""
        if key not in self.answers and time.monotonic() - self._last_refresh > every_s:
            self.reload()
        with self._lock:
            return (True, self.answers[key]) if key in self.answers else (False, None)

    def __contains__(self, key: str) -> bool:
        return key in self.answers

    def __getitem__(self, key: str) -> Any:
        return self.answers[key]

    def __len__(self) -> int:
        return len(self.answers)

    def add(self, key: str, verdict: Any, flush: bool = True) -> None:
        """Record an answer in memory and append it to this job's file (flushed at once unless
        the caller flushes later; a kill between flushes can leave a torn last line)."""
        if not is_verdict(verdict):
            raise ValueError(f"not a judge's verdict: {verdict!r}")
        with self._lock:
            self.answers[key] = verdict
        if self._handle is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.own_file, "ab")
            if self._handle.tell() > 0 and not self._ends_with_newline():
                self._handle.write(b"\n")  # seal a line torn by an earlier kill
        self._handle.write(json.dumps({"key": key, "verdict": verdict}).encode() + b"\n")
        if flush:
            self._handle.flush()

    def flush(self) -> None:
        if self._handle is not None:
            self._handle.flush()

    def _ends_with_newline(self) -> bool:
        with open(self.own_file, "rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
