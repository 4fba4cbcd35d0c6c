"""Execution accuracy following the official ``exec_eval.py`` (single database)."""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

Row = tuple[Any, ...]
_QUOTED_OR_WORD = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|`[^`]*`|\[[^\]]*\]|\w+|\W")
_CUR_YEAR = re.compile(r"YEAR\s*\(\s*CURDATE\s*\(\s*\)\s*\)\s*", re.IGNORECASE)


class QueryFailed(RuntimeError):
    """The query raised an error or ran past its time limit."""


def postprocess(query: str) -> str:
    """Join comparison operators split by a space (official ``postprocess``)."""
    return query.replace("> =", ">=").replace("< =", "<=").replace("! =", "!=")


def remove_distinct(query: str) -> str:
    """Drop every DISTINCT keyword outside quotes (official default, ``keep_distinct=False``)."""
    pieces = _QUOTED_OR_WORD.findall(query)
    return "".join(p for p in pieces if p.lower() != "distinct")


def replace_cur_year(query: str) -> str:
    """``YEAR(CURDATE())`` -> ``2020`` as the official does."""
    return _CUR_YEAR.sub("2020", query)


def _connect_read_only(db_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
    conn.text_factory = lambda b: b.decode(errors="ignore")
    return conn


def run_query(db_path: str | os.PathLike[str], query: str, timeout_s: float) -> list[Row]:
    """Execute on a read-only connection, interrupted after ``timeout_s`` seconds."""
    conn = _connect_read_only(Path(db_path))
    deadline = time.monotonic() + timeout_s
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
    try:
        return [tuple(r) for r in conn.execute(replace_cur_year(query)).fetchall()]
    except Exception as exc:  # any failure (syntax, interrupt, read-only, ...) counts
        raise QueryFailed(str(exc)) from exc
    finally:
        conn.close()


def _unorder_row(row: Row) -> Row:
    return tuple(sorted(row, key=lambda x: str(x) + str(type(x))))


def _quick_reject(gold: list[Row], pred: list[Row], order_matters: bool) -> bool:
    """False when the per-row bags of values already differ (official ``quick_rej``)."""
    g = [_unorder_row(r) for r in gold]
    p = [_unorder_row(r) for r in pred]
    return g == p if order_matters else set(g) == set(p)


def _candidate_columns(gold: list[Row], pred: list[Row]) -> list[set[int]]:
    """For each gold column, the pred columns whose values all occur in it."""
    width = len(gold[0])
    gold_sets = [{r[c] for r in gold} for c in range(width)]
    pred_sets = [{r[c] for r in pred} for c in range(width)]
    return [{p for p in range(width) if pred_sets[p] <= gold_sets[g]} for g in range(width)]


def _permutations(candidates: Sequence[set[int]], chosen: tuple[int, ...] = ()) -> Iterator[tuple[int, ...]]:
    if len(chosen) == len(candidates):
        yield chosen
        return
    for col in sorted(candidates[len(chosen)] - set(chosen)):
        yield from _permutations(candidates, chosen + (col,))


def results_equal(gold: list[Row], pred: list[Row], order_matters: bool) -> bool:
    """Official ``result_eq``: bag (or list) equality up to a permutation of columns."""
    if not gold and not pred:
        return True
    if len(gold) != len(pred) or len(gold[0]) != len(pred[0]):
        return False
    if not _quick_reject(gold, pred, order_matters):
        return False
    gold_bag = Counter(gold)
    for perm in _permutations(_candidate_columns(gold, pred)):
        permuted = [tuple(r[i] for i in perm) for r in pred]
        if (permuted == gold) if order_matters else (Counter(permuted) == gold_bag):
            return True
    return False


def execution_match(
    pred_sql: str,
    gold_sql: str,
    db_path: str | os.PathLike[str],
    timeout_s: float = 30.0,
    keep_distinct: bool = False,
) -> bool | None:
    """True/False by denotation; None when the database is missing or the gold fails."""
    path = Path(db_path)
    if not path.is_file():
        return None
    pred, gold = postprocess(pred_sql), postprocess(gold_sql)
    if not keep_distinct:
        pred, gold = remove_distinct(pred), remove_distinct(gold)
    order_matters = "order by" in gold.lower()
    try:
        gold_rows = run_query(path, gold, timeout_s)
    except QueryFailed:
        return None
    try:
        pred_rows = run_query(path, pred, timeout_s)
    except QueryFailed:
        return False
    return results_equal(gold_rows, pred_rows, order_matters)
