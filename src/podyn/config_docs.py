"""``config/README.md``: every config key, rendered from the config schema's descriptions.

The schema is the one source of the keys, their types, defaults and help text; this page is
generated from it, never edited by hand::

    python -m podyn.config_docs            # rewrite config/README.md
    python -m podyn.config_docs --check    # exit 1 if config/README.md is out of date

A test runs the check, so a key added without regenerating the page (or without a
description) fails the suite.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator

import yaml

from .config import SCHEMA_PATH

README_PATH = Path(__file__).resolve().parents[2] / "config" / "README.md"
WIDTH = 100

INTRO = """\
Every key of the podyn configuration, with its type, default and meaning. `config.yaml` (the
embedded default) sets some keys to other values than the defaults listed here; any key can be
changed in a config file passed with `--configfile` (merged over `config.yaml`) or on the command
line (`snakemake --config seeds=[0,1,2]`). Keys marked **[choice]** are places where the paper is
silent and [`docs/method.md`](../docs/method.md) fixed an interpretation; the default is that
choice. `<name>` stands for a name you choose (a run, a panel)."""


def load_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text())


class SchemaDocs:
    """Walks a JSON schema (``definitions`` or ``$defs``, ``$ref``, ``oneOf``/``anyOf``) and
    renders one entry per key, sections per top-level object, and the value types that are
    referenced by name (such as the weight schedules)."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self.named_types: dict[str, dict[str, Any]] = {}  # referenced value types, rendered at the end
        self.descriptions: dict[str, str] = {}  # every key rendered, with its description ("" if none)

    def resolve(self, node: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """The node with its ``$ref`` followed (sibling keys win), and the referenced name."""
        if "$ref" not in node:
            return node, None
        target: Any = self.schema
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        name = node["$ref"].rsplit("/", 1)[-1]
        merged, _ = self.resolve(target)
        return {**merged, **{k: v for k, v in node.items() if k != "$ref"}}, name

    def is_named_type(self, target: dict[str, Any]) -> bool:
        """A referenced type worth its own paragraph: it has a description and is not a record."""
        return "description" in target and "properties" not in target

    def type_text(self, node: dict[str, Any]) -> str:
        if "$ref" in node:
            target, name = self.resolve({"$ref": node["$ref"]})
            if self.is_named_type(target):
                self.named_types[name] = target
                return f"`{name}` (see [value types](#value-types))"
            return self.type_text(target)
        if "enum" in node:
            return "one of " + ", ".join(f"`{yaml_inline(v)}`" for v in node["enum"])
        for key in ("oneOf", "anyOf"):
            if key in node:
                return " or ".join(self.type_text(alternative) for alternative in node[key])
        kind = node.get("type", "any")
        if isinstance(kind, list):
            return " or ".join(self.type_text({**node, "type": k}) for k in kind)
        if kind in ("number", "integer"):
            return kind + bounds_text(node)
        if kind == "array":
            items = self.type_text(node["items"]) if "items" in node else "values"
            size = f" of {node['minItems']}" if node.get("minItems") is not None and node.get("minItems") == node.get("maxItems") else ""
            return f"list{size} of {items}"
        if kind == "object" and isinstance(node.get("additionalProperties"), dict):
            keys = node.get("propertyNames", {}).get("enum")
            key_text = " / ".join(f"`{k}`" for k in keys) if keys else "name"
            return f"mapping {key_text} -> {self.type_text(node['additionalProperties'])}"
        return {"null": "null", "boolean": "true / false", "string": "string", "object": "mapping"}.get(kind, kind)

    def entries(self, node: dict[str, Any], path: str) -> Iterator[str]:
        """One bullet per key under ``node`` (records are flattened into dotted names)."""
        node, _ = self.resolve(node)
        for key, child in node.get("properties", {}).items():
            yield from self.entry(child, f"{path}.{key}" if path else key)
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and "properties" in self.resolve(extra)[0]:
            yield from self.entry(extra, f"{path}.<name>")

    def entry(self, child: dict[str, Any], path: str) -> Iterator[str]:
        resolved, _ = self.resolve(child)
        description = child.get("description") or resolved.get("description") or ""
        self.descriptions[path] = description
        is_record = "properties" in resolved or (
            isinstance(resolved.get("additionalProperties"), dict) and "properties" in self.resolve(resolved["additionalProperties"])[0]
        )
        if is_record:
            if description:
                yield bullet(f"**`{path}`**: {description}")
            yield from self.entries(resolved, path)
            return
        text = f"**`{path}`** ({self.type_text(child)}"
        if "default" in resolved:
            text += f"; default `{yaml_inline(resolved['default'])}`"
        yield bullet(text + f"): {description}")

    def render(self) -> str:
        schema = self.schema
        lines = ["# Configuration keys", "", "<!-- Generated by `python -m podyn.config_docs` from the config schema; do not edit. -->", ""]
        lines += [INTRO, ""]
        top = [k for k, v in schema["properties"].items() if "properties" not in self.resolve(v)[0] and k != "runs"]
        sections = [k for k in schema["properties"] if k not in top]
        lines += ["## Top level", ""]
        for key in top:
            lines += list(self.entry(schema["properties"][key], key))
        for key in sections:
            node = schema["properties"][key]
            lines += ["", f"## `{key}`", ""]
            resolved, _ = self.resolve(node)
            description = node.get("description") or resolved.get("description")
            if description:
                lines += [textwrap.fill(description, WIDTH), ""]
            lines += list(self.entries(resolved, key))
        if self.named_types:
            lines += ["", "## Value types", ""]
            for name, node in self.named_types.items():
                lines += [f"### `{name}`", "", textwrap.fill(node["description"], WIDTH), ""]
                alternatives = node.get("oneOf") or node.get("anyOf") or []
                lines += [bullet(alt["description"]) for alt in alternatives if "description" in alt]
                lines += [""] if alternatives else []
        return "\n".join(lines).rstrip() + "\n"


def bounds_text(node: dict[str, Any]) -> str:
    """' >= 0', ' > 0', ' in [0, 1]', ' in (0, 1)' from the schema's bounds."""
    low = ("[", node["minimum"]) if "minimum" in node else ("(", node.get("exclusiveMinimum"))
    high = ("]", node["maximum"]) if "maximum" in node else (")", node.get("exclusiveMaximum"))
    if low[1] is not None and high[1] is not None:
        return f" in {low[0]}{low[1]}, {high[1]}{high[0]}"
    if low[1] is not None:
        return f" {'>=' if low[0] == '[' else '>'} {low[1]}"
    if high[1] is not None:
        return f" {'<=' if high[0] == ']' else '<'} {high[1]}"
    return ""


def yaml_inline(value: Any) -> str:
    """A value as it would be written in the YAML config, on one line."""
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()


def bullet(text: str) -> str:
    return textwrap.fill(text, WIDTH, initial_indent="- ", subsequent_indent="  ", break_long_words=False, break_on_hyphens=False)


def render(schema: dict[str, Any] | None = None) -> str:
    """The text of ``config/README.md``."""
    return SchemaDocs(schema if schema is not None else load_schema()).render()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m podyn.config_docs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that the file is current (exit 1 if not)")
    parser.add_argument("--out", type=Path, default=README_PATH, help="output file (default: config/README.md)")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not args.out.exists() or args.out.read_text() != text:
            print(f"{args.out} is out of date: run `python -m podyn.config_docs`", file=sys.stderr)
            return 1
        return 0
    from .io import write_text

    write_text(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
