"""Database schemas for the Spider parser: lower-cased table -> columns, plus the foreign-key map."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

ALL_COLUMNS = "__all__"


@dataclass(frozen=True)
class SpiderSchema:
    """Lower-cased ``table -> columns`` and the foreign-key canonicalisation map.

    ``foreign_key_map`` maps a column id (``"__table.column__"``) to the id of the
    representative column of its foreign-key group, as the official
    ``build_foreign_key_map`` does.
    """

    tables: Mapping[str, tuple[str, ...]]
    foreign_key_map: Mapping[str, str] = field(default_factory=dict)

    def has_column(self, table: str, column: str) -> bool:
        """True when ``table`` exists and has ``column`` (both lower-case)."""
        return column in self.tables.get(table, ())


SchemaLike = Union[SpiderSchema, Mapping[str, Any], str, "os.PathLike[str]"]


def column_id(table: str, column: str) -> str:
    """The official identifier of a column."""
    return f"__{table}.{column}__"


def table_id(table: str) -> str:
    """The official identifier of a table."""
    return f"__{table}__"


def _group_foreign_keys(pairs: Sequence[tuple[Any, Any]]) -> list[set[Any]]:
    """Group keys the way the official does: a pair joins the first group holding either key."""
    groups: list[set[Any]] = []
    for left, right in pairs:
        target = next((g for g in groups if left in g or right in g), None)
        if target is None:
            target = set()
            groups.append(target)
        target.update((left, right))
    return groups


def _fk_map_from_groups(groups: list[set[int]], ids: Sequence[str]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for group in groups:
        ordered = sorted(group)
        for index in ordered:
            mapping[ids[index]] = ids[ordered[0]]
    return mapping


def foreign_key_map_from_entry(entry: Mapping[str, Any]) -> dict[str, str]:
    """Foreign-key map of a ``tables.json`` entry (column order of ``column_names_original``)."""
    tables = [str(t).lower() for t in entry["table_names_original"]]
    ids = [
        column_id(tables[t], str(c).lower()) if t >= 0 else ALL_COLUMNS
        for t, c in entry["column_names_original"]
    ]
    pairs = [(int(a), int(b)) for a, b in entry.get("foreign_keys", [])]
    return _fk_map_from_groups(_group_foreign_keys(pairs), ids)


def schema_from_tables_entry(entry: Mapping[str, Any]) -> SpiderSchema:
    """Schema from one ``tables.json`` entry (original, not normalised, names)."""
    tables = [str(t).lower() for t in entry["table_names_original"]]
    columns: dict[str, list[str]] = {t: [] for t in tables}
    for t, c in entry["column_names_original"]:
        if t >= 0:
            columns[tables[t]].append(str(c).lower())
    return SpiderSchema(
        {t: tuple(cols) for t, cols in columns.items()}, foreign_key_map_from_entry(entry)
    )


def _connect_ro(db_path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)


def _sqlite_tables(conn: sqlite3.Connection) -> dict[str, tuple[str, ...]]:
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    tables: dict[str, tuple[str, ...]] = {}
    for name in names:
        quoted = '"' + name.replace('"', '""') + '"'
        cols = conn.execute(f"PRAGMA table_info({quoted})").fetchall()
        tables[name.lower()] = tuple(str(c[1]).lower() for c in cols)
    return tables


def _sqlite_fk_pairs(conn: sqlite3.Connection, tables: Mapping[str, tuple[str, ...]]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for table in tables:
        quoted = '"' + table.replace('"', '""') + '"'
        for row in conn.execute(f"PRAGMA foreign_key_list({quoted})").fetchall():
            ref_table, src, dst = str(row[2]).lower(), row[3], row[4]
            if src is None or dst is None:
                continue
            pairs.append((column_id(table, str(src).lower()), column_id(ref_table, str(dst).lower())))
    return pairs


def _fk_map_from_id_pairs(pairs: list[tuple[str, str]], tables: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    order = [column_id(t, c) for t, cols in tables.items() for c in cols]
    rank = {cid: i for i, cid in enumerate(order)}
    index_pairs = [(rank[a], rank[b]) for a, b in pairs if a in rank and b in rank]
    return _fk_map_from_groups(_group_foreign_keys(index_pairs), order)


def schema_from_sqlite(
    db_path: str | os.PathLike[str], tables_entry: Mapping[str, Any] | None = None
) -> SpiderSchema:
    """Schema read from the SQLite file (names as the official ``get_schema``).

    Foreign keys come from ``tables_entry`` (the official uses ``tables.json``)
    when given, else from ``PRAGMA foreign_key_list``.
    """
    path = Path(db_path)
    if not path.is_file():
        raise FileNotFoundError(f"SQLite database not found: {path}")
    conn = _connect_ro(path)
    try:
        tables = _sqlite_tables(conn)
        fk_pairs = _sqlite_fk_pairs(conn, tables) if tables_entry is None else []
    finally:
        conn.close()
    if tables_entry is not None:
        return SpiderSchema(tables, foreign_key_map_from_entry(tables_entry))
    return SpiderSchema(tables, _fk_map_from_id_pairs(fk_pairs, tables))


def as_schema(schema: SchemaLike) -> SpiderSchema:
    """Accept a :class:`SpiderSchema`, a ``tables.json`` entry or a SQLite path."""
    if isinstance(schema, SpiderSchema):
        return schema
    if isinstance(schema, Mapping):
        return schema_from_tables_entry(schema)
    return schema_from_sqlite(schema)
