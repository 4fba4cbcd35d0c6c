"""config/README.md's key reference, generated from workflow/schemas/config.schema.yaml (`make config-readme`).

One row per key, in the schema's order, as a dotted path (`tasks.<task>.files.train`, `models.<model>.gguf.sha256`,
`resources.<rule>.mem_mb`): its type, default and description. The schema is the only place defaults live; this
page only shows them, and a test fails when it is out of date.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from iclpt.io import atomic_open
from iclpt.reporting.readme import splice

BLOCK = "schema"
#: placeholder of a key chosen by the user (additionalProperties), by the parent key's name
PLACEHOLDERS = {"tasks": "<task>", "models": "<model>", "resources": "<rule>"}


def _resolve(node: Mapping[str, Any], schema: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = node.get("$ref")
    if not ref:
        return node
    target: Any = schema
    for part in ref.lstrip("#/").split("/"):
        target = target[part]
    return {**target, **{k: v for k, v in node.items() if k != "$ref"}}


def _type(node: Mapping[str, Any]) -> str:
    if "enum" in node:
        return " \\| ".join(json.dumps(v) for v in node["enum"])
    t = node.get("type", "")
    if isinstance(t, list):
        t = " or ".join(t)
    if t == "array" and isinstance(node.get("items"), Mapping) and node["items"].get("type"):
        t = f"array of {node['items']['type']}"
    return str(t)


def _default(node: Mapping[str, Any]) -> str:
    return f"`{json.dumps(node['default'])}`" if "default" in node else ""


def _text(node: Mapping[str, Any]) -> str:
    text = " ".join(str(node.get("description", "")).split())
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def rows(node: Mapping[str, Any], schema: Mapping[str, Any], path: str = "") -> Iterator[tuple[str, ...]]:
    """(key path, type, default, description) of `node`'s keys, depth first in the schema's order."""
    node = _resolve(node, schema)
    for key, child in (node.get("properties") or {}).items():
        child = _resolve(child, schema)
        name = f"{path}.{key}" if path else key
        yield name, _type(child), _default(child), _text(child)
        yield from rows(child, schema, name)
    extra = node.get("additionalProperties")
    if isinstance(extra, Mapping) and path:
        leaf = path.rsplit(".", 1)[-1]
        yield from rows(extra, schema, f"{path}.{PLACEHOLDERS.get(leaf, '<name>')}")


def render(schema: Mapping[str, Any]) -> str:
    lines = [f"Generated from `workflow/schemas/config.schema.yaml` by `make config-readme`. {_text(schema)}", "",
             "| key | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{k}` | {t} | {d} | {x} |" for k, t, d, x in rows(schema, schema)]
    return "\n".join(lines) + "\n"


def load_schema(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m iclpt.orchestration.schema_doc", description=__doc__.split("\n")[0])
    ap.add_argument("readme", type=Path)
    ap.add_argument("--schema", type=Path, default=Path("workflow/schemas/config.schema.yaml"))
    args = ap.parse_args(argv)
    text = splice(args.readme.read_text(), BLOCK, render(load_schema(args.schema)))
    with atomic_open(args.readme) as f:
        f.write(text)


if __name__ == "__main__":
    main()
