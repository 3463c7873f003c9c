"""`snakemake --report` on the embedded default's results: the whole default DAG (config.yaml, every run of
the grid including Coordinated PO; about 8.5 minutes on 2 idle cores) is run once, then the report is built
from its results and read back: every figure, table and page the rules mark for the report is embedded byte
for byte as the DAG wrote it, in its category, under a caption rendered with the default config's values,
and the embedded pages show the numbers of the tables they are views of."""

from __future__ import annotations

import base64
import json
import re

import pandas as pd
import pytest
import yaml

from conftest import REPO, run_cmd, snakemake
from podyn.config import validate_config

DYNAMICS, WINRATES, CLAIMS, DATA = "1. Learning dynamics", "2. Win rates", "3. Paper claims", "4. Data"

# every output marked with report(...), by category (relative to the experiment's results directory)
REPORTED = {
    "figures/fig1_dpo_dynamics.png": DYNAMICS,
    "figures/fig2_ppo_dynamics.png": DYNAMICS,
    "figures/fig3_ppo_advantages.png": DYNAMICS,
    "figures/fig5_grad_magnitudes.png": DYNAMICS,
    "figures/fig6_weights.png": DYNAMICS,
    "figures/fig4_ablations.png": WINRATES,
    "figures/fig7_copo.png": WINRATES,
    "report/winrates.html": WINRATES,
    "report/comparisons.html": WINRATES,
    "report/copo.html": WINRATES,
    "report/claims.html": CLAIMS,
    "tables/winrates.csv": DATA,
    "tables/comparisons.csv": DATA,
    "tables/copo.csv": DATA,
    "claims.csv": DATA,
    "eval/winrates.csv": DATA,
    "eval/reward_model.csv": DATA,
}


def embedded_object(html: str, name: str) -> dict:
    """A JSON object the report's script declares as ``var <name> = {...}`` (its results, its categories)."""
    match = re.search(rf"var {name} = (?=\{{)", html)
    assert match, f"the report declares no `{name}`"
    return json.JSONDecoder().raw_decode(html, match.end())[0]


def embedded_bytes(item: dict) -> bytes:
    return base64.b64decode(item["data_uri"].split(";base64,", 1)[1])


@pytest.fixture(scope="module")
def default_report(tmp_path_factory, env):
    """The default DAG's results and the report built from them."""
    workdir = tmp_path_factory.mktemp("default")
    results = workdir / "out"
    config = REPO / "config.yaml"
    run = run_cmd(
        snakemake(workdir, "--cores", "2", "--config", f"results_dir={results}", configfile=config),
        env,
        cwd=workdir,
        timeout=3600,
    )
    assert run.returncode == 0, run.stderr[-5000:]
    report = workdir / "report.html"
    build = run_cmd(
        snakemake(workdir, "--report", str(report), "--config", f"results_dir={results}", configfile=config),
        env,
        cwd=workdir,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    assert "WARNING/" not in build.stdout + build.stderr, "an RST caption did not render cleanly"
    cfg = validate_config(yaml.safe_load(config.read_text()), str(config))
    return report.read_text(), results / cfg.experiment, cfg


@pytest.mark.slow
def test_default_report_embeds_every_result(default_report):
    html, root, cfg = default_report
    items = embedded_object(html, "results")
    categories = embedded_object(html, "categories")
    assert set(items) == {str(root / path) for path in REPORTED}, "the report holds exactly the marked outputs"
    for path, category in REPORTED.items():
        item = items[str(root / path)]
        assert embedded_bytes(item) == (root / path).read_bytes(), path
        assert str(root / path) in [p for group in categories[category].values() for p in group], (path, category)
        caption = item["caption"]
        assert f'<tt class="docutils literal">{cfg.experiment}</tt>' in caption, path
        if path.startswith("figures/"):
            assert re.search(r"seeds? " + ", ".join(map(str, cfg.seeds)), caption), path
    # self-contained: nothing is fetched from elsewhere
    assert not re.search(r"""(src|href)=["'](https?:)?//""", html)

    def caption(path: str) -> str:
        return items[str(root / path)]["caption"]

    assert f"beta = {cfg.dpo.beta}, lr = {cfg.dpo.lr}" in caption("figures/fig1_dpo_dynamics.png")
    copo_runs = {name: run for name, run in cfg.runs.items() if run.controller is not None}
    assert copo_runs, "the default grid has Coordinated-PO runs"
    for name, run in copo_runs.items():
        assert f"k = {run.controller.k}, eta = {run.controller.eta}" in caption("figures/fig7_copo.png"), name


@pytest.mark.slow
def test_default_report_pages_show_the_tables(default_report):
    html, root, cfg = default_report
    items = embedded_object(html, "results")

    def page(path: str) -> str:
        return embedded_bytes(items[str(root / path)]).decode()

    winrates = page("report/winrates.html")
    table = pd.read_csv(root / "tables" / "winrates.csv")
    assert set(table["run"]) == set(cfg.runs)
    for row in table.itertuples():
        assert re.search(rf"<td[^>]*>{row.run}</td>", winrates), row.run
        low, high = row.final_prompt_ci_low, row.final_prompt_ci_high
        assert f"{row.final_win_rate:.3f} [{low:.3f}, {high:.3f}]" in winrates, row.run

    comparisons = page("report/comparisons.html")
    for row in pd.read_csv(root / "tables" / "comparisons.csv").itertuples():
        assert f'<td class="num">{row.difference:.3f}</td>' in comparisons, (row.variant, row.step)
        assert f"<td>{row.variant}</td>" in comparisons and f"<td>{row.verdict}</td>" in comparisons

    copo = page("report/copo.html")
    copo_table = pd.read_csv(root / "tables" / "copo.csv")
    assert set(copo_table["run"]) == {name for name, run in cfg.runs.items() if run.controller is not None}
    for row in copo_table.itertuples():
        assert f"<td>{row.run}</td>" in copo
        assert f'<td class="num">{row.cost_fraction:.3f}</td>' in copo
        assert f'<td class="num">{row.vs_baseline:.3f}</td>' in copo and f"<td>{row.vs_baseline_verdict}</td>" in copo

    claims = page("report/claims.html")
    claims_table = pd.read_csv(root / "claims.csv")
    assert f"{int(claims_table['holds'].sum())} of {len(claims_table)} claims hold." in claims
    for claim in claims_table["id"]:
        assert f"<td>{claim}</td>" in claims, claim
