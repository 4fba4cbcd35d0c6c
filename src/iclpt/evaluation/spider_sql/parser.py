"""Tokenizer and parser producing the official Spider SQL structure.

The output has the shape documented in the official ``process_sql.py``::

    col_unit   = (agg_id, col_id, is_distinct)
    val_unit   = (unit_op, col_unit1, col_unit2 | None)
    table_unit = ("table_unit", table_id) | ("sql", sql)
    cond_unit  = (not_op, op_id, val_unit, val1, val2)
    condition  = [cond_unit, "and" | "or", cond_unit, ...]
    sql = {select: (is_distinct, [(agg_id, val_unit)]), from: {table_units, conds},
           where, groupBy: [col_unit], having, orderBy: [] | (direction, [val_unit]),
           limit: None | 1, intersect, union, except}

The grammar (and its restrictions: table aliases need ``AS``, one direction per
ORDER BY, no comma joins, ...) follows the official parser so that the same
queries parse and produce the same structures.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .schema import ALL_COLUMNS, SpiderSchema, column_id, table_id

CLAUSE_KEYWORDS = ("select", "from", "where", "group", "order", "limit", "intersect", "union", "except")
JOIN_KEYWORDS = ("join", "on", "as")
WHERE_OPS = ("not", "between", "=", ">", "<", ">=", "<=", "!=", "in", "like", "is", "exists")
UNIT_OPS = ("none", "-", "+", "*", "/")
AGG_OPS = ("none", "max", "min", "count", "sum", "avg")
COND_OPS = ("and", "or")
SQL_OPS = ("intersect", "union", "except")
ORDER_OPS = ("desc", "asc")
_STOP = (")", ";")

Sql = dict[str, Any]
_TOKEN_RE = re.compile(r"[(),;=<>!]|[^\s(),;=<>!]+")


class SqlParseError(ValueError):
    """The SQL cannot be parsed against the schema by the Spider grammar."""


def tokenize(sql: str) -> list[str]:
    """Lower-cased tokens; quoted spans (``'`` treated as ``"``) stay single tokens."""
    text = str(sql).replace("'", '"')
    quotes = [i for i, ch in enumerate(text) if ch == '"']
    if len(quotes) % 2:
        raise SqlParseError("unbalanced quotes")
    values: dict[str, str] = {}
    for k in range(len(quotes) - 2, -1, -2):
        start, end = quotes[k], quotes[k + 1]
        key = f"__val_{start}_{end}__"
        values[key] = text[start : end + 1]
        text = text[:start] + f" {key} " + text[end + 1 :]
    toks = [values.get(t.lower(), t.lower()) for t in _TOKEN_RE.findall(text)]
    return _merge_comparisons(toks)


def _merge_comparisons(toks: list[str]) -> list[str]:
    merged: list[str] = []
    for tok in toks:
        if tok == "=" and merged and merged[-1] in ("!", ">", "<"):
            merged[-1] += "="
        else:
            merged.append(tok)
    return merged


def scan_aliases(toks: list[str], schema: SpiderSchema) -> dict[str, str]:
    """Every ``X AS Y`` in the whole query (last wins), plus each table mapped to itself."""
    aliases: dict[str, str] = {}
    for i, tok in enumerate(toks):
        if tok == "as":
            if i == 0 or i + 1 >= len(toks):
                raise SqlParseError("dangling AS")
            aliases[toks[i + 1]] = toks[i - 1]
    for table in schema.tables:
        if table in aliases:
            raise SqlParseError(f"alias {table!r} shadows a table")
        aliases[table] = table
    return aliases


class _Parser:
    """Recursive-descent parser over a token list; methods return ``(next_index, node)``."""

    def __init__(self, toks: list[str], schema: SpiderSchema, aliases: Mapping[str, str]) -> None:
        self.toks = toks
        self.schema = schema
        self.aliases = aliases

    # -- token helpers -------------------------------------------------
    def tok(self, i: int) -> str:
        if i >= len(self.toks):
            raise SqlParseError("unexpected end of query")
        return self.toks[i]

    def peek(self, i: int) -> str | None:
        return self.toks[i] if i < len(self.toks) else None

    def expect(self, i: int, tok: str) -> int:
        if self.peek(i) != tok:
            raise SqlParseError(f"expected {tok!r} at token {i}, got {self.peek(i)!r}")
        return i + 1

    def at_end_of_clause(self, i: int, extra: tuple[str, ...] = ()) -> bool:
        tok = self.peek(i)
        return tok is not None and (tok in CLAUSE_KEYWORDS or tok in _STOP or tok in extra)

    # -- columns -------------------------------------------------------
    def column(self, i: int, default_tables: list[str]) -> tuple[int, str]:
        tok = self.tok(i)
        if tok == "*":
            return i + 1, ALL_COLUMNS
        if "." in tok:
            return i + 1, self._qualified_column(tok)
        for alias in default_tables:
            table = self.aliases[alias]
            if self.schema.has_column(table, tok):
                return i + 1, column_id(table, tok)
        raise SqlParseError(f"unknown column {tok!r}")

    def _qualified_column(self, tok: str) -> str:
        parts = tok.split(".")
        if len(parts) != 2 or parts[0] not in self.aliases:
            raise SqlParseError(f"bad column reference {tok!r}")
        table = self.aliases[parts[0]]
        if not self.schema.has_column(table, parts[1]):
            raise SqlParseError(f"unknown column {tok!r}")
        return column_id(table, parts[1])

    def col_unit(self, i: int, dt: list[str]) -> tuple[int, tuple[int, str, bool]]:
        block = self.tok(i) == "("
        i += block
        if self.tok(i) in AGG_OPS:
            agg = AGG_OPS.index(self.tok(i))
            i = self.expect(i + 1, "(")
            distinct = self.tok(i) == "distinct"
            i, col = self.column(i + distinct, dt)
            return self.expect(i, ")"), (agg, col, distinct)  # official leaves an outer "(" open
        distinct = self.tok(i) == "distinct"
        i, col = self.column(i + distinct, dt)
        if block:
            i = self.expect(i, ")")
        return i, (AGG_OPS.index("none"), col, distinct)

    def val_unit(self, i: int, dt: list[str]) -> tuple[int, tuple[Any, ...]]:
        block = self.tok(i) == "("
        i += block
        i, unit1 = self.col_unit(i, dt)
        op, unit2 = UNIT_OPS.index("none"), None
        if self.peek(i) in UNIT_OPS:
            op = UNIT_OPS.index(self.toks[i])
            i, unit2 = self.col_unit(i + 1, dt)
        if block:
            i = self.expect(i, ")")
        return i, (op, unit1, unit2)

    # -- values and conditions ----------------------------------------
    def value(self, i: int, dt: list[str]) -> tuple[int, Any]:
        start = i
        block = self.tok(i) == "("
        i += block
        tok = self.tok(i)
        if tok == "select":
            i, val = self.sql(i)
        elif '"' in tok:
            i, val = i + 1, tok
        else:
            i, val = self._number_or_column(start, i, dt)
        if block:
            i = self.expect(i, ")")
        return i, val

    def _number_or_column(self, start: int, i: int, dt: list[str]) -> tuple[int, Any]:
        try:
            return i + 1, float(self.toks[i])
        except ValueError:
            pass
        end = i
        stops = (",", ")", "and") + CLAUSE_KEYWORDS + JOIN_KEYWORDS
        while end < len(self.toks) and self.toks[end] not in stops:
            end += 1
        sub = _Parser(self.toks[start:end], self.schema, self.aliases)
        return end, sub.col_unit(0, dt)[1]

    def condition(self, i: int, dt: list[str]) -> tuple[int, list[Any]]:
        conds: list[Any] = []
        while i < len(self.toks):
            i, unit = self._cond_unit(i, dt)
            conds.append(unit)
            if self.at_end_of_clause(i, JOIN_KEYWORDS):
                break
            if self.peek(i) in COND_OPS:
                conds.append(self.toks[i])
                i += 1
        return i, conds

    def _cond_unit(self, i: int, dt: list[str]) -> tuple[int, tuple[Any, ...]]:
        i, unit = self.val_unit(i, dt)
        not_op = self.tok(i) == "not"
        i += not_op
        if self.peek(i) not in WHERE_OPS:
            raise SqlParseError(f"bad condition operator {self.peek(i)!r}")
        op = WHERE_OPS.index(self.toks[i])
        i, val1 = self.value(i + 1, dt)
        val2 = None
        if op == WHERE_OPS.index("between"):
            if self.tok(i) != "and":
                raise SqlParseError("BETWEEN without AND")
            i, val2 = self.value(i + 1, dt)
        return i, (not_op, op, unit, val1, val2)

    # -- clauses -------------------------------------------------------
    def select(self, i: int, dt: list[str]) -> tuple[int, tuple[bool, list[Any]]]:
        i = self.expect(i, "select")
        distinct = self.peek(i) == "distinct"
        i += distinct
        units: list[Any] = []
        while i < len(self.toks) and self.toks[i] not in CLAUSE_KEYWORDS:
            agg = AGG_OPS.index("none")
            if self.toks[i] in AGG_OPS:
                agg = AGG_OPS.index(self.toks[i])
                i += 1
            i, unit = self.val_unit(i, dt)
            units.append((agg, unit))
            if self.peek(i) == ",":
                i += 1
        return i, (distinct, units)

    def from_clause(self, start: int) -> tuple[int, list[Any], list[Any], list[str]]:
        if "from" not in self.toks[start:]:
            raise SqlParseError("FROM not found")
        i = self.toks.index("from", start) + 1
        dt: list[str] = []
        units: list[Any] = []
        conds: list[Any] = []
        while i < len(self.toks):
            i = self._from_item(i, dt, units, conds)
            if self.at_end_of_clause(i):
                break
        return i, units, conds, dt

    def _from_item(self, i: int, dt: list[str], units: list[Any], conds: list[Any]) -> int:
        block = self.tok(i) == "("
        i += block
        if self.tok(i) == "select":
            i, sub = self.sql(i)
            units.append(("sql", sub))
        else:
            i += self.peek(i) == "join"
            i, name = self._table(i)
            units.append(("table_unit", table_id(name)))
            dt.append(name)
        if self.peek(i) == "on":
            i, more = self.condition(i + 1, dt)
            conds.extend((["and"] if conds else []) + more)
        return self.expect(i, ")") if block else i

    def _table(self, i: int) -> tuple[int, str]:
        name = self.aliases.get(self.tok(i))
        if name is None or name not in self.schema.tables:
            raise SqlParseError(f"unknown table {self.tok(i)!r}")
        return (i + 3 if self.peek(i + 1) == "as" else i + 1), name

    def _keyword_clause(self, i: int, word: str, dt: list[str]) -> tuple[int, list[Any]]:
        if self.peek(i) != word:
            return i, []
        return self.condition(i + 1, dt)

    def group_by(self, i: int, dt: list[str]) -> tuple[int, list[Any]]:
        units: list[Any] = []
        if self.peek(i) != "group":
            return i, units
        i = self.expect(i + 1, "by")
        while i < len(self.toks) and not self.at_end_of_clause(i):
            i, unit = self.col_unit(i, dt)
            units.append(unit)
            if self.peek(i) != ",":
                break
            i += 1
        return i, units

    def order_by(self, i: int, dt: list[str]) -> tuple[int, Any]:
        if self.peek(i) != "order":
            return i, []
        i = self.expect(i + 1, "by")
        direction, units = "asc", []
        while i < len(self.toks) and not self.at_end_of_clause(i):
            i, unit = self.val_unit(i, dt)
            units.append(unit)
            if self.peek(i) in ORDER_OPS:
                direction = self.toks[i]
                i += 1
            if self.peek(i) != ",":
                break
            i += 1
        return i, (direction, units)

    def limit(self, i: int) -> tuple[int, int | None]:
        if self.peek(i) != "limit":
            return i, None
        self.tok(i + 1)
        return i + 2, 1  # the official always records the limit value as 1

    def skip_semicolons(self, i: int) -> int:
        while self.peek(i) == ";":
            i += 1
        return i

    def sql(self, i: int) -> tuple[int, Sql]:
        block = self.tok(i) == "("
        from_end, units, conds, dt = self.from_clause(i)
        result: Sql = {"from": {"table_units": units, "conds": conds}}
        result["select"] = self.select(i + block, dt)[1]
        j, result["where"] = self._keyword_clause(from_end, "where", dt)
        j, result["groupBy"] = self.group_by(j, dt)
        j, result["having"] = self._keyword_clause(j, "having", dt)
        j, result["orderBy"] = self.order_by(j, dt)
        j, result["limit"] = self.limit(j)
        j = self.skip_semicolons(j)
        if block:
            j = self.expect(j, ")")
        j = self.skip_semicolons(j)
        for op in SQL_OPS:
            result[op] = None
        if self.peek(j) in SQL_OPS:
            op = self.toks[j]
            j, result[op] = self.sql(j + 1)
        return j, result


def parse_sql(query: str, schema: SpiderSchema) -> Sql:
    """Parse ``query`` into the official structure; raise :class:`SqlParseError` on failure."""
    toks = tokenize(query)
    parser = _Parser(toks, schema, scan_aliases(toks, schema))
    try:
        return parser.sql(0)[1]
    except SqlParseError:
        raise
    except (KeyError, IndexError, ValueError) as exc:  # defensive: any malformed input
        raise SqlParseError(str(exc)) from exc
