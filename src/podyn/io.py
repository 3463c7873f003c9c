"""Atomic file writes (files and ``save_pretrained`` directories) and validated JSON-lines reads."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import secrets
import shutil
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """A malformed input row; the message names the file and line."""


def _sibling(path: Path, kind: str, create) -> Path:
    """A new temporary path beside ``path`` (``.<name>.<random>.<kind>``), made by ``create``.
    Not ``mkstemp``/``mkdtemp``: they make private paths (0600 / 0700), while ``os.open`` with
    0o666 and ``os.mkdir`` with 0o777 give an output the modes of any other file or directory under
    the process's umask, so that a group sharing a results directory can read it."""
    for _ in range(100):
        candidate = path.with_name(f".{path.name}.{secrets.token_hex(4)}.{kind}")
        try:
            create(candidate)
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def _create_file(path: Path) -> None:
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only on success, so a
    killed job never leaves a half-written output that looks complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp", _create_file)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_pretrained_atomic(out_dir: str | Path, *objects: Any) -> None:
    """``save_pretrained`` every object (model, tokenizer) into a temporary sibling directory,
    then rename it into place. An existing directory is moved aside before and deleted after, so
    a kill at any moment leaves the old or the new model on disk (the old one, if it was moved
    aside, under ``.<name>.*.old``)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(out_dir, "tmp", os.mkdir)
    try:
        for obj in objects:
            obj.save_pretrained(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out_dir.exists():
        old = _sibling(out_dir, "old", os.mkdir)
        out_dir.rename(old / out_dir.name)
    tmp.rename(out_dir)
    if old is not None:
        shutil.rmtree(old)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def write_csv(path: str | Path, frame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def read_jsonl(path: str | Path, required: dict[str, type] | None = None) -> list[dict]:
    """Read JSON lines, checking that each row has the ``required`` fields with the right types.
    A bad row raises :class:`DataError` naming the file, the line and the field; so does a file
    that cannot be read (missing, a directory, a damaged or truncated gzip, not UTF-8)."""
    path = Path(path)
    rows, lineno = [], 0
    try:
        with _open_text(path) as handle:
            for lineno, line in enumerate(handle, start=1):
                if line.strip():
                    rows.append(_checked_row(path, lineno, line, required))
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as err:
        raise unreadable(f"{path}:{lineno + 1}" if lineno else path, err) from None  # the line being read
    return rows


def unreadable(where: str | Path, err: BaseException, hint: str = "") -> DataError:
    """The error of a file that cannot be read: ``<where>: cannot read (<error type>: <message>)``."""
    module = type(err).__module__
    kind = type(err).__name__ if module == "builtins" else f"{module}.{type(err).__name__}"
    return DataError(f"{where}: cannot read ({kind}: {err}){hint}")


def _checked_row(path: Path, lineno: int, line: str, required: dict[str, type] | None) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(row, dict):
        raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
    for field, kind in (required or {}).items():
        if field not in row:
            raise DataError(f"{path}:{lineno}: missing field '{field}'")
        if not isinstance(row[field], kind):
            raise DataError(
                f"{path}:{lineno}: field '{field}' should be {kind.__name__}, got {type(row[field]).__name__}"
            )
    return row


# what torch.load raises for a missing, truncated or damaged file
TORCH_LOAD_ERRORS = (OSError, EOFError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile)


def unreadable_torch(path: str | Path, err: BaseException, hint: str) -> DataError:
    """:func:`unreadable` for ``torch.load``'s errors. A weights-only load's unpickling error
    advises loading with weights_only=False, wrong for a damaged file: only its own detail is kept."""
    if not isinstance(err, pickle.UnpicklingError):
        return unreadable(path, err, hint)
    detail = str(err).split("WeightsUnpickler error:")[-1].split("Check the documentation")[0]
    return DataError(
        f"{path}: cannot read: its pickled record is damaged, or holds a type that torch's weights-only "
        f"load refuses ({' '.join(detail.split())[:200]}){hint}"
    )


def read_torch(path: str | Path, weights_only: bool = True) -> Any:
    """``torch.load`` of a file an earlier stage wrote; a missing, truncated or damaged file is a
    :class:`DataError` naming it."""
    import torch

    try:
        return torch.load(path, weights_only=weights_only)
    except TORCH_LOAD_ERRORS as err:
        raise unreadable_torch(path, err, "; rerun the stage that wrote it") from None


def write_torch(path: str | Path, obj: Any) -> None:
    """``torch.save`` atomically. Serialised in memory first: ``torch.save`` to a file names
    the archive inside after the (temporary, random) file name, which would make the bytes of
    identical objects differ from run to run."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
