#!/usr/bin/env python
"""Compare two results directories of the same config (e.g. before and after a change) file by
file: ``python bench/compare_results.py A B``.

Byte-compares every file present in either. Differences a rerun always has are reported apart and
checked for what they must still hold: logs, ``timing.csv`` (wall-clock), ``stamp.json`` (input
mtimes), ``checkpoints.json`` (equal once each directory's own path is replaced), PDF figures
(equal once matplotlib's ``/CreationDate`` is removed) and Lightning's ``last.ckpt`` (every entry
equal but the checkpoint callback's paths). Prints each differing file; the last line is
``identical: yes`` when nothing else differs."""

from __future__ import annotations

import argparse
import filecmp
import re
import sys
from pathlib import Path


def flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flatten(item, f"{prefix}/{key}").items()}
    if isinstance(value, (list, tuple)):
        return {k: v for i, item in enumerate(value) for k, v in flatten(item, f"{prefix}[{i}]").items()}
    return {prefix: value}


def same_checkpoint(a: Path, b: Path) -> bool:
    import torch

    x, y = (flatten(torch.load(p, map_location="cpu", weights_only=False)) for p in (a, b))
    if x.keys() != y.keys():
        return False
    for key in x:
        if "ModelCheckpoint" in key and key.endswith(("dirpath", "last_model_path", "best_model_path")):
            continue
        u, v = x[key], y[key]
        if torch.is_tensor(u) or torch.is_tensor(v):
            if not (torch.is_tensor(u) and torch.is_tensor(v) and u.dtype == v.dtype and torch.equal(u, v)):
                return False
        elif u != v:
            return False
    return True


def expected_difference(rel: Path, a: Path, b: Path, roots: tuple[Path, Path]) -> bool | None:
    """True: a difference every rerun has, and what must hold still holds; False: it does not
    hold; None: not a file of that kind."""
    if rel.parts[0] == "logs" or rel.name in ("timing.csv", "stamp.json") or rel.suffix == ".log":
        return True
    if rel.name == "checkpoints.json":
        return a.read_text().replace(str(roots[0]), "") == b.read_text().replace(str(roots[1]), "")
    if rel.suffix == ".pdf":
        strip = lambda data: re.sub(rb"/CreationDate \(D:[^)]*\)", b"", data)  # noqa: E731
        return strip(a.read_bytes()) == strip(b.read_bytes())
    if rel.name == "last.ckpt":
        return same_checkpoint(a, b)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    args = parser.parse_args(argv)
    roots = (args.a.resolve(), args.b.resolve())
    files = [{p.relative_to(root) for p in root.rglob("*") if p.is_file()} for root in roots]
    problems = [f"only in {root}: {rel}" for root, mine, other in ((roots[0], *files), (roots[1], *files[::-1]))
                for rel in sorted(mine - other)]  # fmt: skip
    expected = []
    for rel in sorted(files[0] & files[1]):
        a, b = roots[0] / rel, roots[1] / rel
        if filecmp.cmp(a, b, shallow=False):
            continue
        verdict = expected_difference(rel, a, b, roots)
        if verdict:
            expected.append(str(rel))
        else:
            problems.append(f"{'differs' if verdict is None else 'differs beyond what a rerun changes'}: {rel}")
    print(f"{len(files[0] & files[1])} files in both; {len(expected)} differ only as every rerun does:")
    for rel in expected:
        print(f"  {rel}")
    for line in problems:
        print(line)
    print(f"identical: {'yes' if not problems else 'no'}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
