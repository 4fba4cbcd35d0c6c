"""config/README.md's key reference is generated from the schema and up to date (iclpt.orchestration.schema_doc)."""

from __future__ import annotations

from iclpt.orchestration.schema_doc import load_schema, render, rows
from iclpt.reporting.readme import splice


def test_config_readme_is_the_schema_rendered(repo_root):
    """Fails when the schema changed and `make config-readme` was not run."""
    readme = (repo_root / "config" / "README.md").read_text()
    schema = load_schema(repo_root / "workflow" / "schemas" / "config.schema.yaml")
    assert splice(readme, "schema", render(schema)) == readme, "config/README.md is stale: run make config-readme"


def test_every_key_and_default_of_the_schema_is_listed(repo_root):
    schema = load_schema(repo_root / "workflow" / "schemas" / "config.schema.yaml")
    table = {k: (t, d) for k, t, d, _ in rows(schema, schema)}
    for top in schema["properties"]:
        assert top in table
    assert table["train.lr"][1].strip("`") == str(schema["properties"]["train"]["properties"]["lr"]["default"])
    assert "tasks.<task>.files.train" in table and "models.<model>.gguf.sha256" in table
    assert "resources.<rule>.mem_mb" in table


def test_refs_placeholders_and_escaping():
    schema = {"description": "top", "properties": {
        "tasks": {"type": "object", "additionalProperties": {"$ref": "#/$defs/t"}},
        "mode": {"enum": ["a", "b"], "default": "a", "description": "x | y <z>"}},
        "$defs": {"t": {"type": "object", "properties": {"n": {"type": ["integer", "null"], "default": None}}}}}
    got = list(rows(schema, schema))
    assert got == [("tasks", "object", "", ""), ("tasks.<task>.n", "integer or null", "`null`", ""),
                   ("mode", '"a" \\| "b"', '`"a"`', "x \\| y &lt;z&gt;")]
