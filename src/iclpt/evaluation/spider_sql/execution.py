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


class QueryRefused(QueryFailed):
    """The query asked for something a scored query may not do (attach, create, write, pragma, ...)."""


class ResultTooLarge(QueryFailed):
    """The query returned more rows (or more data) than can still compare equal to the gold result."""


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


#: what a scored query may do (sqlite3 authorizer action codes): read tables and call functions, nothing else.
#: Everything else is denied: ATTACH / DETACH (also what VACUUM and VACUUM INTO run), every PRAGMA, CREATE /
#: DROP / ALTER of anything (temp objects and virtual tables included), INSERT / UPDATE / DELETE, transactions,
#: savepoints, ANALYZE, REINDEX.
_ALLOWED_ACTIONS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                              getattr(sqlite3, "SQLITE_RECURSIVE", 33)})
#: functions that reach outside the database (load_extension is also disabled on the connection)
_DENIED_FUNCTIONS = frozenset({"load_extension"})
#: SQLite's heap (every connection of the process) while scored queries run: a runaway sort, GROUP BY or
#: recursive CTE fails with "out of memory" instead of taking the job's memory. SQLite only lets a process
#: lower this limit, so it is set once, to the smaller of this and any limit already in place.
SQLITE_HEAP_LIMIT_BYTES = 512 * 1024 * 1024


def _authorize(action: int, arg1: str | None, arg2: str | None, db_name: str | None, trigger: str | None) -> int:
    if action not in _ALLOWED_ACTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def _connect_read_only(db_path: Path) -> sqlite3.Connection:
    """A connection that can read ``db_path`` and write nothing anywhere.

    Read-only URI mode, temporary storage in memory (sorts and temp b-trees make no temp files), no attached
    database allowed (``SQLITE_LIMIT_ATTACHED`` 0), extensions off, and an authorizer that allows SELECT, reading
    and functions only (so ATTACH, VACUUM [INTO], PRAGMA, CREATE, INSERT, ... are refused before they run)."""
    conn = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
    try:
        conn.text_factory = lambda b: b.decode(errors="ignore")
        conn.execute("PRAGMA temp_store = MEMORY")
        limit = conn.execute("PRAGMA hard_heap_limit").fetchone()[0]
        if not limit or limit > SQLITE_HEAP_LIMIT_BYTES:
            conn.execute(f"PRAGMA hard_heap_limit = {int(SQLITE_HEAP_LIMIT_BYTES)}")
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        if hasattr(conn, "enable_load_extension"):
            conn.enable_load_extension(False)
        conn.set_authorizer(_authorize)
    except BaseException:
        conn.close()
        raise
    return conn


def value_size(v: Any) -> int:
    """The size a result value counts for in the bound on what a query may hold: characters of text, bytes of a
    blob, 8 for a number, 0 for NULL (values that compare equal have equal sizes)."""
    if isinstance(v, (str, bytes)):
        return len(v)
    return 0 if v is None else 8


def result_size(rows: Sequence[Row]) -> int:
    """Sum of :func:`value_size` over a result (what :func:`run_query` compares with ``max_size``)."""
    return sum(value_size(v) for r in rows for v in r)


def run_query(db_path: str | os.PathLike[str], query: str, timeout_s: float, max_rows: int | None = None,
              max_size: int | None = None) -> list[Row]:
    """Execute on a connection that cannot write (:func:`_connect_read_only`), interrupted after ``timeout_s``
    seconds. With ``max_rows`` / ``max_size``, fetching stops as soon as the result has more rows, or more
    data (:func:`result_size`), than that: :class:`ResultTooLarge` (a prediction that can no longer equal the
    gold result is not held in memory). A refused statement raises :class:`QueryRefused`, any other failure
    (syntax, interrupt, out of memory, ...) :class:`QueryFailed`."""
    conn = _connect_read_only(Path(db_path))
    deadline = time.monotonic() + timeout_s
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
    rows: list[Row] = []
    size = 0
    try:
        cur = conn.execute(replace_cur_year(query))
        if cur.description is None:  # not a query (a statement with nothing to deny, e.g. REINDEX of no index)
            raise QueryRefused("not a query: the statement returns no result columns")
        for r in cur:  # one row at a time: nothing past the bound is held
            if max_rows is not None and len(rows) >= max_rows:
                raise ResultTooLarge(f"more than {max_rows} rows")
            if max_size is not None:
                size += sum(value_size(v) for v in r)
                if size > max_size:
                    raise ResultTooLarge(f"more than {max_size} characters / bytes of values")
            rows.append(tuple(r))
        return rows
    except QueryFailed:
        raise
    except sqlite3.DatabaseError as exc:
        if "not authorized" in str(exc) or "authorization denied" in str(exc):
            raise QueryRefused(str(exc)) from exc
        raise QueryFailed(str(exc)) from exc
    except Exception as exc:  # any failure (syntax, interrupt, out of memory, ...) counts
        raise QueryFailed(str(exc) or type(exc).__name__) from exc
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
        pred_rows = run_query(path, pred, timeout_s, max_rows=len(gold_rows), max_size=result_size(gold_rows))
    except QueryFailed:
        return False
    return results_equal(gold_rows, pred_rows, order_matters)
