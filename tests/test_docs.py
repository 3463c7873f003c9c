"""Self-contained documentation: config/README.md is generated from the config schema and
current, every key has a description, and the README, docs/ and docstrings point to nothing
outside the repository."""

from __future__ import annotations

import re
import typing

from pydantic import BaseModel

from conftest import REPO
from podyn import config_docs
from podyn.config import SCHEMA_PATH, Config


def test_config_readme_is_current():
    committed = (REPO / "config" / "README.md").read_text()
    assert committed == config_docs.render(), "config/README.md is out of date: run `python -m podyn.config_docs`"
    assert config_docs.main(["--check"]) == 0


def test_every_config_key_has_a_description():
    docs = config_docs.SchemaDocs(config_docs.load_schema(SCHEMA_PATH))
    docs.render()
    undocumented = [key for key, text in docs.descriptions.items() if not text.strip()]
    assert not undocumented, f"keys without a description in the schema: {undocumented}"
    expected = {"dpo.beta", "ppo.kl_coef", "dynamics.method", "runs.<name>.weights.pos", "winrate.confidence"}
    assert expected <= set(docs.descriptions)
    assert "WeightSpec" in docs.named_types  # the schedules, documented once under "Value types"


def config_leaf_keys(model: type[BaseModel], path: str = "") -> set[str]:
    """Every key of the config models as config/README.md names it: records flattened into dotted
    names, ``<name>`` for a mapping of records, optional records (``X | None``) walked too."""
    keys = set()
    for name, field in model.model_fields.items():
        key = f"{path}.{name}" if path else name
        annotation = field.annotation
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if typing.get_origin(annotation) is dict and isinstance(args[-1], type) and issubclass(args[-1], BaseModel):
            keys |= config_leaf_keys(args[-1], f"{key}.<name>")
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= config_leaf_keys(annotation, key)
        elif len(args) == 1 and isinstance(args[0], type) and issubclass(args[0], BaseModel):
            keys |= {key} | config_leaf_keys(args[0], key)
        else:
            keys.add(key)
    return keys


def test_every_config_key_is_on_the_page():
    """Keys inside sections that are null by default (a run's cdpo and controller, model.build_checkpoint,
    data.roles.judge_prefs) are listed too, not just their section."""
    docs = config_docs.SchemaDocs(config_docs.load_schema(SCHEMA_PATH))
    docs.render()
    missing = config_leaf_keys(Config) - set(docs.descriptions)
    assert not missing, f"config keys missing from config/README.md: {sorted(missing)}"
    nested = {"runs.<name>.controller.eta", "runs.<name>.cdpo.rho", "model.build_checkpoint.size"}
    assert nested <= set(docs.descriptions)


def test_check_fails_on_a_stale_page(tmp_path, capsys):
    stale = tmp_path / "README.md"
    stale.write_text(config_docs.render().replace("dpo.beta", "dpo.betta"))
    assert config_docs.main(["--check", "--out", str(stale)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert config_docs.main(["--out", str(stale)]) == 0 and config_docs.main(["--check", "--out", str(stale)]) == 0


def test_docs_and_docstrings_stay_inside_the_repository():
    """The spec lives in docs/method.md; nothing a user reads may point to a file beside the checkout."""
    outside = re.compile(r"\.\./shared|shared/docs|(?<![\w/])\.\./\.\.")
    files = [
        REPO / "README.md",
        REPO / "bench" / "README.md",
        *sorted((REPO / "docs").rglob("*.md")),
        *sorted((REPO / "config").glob("*.md")),
        *sorted((REPO / "src").rglob("*.py")),
        *sorted((REPO / "workflow").rglob("*.smk")),
        *sorted((REPO / "workflow").rglob("*.rst")),
        SCHEMA_PATH,
    ]
    hits = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for path in files
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if outside.search(line)
    ]
    assert not hits, "\n".join(hits)
    assert (REPO / "docs" / "method.md").exists()
    # every section the docstrings cite exists
    method = (REPO / "docs" / "method.md").read_text()
    cited = {int(n) for path in files for n in re.findall(r"method\.md §(\d+)", path.read_text())}
    headings = {int(n) for n in re.findall(r"^## (\d+)\. ", method, re.MULTILINE)}
    assert cited <= headings, cited - headings


def test_method_cites_existing_config_keys():
    """Every `section.key` that docs/method.md names is a key of the config (keys still to come are
    marked in HTML comments, which are skipped)."""
    docs = config_docs.SchemaDocs(config_docs.load_schema(SCHEMA_PATH))
    docs.render()
    keys = set(docs.descriptions)
    sections = {key.split(".")[0] for key in keys}
    text = re.sub(r"<!--.*?-->", "", (REPO / "docs" / "method.md").read_text(), flags=re.DOTALL)
    cited = set(re.findall(r"`([a-z_]+(?:\.[a-z_<>*]+)+)`", text))
    cited = {c for c in cited if c.split(".")[0] in sections and not re.search(r"\.(md|csv|py|yaml)$", c)}
    assert len(cited) > 30
    known = keys | {".".join(k.split(".")[:n]) for k in keys for n in range(1, k.count(".") + 1)}
    unknown = [c for c in sorted(cited) if "*" not in c and c not in known]
    assert not unknown, f"docs/method.md names config keys that do not exist: {unknown}"
