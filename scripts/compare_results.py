#!/usr/bin/env python
"""Compare two results directories file by file (e.g. the same config's DAG before and after a
change): every file both hold is byte-identical, or equal in value (``.pt`` archives whose zip
records differ but whose tensors are equal), or it differs. Files only one of them holds are
listed too. Prints a table by file type and the differing files; exits 1 if any file differs.

    python scripts/compare_results.py results/default /elsewhere/results/default [--ignore GLOB ...]

Some files differ between any two runs in different directories, and are checked for what must
still hold ("as every rerun"): ``checkpoints.json`` (equal once each directory's own path is
removed), PDF figures (equal once matplotlib's ``/CreationDate`` is removed), Lightning's
``last.ckpt`` (equal but for the checkpoint callback's paths); logs, ``stamp.json`` (input mtimes)
and ``timing.csv`` (wall-clock) always differ. ``--ignore`` leaves files out (glob on the relative
path).
"""

from __future__ import annotations

import argparse
import fnmatch
import re
import sys
from collections import Counter
from pathlib import Path


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def equal_values(a, b) -> bool:
    """Tensors, dicts, lists and plain values compared exactly (tensors by dtype, shape and value)."""
    import torch

    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(equal_values(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(equal_values(x, y) for x, y in zip(a, b))
    return a == b


def flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flatten(item, f"{prefix}/{key}").items()}
    if isinstance(value, (list, tuple)):
        return {k: v for i, item in enumerate(value) for k, v in flatten(item, f"{prefix}[{i}]").items()}
    return {prefix: value}


def same_lightning_checkpoint(a: Path, b: Path) -> bool:
    """Every entry equal but the checkpoint callback's paths (they name the results directory)."""
    import torch

    x, y = (flatten(torch.load(p, map_location="cpu", weights_only=False)) for p in (a, b))
    paths = ("dirpath", "last_model_path", "best_model_path")
    keep = lambda key: not ("ModelCheckpoint" in key and key.endswith(paths))  # noqa: E731
    return [k for k in x if keep(k)] == [k for k in y if keep(k)] and all(
        equal_values(x[k], y[k]) for k in x if keep(k)
    )


def as_every_rerun(rel: str, a: Path, b: Path, roots: tuple[Path, Path]) -> bool:
    """Whether two differing files differ only as any two runs in different directories do."""
    name = Path(rel).name
    if rel.startswith("logs/") or name in ("timing.csv", "stamp.json") or name.endswith(".log"):
        return True
    if name == "checkpoints.json":
        return a.read_text().replace(str(roots[0]), "") == b.read_text().replace(str(roots[1]), "")
    if name.endswith(".pdf"):
        strip = lambda data: re.sub(rb"/CreationDate \(D:[^)]*\)", b"", data)  # noqa: E731
        return strip(a.read_bytes()) == strip(b.read_bytes())
    if name == "last.ckpt":
        return same_lightning_checkpoint(a, b)
    return False


def compare_file(a: Path, b: Path, rel: str, roots: tuple[Path, Path]) -> str:
    """'identical', 'equal values', 'as every rerun' or 'differs'."""
    if a.read_bytes() == b.read_bytes():
        return "identical"
    if a.suffix == ".pt":
        import torch

        if equal_values(torch.load(a, weights_only=False), torch.load(b, weights_only=False)):
            return "equal values"
    return "as every rerun" if as_every_rerun(rel, a, b, roots) else "differs"


def compare(a: Path, b: Path, ignore: list[str]) -> dict[str, str]:
    """Each file's verdict, by relative path; 'only in A' / 'only in B' for the others."""
    kept = lambda path: not any(fnmatch.fnmatch(path, pattern) for pattern in ignore)  # noqa: E731
    in_a, in_b = set(filter(kept, files_under(a))), set(filter(kept, files_under(b)))
    roots = (a.resolve(), b.resolve())
    verdicts = {path: compare_file(a / path, b / path, path, roots) for path in sorted(in_a & in_b)}
    verdicts.update({path: "only in A" for path in in_a - in_b})
    verdicts.update({path: "only in B" for path in in_b - in_a})
    return verdicts


def kind(path: str) -> str:
    name = Path(path).name
    return name.rsplit(".", 1)[-1] if "." in name else "(no extension)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="results directory A")
    parser.add_argument("b", type=Path, help="results directory B")
    parser.add_argument("--ignore", action="append", default=[], metavar="GLOB", help="leave out matching paths")
    args = parser.parse_args(argv)
    verdicts = compare(args.a, args.b, args.ignore)
    table = Counter((kind(path), verdict) for path, verdict in verdicts.items())
    print("| file type | verdict | files |\n|---|---|---:|")
    for (ext, verdict), count in sorted(table.items()):
        print(f"| {ext} | {verdict} | {count} |")
    for path, verdict in verdicts.items():
        if verdict not in ("identical", "equal values", "as every rerun"):
            print(f"{verdict}: {path}")
    same = not any(v == "differs" or v.startswith("only in") for v in verdicts.values())
    print(f"identical: {'yes' if same else 'no'} (besides what every rerun changes)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
