"""One loader path for real preference data: ``data.source: hf`` (anything that
``datasets.load_dataset`` accepts: a hub id, or a local directory laid out like a hub repo)
and ``data.source: local`` (the user's JSON lines or Parquet files). Each role (``sft``,
``prefs_train``, ``prefs_heldout``, ``test``, and ``judge_prefs`` for the reward-model
judge) names its dataset, split and row range; rows are mapped by :mod:`.formats`.

Roles that read the same dataset and split see it in one seeded order, so disjoint
``start``/``n`` ranges give disjoint rows. A bad row raises :class:`~podyn.io.DataError`
naming the file (or dataset and split), the row and the field, or, with
``on_bad_row: drop``, is left out and counted in the log.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..config import DataConfig, DataRoleConfig
from ..io import DataError, read_jsonl
from .formats import Renderer, RowError, map_row

ROLE_KINDS = {"sft": "sft", "prefs_train": "pref", "prefs_heldout": "pref", "test": "prompt", "judge_prefs": "pref"}
FILLED_KEYS = ("path", "name", "data_dir", "format")  # a role's keys that the data section's fills in


def role_spec(data: DataConfig, role: str) -> DataRoleConfig:
    """The role's settings, the data section's top-level keys filling what the role leaves out."""
    own = getattr(data.roles, role) or DataRoleConfig()
    spec = own.model_copy(update={k: getattr(data, k) for k in FILLED_KEYS if getattr(own, k) is None})
    if not spec.path:
        raise DataError(f"data.roles.{role}: no 'path' (set data.path or data.roles.{role}.path)")
    if not spec.format:
        raise DataError(f"data.roles.{role}: no 'format' (set data.format or data.roles.{role}.format)")
    return spec


def read_rows(source: str, spec: DataRoleConfig) -> tuple[str, Sequence[dict]]:
    """(where, rows) of a role's dataset: ``where`` names it in error messages."""
    if source == "local":
        path = Path(spec.path)
        if not path.exists():
            raise DataError(f"{path}: file not found")
        if path.name.endswith((".parquet", ".pq")):
            import datasets

            try:
                return str(path), datasets.load_dataset("parquet", data_files=str(path), split="train")
            except Exception as err:  # pyarrow's errors (ArrowInvalid, ...) share no base class worth naming
                raise DataError(f"{path}: cannot read as Parquet ({type(err).__name__}: {err})") from None
        return str(path), read_jsonl(path)
    import datasets

    kwargs = {k: getattr(spec, k) for k in ("name", "data_dir") if getattr(spec, k)}
    if Path(spec.path).is_dir():
        kwargs["cache_dir"] = str(_directory_cache(Path(spec.path)))
    split = spec.split or "train"
    where = f"{spec.path}{'/' + spec.data_dir if spec.data_dir else ''} [split {split}]"
    try:
        return where, datasets.load_dataset(spec.path, split=split, **kwargs)
    except (OSError, ValueError, datasets.exceptions.DatasetNotFoundError) as err:  # OSError: offline, no cache
        raise DataError(f"{where}: cannot load ({type(err).__name__}: {err})") from None


def _directory_cache(root: Path) -> Path:
    """A datasets cache of a hub-like directory's own, keyed by its files' names, sizes and
    times: ``datasets`` keys its cache of such a directory by the directory's name and the
    README's file patterns only, so two directories of one name (or an edited one) would
    otherwise share stale cached splits."""
    import hashlib

    import datasets

    digest = hashlib.sha256(str(root.resolve()).encode())
    for path in sorted(p for p in root.rglob("*") if p.is_file() and ".cache" not in p.parts):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return Path(datasets.config.HF_DATASETS_CACHE) / "podyn-local" / digest.hexdigest()[:16]


def row_order(n_rows: int, seed: int, shuffle: bool) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n_rows) if shuffle else np.arange(n_rows)


def load_role(data: DataConfig, role: str, seed: int, render: Renderer | None = None, log=sys.stderr) -> list[dict]:
    """The mapped rows of one role: ``n`` rows from ``start`` in the seeded order."""
    spec = role_spec(data, role)
    where, rows = read_rows(data.source, spec)
    order = row_order(len(rows), seed, data.shuffle)
    start = spec.start
    stop = len(order) if spec.n is None else start + spec.n
    if start >= len(order):
        raise DataError(f"{where}: data.roles.{role}.start is {start} but the dataset has {len(order)} rows")
    picked = order[start:stop]
    mapped, dropped = [], Counter()
    selected = (
        rows.select(picked) if hasattr(rows, "select") else [rows[i] for i in picked]
    )  # one Arrow read, not one per row
    for index, row in zip(picked.tolist(), selected):
        try:
            mapped.append(map_row(row, spec.format, ROLE_KINDS[role], render))
        except RowError as err:
            if data.on_bad_row == "error":
                raise DataError(f"{where}: row {index + 1}: {err} (format {spec.format})") from None
            dropped[f"field '{err.field}': {err.reason}"] += 1
    kept = (
        f"{role}: {len(mapped)} rows from {where} (format {spec.format}, rows "
        f"{start}..{start + len(picked)} of {len(order)})"
    )
    print(kept + (f", dropped {sum(dropped.values())} bad rows: {dict(dropped)}" if dropped else ""), file=log)
    if not mapped:
        raise DataError(f"{where}: no usable rows for role '{role}'")
    return mapped


def chat_renderer(data: DataConfig, model_name: str | None = None) -> Renderer:
    """The paper's dialogue rendering, or (``render: chat_template``) the chat template of
    ``chat_template_from`` (default: the model's ``name_or_path``, ``model_name``)."""
    if data.render == "paper":
        return Renderer()
    from transformers import AutoTokenizer

    name = data.chat_template_from or model_name
    tokenizer = AutoTokenizer.from_pretrained(name)
    if not tokenizer.chat_template:
        raise DataError(f"data.render is 'chat_template' but the tokenizer of {name} has no chat template")
    return Renderer(tokenizer)


def load_splits(data: DataConfig, seed: int, model_name: str | None = None) -> dict[str, list[dict]]:
    """Every configured role's rows (``judge_prefs`` only when it is configured)."""
    render = chat_renderer(data, model_name)
    roles = [r for r in ROLE_KINDS if r != "judge_prefs" or data.roles.judge_prefs is not None]
    return {role: load_role(data, role, seed, render) for role in roles}
