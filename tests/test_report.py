"""The Snakemake report's pieces: every caption under workflow/report/ renders (Jinja, then RST without a
docutils warning) for the embedded default, the tiny and the paper config, and the HTML views of the
tables and claims are self-contained pages with the tables' numbers. The report itself is built from the
tiny DAG's results in tests/test_workflow.py."""

from __future__ import annotations

import copy
import functools
import re
from types import SimpleNamespace

import jinja2
import pandas as pd
import pytest
import yaml
from docutils.core import publish_parts

from conftest import REPO, TINY_CONFIG
from podyn.config import validate_config
from podyn.report_pages import write_report_pages

CAPTIONS = sorted((REPO / "workflow" / "report").glob("*.rst"))
CATEGORIES = re.findall(r'^REPORT_\w+ = "([^"]+)"', (REPO / "workflow/rules/common.smk").read_text(), re.MULTILINE)


def merged_config(*files):
    """Config files merged as Snakemake merges --configfile over the Snakefile's configfile (per top-level key)."""
    return copy.deepcopy(_merged_config(files))


@functools.cache
def _merged_config(files):
    cfg = {}
    for path in files:
        cfg.update(yaml.safe_load(path.read_text()))
    # as workflow/rules/common.smk hands the captions `config`: every key, defaults included
    return validate_config(copy.deepcopy(cfg), ", ".join(map(str, files))).model_dump(mode="json", by_alias=True)


CONFIGS = {
    "default": (REPO / "config.yaml",),
    "tiny": (REPO / "config.yaml", TINY_CONFIG),
    "paper": (REPO / "config.yaml", REPO / "config" / "paper.yaml"),
}


def render_caption(path, cfg) -> str:
    """As Snakemake renders a caption: Jinja (with the report's category links appended), then RST to HTML;
    a missing config key or an RST warning raises."""
    links = "\n\n" + "\n".join(f".. _{name}: javascript:app.showCategory('{name}')" for name in CATEGORIES)
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    text = env.from_string(path.read_text() + links).render(
        snakemake=SimpleNamespace(config=cfg), categories={}, files=[]
    )
    return publish_parts(text, writer="html", settings_overrides={"report_level": 2, "halt_level": 2})["body"]


def test_report_categories_are_declared():
    assert CATEGORIES == ["1. Learning dynamics", "2. Win rates", "3. Paper claims", "4. Data"]
    referenced = set()
    for path in (REPO / "workflow" / "rules").glob("*.smk"):
        referenced |= set(re.findall(r'report_file\([^)]*?"(\w+)", REPORT_', path.read_text(), re.DOTALL))
        referenced |= set(re.findall(r'figure_files\("(\w+)"', path.read_text()))
    assert referenced == {p.stem for p in CAPTIONS} - {"workflow"}, "every caption is used, every used caption exists"


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("caption", CAPTIONS, ids=lambda p: p.stem)
def test_caption_renders(caption, name):
    cfg = merged_config(*CONFIGS[name])
    html = render_caption(caption, cfg)
    assert cfg["experiment"] in html
    assert "None" not in html, "a null config value leaked into the caption"
    if caption.stem.startswith("fig"):
        assert re.search(r"seeds? " + ", ".join(map(str, cfg["seeds"])), html), "a figure's caption names its seeds"


def test_caption_values_follow_the_config():
    cfg = merged_config(*CONFIGS["tiny"])
    cfg["seeds"] = [0, 1, 2]
    cfg["runs"]["dpo"]["overrides"] = {"beta": 0.25}
    cfg["dynamics"]["dpo_batch"] = "fixed"
    html = render_caption(REPO / "workflow/report/fig1_dpo_dynamics.rst", cfg)
    assert "beta = 0.25" in html  # the run's override, not the section's value
    assert "seeds 0, 1, 2" in html and "mean over seeds" in html
    assert f"a fixed analysis batch of {cfg['dynamics']['dpo_fixed_batch_size']} pairs" in html
    assert 'field-name">checkpoints:</th>' in html  # a field list, not text run into the paragraph
    panels = render_caption(REPO / "workflow/report/fig4_ablations.rst", merged_config(*CONFIGS["default"]))
    assert "cdpo_1" in panels and "cDPO case 1 (2500, 5500)" in panels and "<li>" in panels


def test_report_pages(tmp_path):
    (tmp_path / "winrates.md").write_text(
        "| run | final win rate (seed CI) |\n|---|---|\n| dpo | 0.748 [0.711, 0.787] |\n| ppo | 0.648 |\n"
    )
    pd.DataFrame(
        [
            {
                "panel": "a",
                "variant": "dpo_wo_neg_early",
                "baseline": "dpo",
                "step": "final",
                "difference": -0.0125,
                "ci_low": -0.05,
                "ci_high": 0.021,
                "n_prompts": 256,
                "n_seeds": 1,
                "verdict": "no significant difference",
            }
        ]
    ).to_csv(tmp_path / "comparisons.csv", index=False)
    (tmp_path / "claims.md").write_text(
        "# Paper claims, computed from this run\n\nPreamble.\n\n| id | statistic | holds |\n|---|---|---|\n"
        "| ppo_neg | \\|2 P(G>0) - 1\\| of NEG | **no** |\n"
    )
    pd.DataFrame(
        [
            {
                "run": "copo_dpo",
                "seed": 0,
                "cost_fraction": 0.1159,
                "measurements": 30,
                "final_pos": 1.8925,
                "vs_baseline": -0.0723,
                "vs_baseline_run": "dpo",
                "vs_baseline_verdict": "worse",
            }
        ]
    ).to_csv(tmp_path / "copo.csv", index=False)
    write_report_pages(
        winrates=tmp_path / "winrates.md",
        comparisons=tmp_path / "comparisons.csv",
        copo=tmp_path / "copo.csv",
        claims=tmp_path / "claims.md",
        out=tmp_path / "out",
    )
    winrates = (tmp_path / "out" / "winrates.html").read_text()
    assert "<table>" in winrates and "<td>0.748 [0.711, 0.787]</td>" in winrates
    comparisons = (tmp_path / "out" / "comparisons.html").read_text()
    assert '<td class="num">-0.013</td>' in comparisons and '<td class="num">256</td>' in comparisons
    assert "<td>no significant difference</td>" in comparisons
    copo = (tmp_path / "out" / "copo.html").read_text()
    assert "<h1>Coordinated PO</h1>" in copo and '<td class="num">0.116</td>' in copo
    assert '<td class="num">30</td>' in copo and "<td>worse</td>" in copo
    claims = (tmp_path / "out" / "claims.html").read_text()
    assert "<h1>Paper claims, computed from this run</h1>" in claims and "<strong>no</strong>" in claims
    assert "|2 P(G&gt;0) - 1| of NEG" in claims  # an escaped pipe stays inside its cell
    for page in (winrates, comparisons, copo, claims):  # self-contained: no scripts, nothing fetched
        assert page.startswith("<!DOCTYPE html>") and "<script" not in page
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
