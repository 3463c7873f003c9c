"""scripts/compare_results.py: two results directories compared file by file."""

from __future__ import annotations

import importlib.util

import torch

from conftest import REPO

spec = importlib.util.spec_from_file_location("compare_results", REPO / "scripts" / "compare_results.py")
compare_results = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_results)


def test_verdicts_by_bytes_and_by_tensor_values(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        (root / "tables").mkdir(parents=True)
        (root / "tables" / "winrates.csv").write_text("run,win_rate\ndpo,0.738\n")
        (root / "logs").mkdir()
    (a / "claims.md").write_text("8 of 25 claims hold.\n")
    (b / "claims.md").write_text("9 of 25 claims hold.\n")
    (b / "logs" / "train.log").write_text("took 31.2 s\n")
    values = {"chosen": torch.arange(4, dtype=torch.float64), "step": 3}
    torch.save(values, a / "ref_logps.pt")
    # torch.save names the archive's records after the file: same values, other bytes
    torch.save(values, b / "other_name.pt")
    (b / "other_name.pt").rename(b / "ref_logps.pt")
    assert (a / "ref_logps.pt").read_bytes() != (b / "ref_logps.pt").read_bytes()

    verdicts = compare_results.compare(a, b, ignore=[])
    assert verdicts == {
        "tables/winrates.csv": "identical",
        "ref_logps.pt": "equal values",
        "claims.md": "differs",
        "logs/train.log": "only in B",
    }
    assert compare_results.compare(a, b, ignore=["logs/*", "claims.md"]) == {
        "tables/winrates.csv": "identical",
        "ref_logps.pt": "equal values",
    }
    assert compare_results.main([str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "| md | differs | 1 |" in out and "differs: claims.md" in out and "only in B: logs/train.log" in out
    assert compare_results.main([str(a), str(b), "--ignore", "claims.md"]) == 1  # logs/train.log only in B
    assert compare_results.main([str(a), str(b), "--ignore", "claims.md", "--ignore", "logs/*"]) == 0

    # what every rerun changes: a log's times, a PDF's creation date, the results root in checkpoints.json
    (a / "logs" / "train.log").write_text("took 30.9 s\n")
    (a / "fig.pdf").write_bytes(b"%PDF /CreationDate (D:20261127150000Z) body")
    (b / "fig.pdf").write_bytes(b"%PDF /CreationDate (D:20261127160000Z) body")
    (a / "checkpoints.json").write_text(f'{{"step_30": "{a.resolve()}/models/dpo/30"}}')
    (b / "checkpoints.json").write_text(f'{{"step_30": "{b.resolve()}/models/dpo/30"}}')
    verdicts = compare_results.compare(a, b, ignore=["claims.md"])
    assert {k: verdicts[k] for k in ("logs/train.log", "fig.pdf", "checkpoints.json")} == {
        "logs/train.log": "as every rerun",
        "fig.pdf": "as every rerun",
        "checkpoints.json": "as every rerun",
    }
    (b / "fig.pdf").write_bytes(b"%PDF /CreationDate (D:20261127160000Z) other body")
    assert compare_results.compare(a, b, ignore=[])["fig.pdf"] == "differs"

    values["chosen"][0] = 0.5
    torch.save(values, b / "ref_logps.pt")
    assert compare_results.compare(a, b, ignore=[])["ref_logps.pt"] == "differs"
