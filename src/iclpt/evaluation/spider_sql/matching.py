"""Exact set match on parsed Spider SQL, following the official ``evaluation.py``.

Before comparing, both trees are rebuilt as the official does with its default
flags (``DISABLE_VALUE`` and ``DISABLE_DISTINCT``): literal values are dropped,
DISTINCT flags are dropped and columns are replaced by the representative of
their foreign-key group (when their table is in the FROM clause).  Then the ten
partial components must all score 1 and the FROM table units must agree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .parser import SQL_OPS, WHERE_OPS, Sql
from .schema import SpiderSchema, column_id

Totals = tuple[int, int, int]  # label_total, pred_total, matched


# -- value masking (rebuild_sql_val) -------------------------------------
def _mask_cond_unit(unit: tuple[Any, ...]) -> tuple[Any, ...]:
    not_op, op, val_unit, val1, val2 = unit
    val1 = mask_values(val1) if isinstance(val1, dict) else None
    val2 = mask_values(val2) if isinstance(val2, dict) else None
    return not_op, op, val_unit, val1, val2


def _mask_condition(cond: list[Any]) -> list[Any]:
    return [_mask_cond_unit(u) if k % 2 == 0 else u for k, u in enumerate(cond)]


def _mask_table_unit(unit: tuple[Any, Any]) -> tuple[Any, Any]:
    # Deliberate difference: the official leaves FROM-subqueries unmasked.
    return (unit[0], mask_values(unit[1])) if isinstance(unit[1], dict) else unit


def mask_values(sql: Sql | None) -> Sql | None:
    """Drop literal values everywhere (nested queries kept and masked in turn)."""
    if sql is None:
        return None
    out = dict(sql)
    out["from"] = {
        "table_units": [_mask_table_unit(u) for u in sql["from"]["table_units"]],
        "conds": _mask_condition(sql["from"]["conds"]),
    }
    for key in ("where", "having"):
        out[key] = _mask_condition(sql[key])
    for op in SQL_OPS:
        out[op] = mask_values(sql[op])
    return out


# -- column rebuild (rebuild_sql_col) -------------------------------------
class _ColumnRebuilder:
    """Applies the foreign-key map to columns of FROM tables and drops DISTINCT."""

    def __init__(self, valid: set[str], fk_map: Mapping[str, str]) -> None:
        self.valid = valid
        self.fk_map = fk_map

    def col_unit(self, unit: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
        if unit is None:
            return None
        agg, col, _distinct = unit
        if col in self.fk_map and col in self.valid:
            col = self.fk_map[col]
        return agg, col, None

    def val_unit(self, unit: tuple[Any, ...]) -> tuple[Any, ...]:
        op, unit1, unit2 = unit
        return op, self.col_unit(unit1), self.col_unit(unit2)

    def condition(self, cond: list[Any]) -> list[Any]:
        return [
            (u[0], u[1], self.val_unit(u[2]), u[3], u[4]) if k % 2 == 0 else u
            for k, u in enumerate(cond)
        ]

    def sql(self, sql: Sql | None) -> Sql | None:
        if sql is None:
            return None
        out = dict(sql)
        out["select"] = (None, [(agg, self.val_unit(u)) for agg, u in sql["select"][1]])
        out["from"] = {"table_units": sql["from"]["table_units"], "conds": self.condition(sql["from"]["conds"])}
        out["where"] = self.condition(sql["where"])
        out["having"] = self.condition(sql["having"])
        out["groupBy"] = [self.col_unit(u) for u in sql["groupBy"]]
        if sql["orderBy"]:
            out["orderBy"] = (sql["orderBy"][0], [self.val_unit(u) for u in sql["orderBy"][1]])
        for op in SQL_OPS:
            out[op] = self.sql(sql[op])  # the official reuses the outer FROM's columns
        return out


def _valid_columns(table_units: list[Any], schema: SpiderSchema) -> set[str]:
    names = {u[1][2:-2] for u in table_units if u[0] == "table_unit"}
    return {column_id(t, c) for t in names for c in schema.tables.get(t, ())}


def normalise(sql: Sql, schema: SpiderSchema) -> Sql:
    """Mask values, then canonicalise columns as the official evaluator does."""
    valid = _valid_columns(sql["from"]["table_units"], schema)
    masked = mask_values(sql)
    assert masked is not None
    rebuilt = _ColumnRebuilder(valid, schema.foreign_key_map).sql(masked)
    assert rebuilt is not None
    return rebuilt


# -- partial components ---------------------------------------------------
def _multiset_hits(pred: list[Any], label: list[Any]) -> int:
    remaining = list(label)
    hits = 0
    for item in pred:
        if item in remaining:
            hits += 1
            remaining.remove(item)
    return hits


def _units_totals(pred: list[Any], label: list[Any]) -> Totals:
    return len(label), len(pred), _multiset_hits(pred, label)


def eval_select(pred: Sql, label: Sql) -> Totals:
    """Select items (aggregate, expression) as a multiset; DISTINCT ignored."""
    return _units_totals(pred["select"][1], label["select"][1])


def eval_select_no_agg(pred: Sql, label: Sql) -> Totals:
    return _units_totals([u[1] for u in pred["select"][1]], [u[1] for u in label["select"][1]])


def eval_where(pred: Sql, label: Sql) -> Totals:
    """WHERE condition units as a multiset."""
    return _units_totals(pred["where"][::2], label["where"][::2])


def eval_where_no_op(pred: Sql, label: Sql) -> Totals:
    return _units_totals([u[2] for u in pred["where"][::2]], [u[2] for u in label["where"][::2]])


def _bare_column(col_id: str) -> str:
    return col_id.split(".")[1] if "." in col_id else col_id


def eval_group(pred: Sql, label: Sql) -> Totals:
    """GROUP BY column names (table ignored) as a multiset."""
    return _units_totals(
        [_bare_column(u[1]) for u in pred["groupBy"]], [_bare_column(u[1]) for u in label["groupBy"]]
    )


def eval_having(pred: Sql, label: Sql) -> Totals:
    """With GROUP BY on both sides: identical ordered group columns and identical HAVING."""
    pred_total, label_total = int(bool(pred["groupBy"])), int(bool(label["groupBy"]))
    same = [u[1] for u in pred["groupBy"]] == [u[1] for u in label["groupBy"]]
    hit = pred_total == label_total == 1 and same and pred["having"] == label["having"]
    return label_total, pred_total, int(hit)


def eval_order(pred: Sql, label: Sql) -> Totals:
    """ORDER BY identical (one direction, ordered items) and LIMIT present on both or neither."""
    pred_total, label_total = int(bool(pred["orderBy"])), int(bool(label["orderBy"]))
    limits_agree = (pred["limit"] is None) == (label["limit"] is None)
    hit = bool(label["orderBy"]) and pred["orderBy"] == label["orderBy"] and limits_agree
    return label_total, pred_total, int(hit)


def eval_and_or(pred: Sql, label: Sql) -> Totals:
    """The set of WHERE connectors."""
    pred_ops, label_ops = set(pred["where"][1::2]), set(label["where"][1::2])
    return (1, 1, 1) if pred_ops == label_ops else (len(pred_ops), len(label_ops), 0)


def eval_iuen(pred: Sql, label: Sql) -> Totals:
    """INTERSECT / EXCEPT / UNION branches, each compared by exact match."""
    label_total = pred_total = hits = 0
    for op in ("intersect", "except", "union"):
        p, g = pred[op], label[op]
        pred_total += p is not None
        label_total += g is not None
        if p is not None and g is not None:
            hits += exact_match_normalised(p, g)
    return label_total, pred_total, hits


def keywords(sql: Sql) -> set[str]:
    """The official ``get_keywords``."""
    found = {name for name, key in (("where", "where"), ("group", "groupBy"), ("having", "having")) if sql[key]}
    if sql["orderBy"]:
        found |= {"order", sql["orderBy"][0]}
    found |= {op for op in ("limit",) + SQL_OPS if sql[op] is not None}
    units = sql["from"]["conds"][::2] + sql["where"][::2] + sql["having"][::2]
    connectors = sql["from"]["conds"][1::2] + sql["where"][1::2] + sql["having"][1::2]
    if "or" in connectors:
        found.add("or")
    if any(u[0] for u in units):
        found.add("not")
    for word in ("in", "like"):
        if any(u[1] == WHERE_OPS.index(word) for u in units):
            found.add(word)
    return found


def eval_keywords(pred: Sql, label: Sql) -> Totals:
    pred_kw, label_kw = keywords(pred), keywords(label)
    return len(label_kw), len(pred_kw), len(pred_kw & label_kw)


COMPONENTS: dict[str, Callable[[Sql, Sql], Totals]] = {
    "select": eval_select,
    "select(no AGG)": eval_select_no_agg,
    "where": eval_where,
    "where(no OP)": eval_where_no_op,
    "group(no Having)": eval_group,
    "group": eval_having,
    "order": eval_order,
    "and/or": eval_and_or,
    "IUEN": eval_iuen,
    "keywords": eval_keywords,
}


def component_score(totals: Totals) -> int:
    """Official ``get_scores`` (acc = rec = f1): 1 iff totals agree and all matched."""
    label_total, pred_total, hits = totals
    return int(pred_total == label_total and hits == pred_total)


def partial_scores(pred: Sql, label: Sql) -> dict[str, int]:
    """Score (0/1) of each official partial component on normalised trees."""
    return {name: component_score(fn(pred, label)) for name, fn in COMPONENTS.items()}


def _sorted_units(units: list[Any]) -> list[Any]:
    return sorted(units, key=repr)


def exact_match_normalised(pred: Sql, label: Sql) -> bool:
    """Official ``eval_exact_match`` on trees already passed through :func:`normalise`."""
    if not all(partial_scores(pred, label).values()):
        return False
    if label["from"]["table_units"]:
        return _sorted_units(label["from"]["table_units"]) == _sorted_units(pred["from"]["table_units"])
    return True

