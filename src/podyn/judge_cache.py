"""The experiment-wide cache of LLM-judge answers.

One folder holds it (``<results>/cache/judge/``); every judging job appends to a file of its
own in that folder and reads all of them, so parallel jobs never write to the same file and a
comparison answered for one run, seed or step is not asked again for another. Files are
append-only JSON lines ``{"key": ..., "verdict": ...}``, flushed line by line: a job killed
mid-write leaves at most a torn last line, which is skipped on read (and sealed with a newline
before the next append), never fatal. Keys are hashes (see :func:`podyn.llm_judge.cache_key`):
no prompt, response or credential is stored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class JudgeCache:
    """Answers of every cache file in ``own_file``'s folder; new answers go to ``own_file``."""

    def __init__(self, own_file: str | Path) -> None:
        self.own_file = Path(own_file)
        self.folder = self.own_file.parent
        self.answers: dict[str, Any] = {}
        self.skipped_lines = 0
        self._handle = None
        self.reload()

    def reload(self) -> None:
        """Read every ``*.jsonl`` file of the folder (the other jobs' answers included)."""
        if not self.folder.exists():
            return
        for path in sorted(self.folder.glob("*.jsonl")):
            for line in path.read_bytes().split(b"\n"):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    self.answers[row["key"]] = row["verdict"]
                except (ValueError, KeyError, TypeError):
                    self.skipped_lines += 1  # a line torn by a kill mid-write

    def __contains__(self, key: str) -> bool:
        return key in self.answers

    def __getitem__(self, key: str) -> Any:
        return self.answers[key]

    def __len__(self) -> int:
        return len(self.answers)

    def add(self, key: str, verdict: Any, flush: bool = True) -> None:
        """Record an answer in memory and append it to this job's file (flushed at once unless
        the caller flushes later; a kill between flushes can leave a torn last line)."""
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
