"""Build offline stand-ins for the hub datasets podyn reads, from a real HH-RLHF file.

    python scripts/build_fixtures.py HH_RLHF_FILE.jsonl.gz OUT_DIR [--rows 240]

Writes, under OUT_DIR, directories laid out like the hub repos, so that
``datasets.load_dataset(<dir>, split=...)`` resolves their splits as it resolves the hub's:

- ``ultrafeedback_binarized/``: ``README.md`` with ``configs:`` and
  ``data/<split>-00000-of-00001.parquet`` for ``train_prefs``, ``test_prefs``, ``train_sft``
  and ``test_sft``, in the columns of ``HuggingFaceH4/ultrafeedback_binarized`` (``prompt``,
  ``prompt_id``, ``chosen``/``rejected``/``messages`` message lists, ``score_chosen``,
  ``score_rejected``);
- ``hh-rlhf/``: like ``Anthropic/hh-rlhf``: ``helpful-base/{train,test}.jsonl.gz`` with the
  raw ``chosen``/``rejected`` dialogues, loaded with ``data_dir="helpful-base"``;
- ``trl_standard/`` and ``trl_conversational/``: ``README.md`` with ``configs:`` and
  ``data/{train,test}-00000-of-00001.parquet`` in TRL's preference formats;
- ``local/``: the same rows as the user's own files: ``trl_standard.jsonl``,
  ``trl_conversational.parquet``, ``ultrafeedback_binarized.jsonl``, ``hh_rlhf.jsonl.gz``.

Every row is converted from the HH-RLHF file's row of the same index (the file's order),
and ``manifest.json`` records, for each file, which source rows it holds, so tests can check
the loaders against values read independently from the raw file.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from podyn.data.formats import parse_dialogue, split_pair  # noqa: E402

PARQUET_README = """---
configs:
- config_name: default
  data_files:
{files}
---
# {title}

Offline fixture built by scripts/build_fixtures.py from HH-RLHF rows; not the real dataset.
"""


def read_hh(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def conversation(row: dict) -> tuple[list[dict], list[dict], list[dict]]:
    """(prompt messages, chosen conversation, rejected conversation) of an HH-RLHF row."""
    prompt, chosen, rejected = split_pair(row["chosen"], row["rejected"])
    turns = parse_dialogue(prompt)
    return (
        turns,
        turns + [{"role": "assistant", "content": chosen.strip()}],
        turns + [{"role": "assistant", "content": rejected.strip()}],
    )


def to_ultrafeedback(row: dict, index: int) -> dict:
    turns, chosen, rejected = conversation(row)
    return {
        "prompt": turns[0]["content"],
        "prompt_id": hashlib.sha256(turns[0]["content"].encode()).hexdigest(),
        "chosen": chosen,
        "rejected": rejected,
        "messages": chosen,
        "score_chosen": 8.0,
        "score_rejected": 4.0 + (index % 3),
    }


def to_trl_standard(row: dict) -> dict:
    prompt, chosen, rejected = split_pair(row["chosen"], row["rejected"])
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def to_trl_conversational(row: dict) -> dict:
    turns, chosen, rejected = conversation(row)
    return {"prompt": turns, "chosen": chosen[-1:], "rejected": rejected[-1:]}


def usable(row: dict) -> bool:
    """Rows every format can hold: a shared prompt that parses into turns starting with the
    user's, and non-empty, different responses."""
    try:
        turns, chosen, rejected = conversation(row)
    except ValueError:
        return False
    return (
        bool(turns)
        and turns[0]["role"] == "user"
        and chosen[-1]["content"] != rejected[-1]["content"]
        and all(m["content"] for m in (chosen[-1], rejected[-1]))
    )


def write_parquet_repo(root: Path, title: str, splits: dict[str, list[dict]]) -> None:
    (root / "data").mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        pd.DataFrame(rows).to_parquet(root / "data" / f"{split}-00000-of-00001.parquet", index=False)
    files = "\n".join(f"  - split: {s}\n    path: data/{s}-*" for s in splits)
    (root / "README.md").write_text(PARQUET_README.format(files=files, title=title))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")


def build_fixtures(hh_file: Path, out: Path, n_rows: int = 240) -> dict:
    """Write every fixture under ``out`` and return the manifest (file -> source row indices)."""
    raw = read_hh(Path(hh_file))
    picked = [i for i, row in enumerate(raw) if usable(row)][:n_rows]
    train, test = picked[: n_rows * 3 // 4], picked[n_rows * 3 // 4 :]
    sft, prefs = train[: len(train) // 3], train[len(train) // 3 :]
    manifest: dict[str, list[int]] = {}

    uf = {"train_prefs": prefs, "test_prefs": test, "train_sft": sft, "test_sft": test}
    write_parquet_repo(
        out / "ultrafeedback_binarized",
        "UltraFeedback-binarized (fixture)",
        {s: [to_ultrafeedback(raw[i], i) for i in idx] for s, idx in uf.items()},
    )
    manifest.update({f"ultrafeedback_binarized/{s}": idx for s, idx in uf.items()})

    hh = {"train": train, "test": test}
    for split, idx in hh.items():
        write_jsonl(out / "hh-rlhf" / "helpful-base" / f"{split}.jsonl.gz", [raw[i] for i in idx])
        manifest[f"hh-rlhf/helpful-base/{split}"] = idx

    for name, convert in (("trl_standard", to_trl_standard), ("trl_conversational", to_trl_conversational)):
        write_parquet_repo(
            out / name,
            f"TRL {name} preferences (fixture)",
            {s: [convert(raw[i]) for i in idx] for s, idx in hh.items()},
        )
        manifest.update({f"{name}/{s}": idx for s, idx in hh.items()})

    local = out / "local"
    write_jsonl(local / "trl_standard.jsonl", [to_trl_standard(raw[i]) for i in picked])
    local.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([to_trl_conversational(raw[i]) for i in picked]).to_parquet(
        local / "trl_conversational.parquet", index=False
    )
    write_jsonl(local / "ultrafeedback_binarized.jsonl", [to_ultrafeedback(raw[i], i) for i in picked])
    write_jsonl(local / "hh_rlhf.jsonl.gz", [raw[i] for i in picked])
    for name in ("trl_standard", "trl_conversational", "ultrafeedback_binarized", "hh_rlhf"):
        manifest[f"local/{name}"] = picked
    (out / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("hh_file", type=Path, help="an HH-RLHF jsonl(.gz) file (chosen/rejected dialogues)")
    parser.add_argument("out", type=Path, help="directory of the hub-like dataset directories")
    parser.add_argument("--rows", type=int, default=240, help="rows taken from the file (default: %(default)s)")
    args = parser.parse_args(argv)
    manifest = build_fixtures(args.hh_file, args.out, args.rows)
    print(f"wrote {len(manifest)} fixture splits under {args.out}")


if __name__ == "__main__":
    main()
