"""Tests for iclpt.evaluation.spider_eval; verdicts derived from the official Spider evaluator."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from iclpt.evaluation.spider_eval import (
    SqlParseError,
    exact_set_match,
    execution_match,
    parse_sql,
    partial_match_scores,
    remove_distinct,
    results_equal,
    schema_from_sqlite,
    schema_from_tables_entry,
)

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "resources" / "demo_data" / "spider"
DEMO_DB = DEMO / "database" / "school_library" / "school_library.sqlite"
SAMPLE = Path("/work/shared/data/spider")


@pytest.fixture(scope="module")
def schema():
    entry = json.loads((DEMO / "tables.json").read_text())[0]
    return schema_from_tables_entry(entry)


def em(pred: str, gold: str, schema) -> bool:
    return exact_set_match(pred, gold, schema)


GOLD_JOIN = (
    "SELECT T2.name FROM book AS T1 JOIN author AS T2 ON T1.author_id = T2.author_id "
    "WHERE T1.title = 'Salt and Stone'"
)


# ---------------------------------------------------------------- exact set match
def test_identical_and_alias_renaming(schema):
    assert em(GOLD_JOIN, GOLD_JOIN, schema)
    renamed = (
        "select a.name from book as b join author as a on b.author_id = a.author_id "
        "where b.title = 'Salt and Stone'"
    )
    assert em(renamed, GOLD_JOIN, schema)


def test_select_column_order_is_a_set(schema):
    assert em("SELECT year, title FROM book", "SELECT title, year FROM book", schema)
    assert not em("SELECT title FROM book", "SELECT title, year FROM book", schema)


def test_aggregate_must_match(schema):
    assert not em("SELECT max(pages) FROM book", "SELECT min(pages) FROM book", schema)
    assert em("SELECT count(*) FROM book", "SELECT COUNT(*) FROM book", schema)


def test_where_conjunct_order_and_connectors(schema):
    gold = "SELECT title FROM book WHERE year > 2000 AND pages < 300"
    assert em("SELECT title FROM book WHERE pages < 300 AND year > 2000", gold, schema)
    assert not em("SELECT title FROM book WHERE pages < 300 OR year > 2000", gold, schema)
    assert not em("SELECT title FROM book WHERE pages > 300 AND year > 2000", gold, schema)


def test_swapped_join_order_and_on_operands(schema):
    swapped = (
        "SELECT T1.name FROM author AS T1 JOIN book AS T2 ON T1.author_id = T2.author_id "
        "WHERE T2.title = 'Salt and Stone'"
    )
    assert em(swapped, GOLD_JOIN, schema)
    on_swapped = GOLD_JOIN.replace("T1.author_id = T2.author_id", "T2.author_id = T1.author_id")
    assert em(on_swapped, GOLD_JOIN, schema)


def test_foreign_key_columns_are_canonicalised(schema):
    gold = "SELECT T1.author_id FROM book AS T1 JOIN author AS T2 ON T1.author_id = T2.author_id"
    pred = "SELECT T2.author_id FROM book AS T1 JOIN author AS T2 ON T1.author_id = T2.author_id"
    assert em(pred, gold, schema)


def test_missing_join_table_is_wrong(schema):
    assert not em("SELECT title FROM book", "SELECT T1.title FROM book AS T1 JOIN loan AS T2 ON "
                  "T1.book_id = T2.book_id", schema)


def test_order_by_default_asc_and_direction(schema):
    gold = "SELECT title FROM book ORDER BY year ASC"
    assert em("SELECT title FROM book ORDER BY year", gold, schema)
    assert not em("SELECT title FROM book ORDER BY year DESC", gold, schema)
    assert not em("SELECT title FROM book", gold, schema)


def test_literal_values_are_masked(schema):
    wrong = GOLD_JOIN.replace("Salt and Stone", "Something Else")
    assert em(wrong, GOLD_JOIN, schema)
    assert em("SELECT title FROM book WHERE year > 1900", "SELECT title FROM book WHERE year > 2000", schema)


def test_distinct_is_ignored_per_official_rule(schema):
    assert em("SELECT country FROM author", "SELECT DISTINCT country FROM author", schema)
    assert em("SELECT count(country) FROM author", "SELECT count(DISTINCT country) FROM author", schema)
    # inside a WHERE subquery the official compares whole trees, DISTINCT included
    gold = "SELECT title FROM book WHERE author_id IN (SELECT DISTINCT author_id FROM author)"
    pred = "SELECT title FROM book WHERE author_id IN (SELECT author_id FROM author)"
    assert not em(pred, gold, schema)


def test_nested_queries(schema):
    gold = "SELECT title FROM book WHERE pages > (SELECT avg(pages) FROM book)"
    assert em("SELECT title FROM book WHERE pages > (SELECT AVG(pages) FROM book)", gold, schema)
    assert not em("SELECT title FROM book WHERE pages > (SELECT max(pages) FROM book)", gold, schema)
    assert not em("SELECT title FROM book WHERE pages > 300", gold, schema)
    gold_in = "SELECT name FROM author WHERE author_id NOT IN (SELECT author_id FROM book)"
    assert not em("SELECT name FROM author WHERE author_id IN (SELECT author_id FROM book)", gold_in, schema)


def test_set_operators(schema):
    base = "SELECT author_id FROM book WHERE year < 2000 {op} SELECT author_id FROM book WHERE pages > 300"
    for op in ("UNION", "INTERSECT", "EXCEPT"):
        gold = base.format(op=op)
        assert em(gold.lower(), gold, schema)
        for other in {"UNION", "INTERSECT", "EXCEPT"} - {op}:
            assert not em(base.format(op=other), gold, schema)
    assert not em("SELECT author_id FROM book WHERE year < 2000", base.format(op="UNION"), schema)
    wrong_branch = "SELECT author_id FROM book WHERE year < 2000 UNION SELECT author_id FROM loan"
    assert not em(wrong_branch, base.format(op="UNION"), schema)


def test_unparsable_prediction_is_wrong(schema):
    gold = "SELECT title FROM book"
    for pred in ("", "SELEC title FROM book", "SELECT nope FROM book", "SELECT title FROM 'x",
                 "SELECT title FROM book b", "SELECT title FROM book, author"):
        assert exact_set_match(pred, gold, schema) is False
    assert partial_match_scores("garbage", gold, schema) is None


def test_unparsable_gold_raises(schema):
    with pytest.raises(SqlParseError):
        exact_set_match("SELECT title FROM book", "SELECT nope FROM book", schema)


def test_group_by_and_having(schema):
    gold = "SELECT author_id, count(*) FROM book GROUP BY author_id HAVING count(*) > 1"
    assert em("SELECT count(*), author_id FROM book GROUP BY author_id HAVING count(*) > 1",
              gold, schema)
    assert em("SELECT author_id, count(*) FROM book GROUP BY author_id HAVING count(*) > 5", gold, schema)
    assert not em("SELECT author_id, count(*) FROM book GROUP BY author_id", gold, schema)
    assert not em("SELECT author_id, count(*) FROM book GROUP BY author_id HAVING sum(pages) > 1",
                  gold, schema)
    assert not em("SELECT author_id, count(*) FROM book GROUP BY year HAVING count(*) > 1", gold, schema)
    # official: the "group" component compares the ordered column list
    two = "SELECT year, pages FROM book GROUP BY year, pages"
    assert not em("SELECT year, pages FROM book GROUP BY pages, year", two, schema)
    scores = partial_match_scores("SELECT year, pages FROM book GROUP BY pages, year", two, schema)
    assert scores is not None and scores["group(no Having)"] == 1 and scores["group"] == 0


def test_limit_presence_not_value(schema):
    gold = "SELECT title FROM book ORDER BY pages DESC LIMIT 1"
    assert em("SELECT title FROM book ORDER BY pages DESC LIMIT 3", gold, schema)
    assert not em("SELECT title FROM book ORDER BY pages DESC", gold, schema)
    assert not em("SELECT title FROM book LIMIT 1", "SELECT title FROM book", schema)


def test_schema_from_sqlite_matches_entry(schema):
    from_db = schema_from_sqlite(DEMO_DB)
    assert dict(from_db.tables) == dict(schema.tables)
    assert exact_set_match(GOLD_JOIN, GOLD_JOIN, DEMO_DB)
    pred = "SELECT T2.author_id FROM book AS T1 JOIN author AS T2 ON T1.author_id = T2.author_id"
    gold = pred.replace("T2.author_id FROM", "T1.author_id FROM")
    assert exact_set_match(pred, gold, from_db) == exact_set_match(pred, gold, schema)


def test_parse_structure_shape(schema):
    sql = parse_sql("SELECT count(*) FROM book WHERE year BETWEEN 1990 AND 2000", schema)
    assert sql["select"] == (False, [(3, (0, (0, "__all__", False), None))])
    assert sql["where"] == [(False, 1, (0, (0, "__book.year__", False), None), 1990.0, 2000.0)]
    assert sql["from"]["table_units"] == [("table_unit", "__book__")]


def test_demo_dev_gold_self_match():
    tables = {t["db_id"]: schema_from_tables_entry(t) for t in json.loads((DEMO / "tables.json").read_text())}
    for ex in json.loads((DEMO / "dev.json").read_text()):
        assert exact_set_match(ex["query"], ex["query"], tables[ex["db_id"]])


def test_sample_dev_gold_self_match():
    if not (SAMPLE / "dev.json").is_file() or not (SAMPLE / "tables.json").is_file():
        pytest.skip("sample Spider data absent")
    tables = {t["db_id"]: schema_from_tables_entry(t) for t in json.loads((SAMPLE / "tables.json").read_text())}
    dev = json.loads((SAMPLE / "dev.json").read_text())
    unparsable = []
    for ex in dev:
        schema = tables[ex["db_id"]]
        try:
            parse_sql(ex["query"], schema)
        except SqlParseError:
            unparsable.append(ex["query"])
            continue
        assert exact_set_match(ex["query"], ex["query"], schema), ex["query"]
    print(f"sample dev: {len(dev)} gold queries, {len(unparsable)} unparsable")
    assert len(unparsable) == 0


def test_sample_databases_self_match_from_sqlite():
    db_dir = SAMPLE / "database"
    path = SAMPLE / "dev_with_db.json"
    if not path.is_file() or not db_dir.is_dir():
        pytest.skip("sample Spider databases absent")
    for ex in json.loads(path.read_text())[:60]:
        db = db_dir / ex["db_id"] / f"{ex['db_id']}.sqlite"
        if not db.is_file():
            continue
        assert exact_set_match(ex["query"], ex["query"], schema_from_sqlite(db))
        assert execution_match(ex["query"], ex["query"], db, timeout_s=30) is True


# ---------------------------------------------------------------- execution
def test_execution_column_permutation():
    assert execution_match("SELECT year, title FROM book", "SELECT title, year FROM book", DEMO_DB)
    assert not execution_match("SELECT title FROM book", "SELECT title, year FROM book", DEMO_DB)


def test_execution_distinct_stripped():
    # official default removes DISTINCT from both queries before executing
    assert execution_match("SELECT country FROM author", "SELECT DISTINCT country FROM author", DEMO_DB)
    assert execution_match("SELECT country FROM author", "SELECT DISTINCT country FROM author", DEMO_DB,
                           keep_distinct=True) is False
    assert remove_distinct("SELECT DISTINCT a FROM t WHERE b = 'distinct'") == "SELECT  a FROM t WHERE b = 'distinct'"


def test_execution_literal_values_matter():
    assert not execution_match("SELECT title FROM book WHERE year > 2100", "SELECT title FROM book WHERE year > 1900",
                               DEMO_DB)


def test_execution_order_by():
    gold = "SELECT title FROM book ORDER BY year"
    assert execution_match("SELECT title FROM book ORDER BY year", gold, DEMO_DB)
    assert not execution_match("SELECT title FROM book ORDER BY year DESC", gold, DEMO_DB)
    # no ORDER BY in the gold: bag semantics
    assert execution_match("SELECT title FROM book ORDER BY year DESC", "SELECT title FROM book", DEMO_DB)


def test_results_equal_rules():
    assert results_equal([], [], True)
    assert results_equal([(1, "a"), (2, "b")], [("b", 2), ("a", 1)], False)
    assert not results_equal([(1, "a"), (2, "b")], [("b", 2), ("a", 1)], True)
    assert results_equal([(1, "a"), (2, "b")], [("a", 1), ("b", 2)], True)
    assert not results_equal([(1,), (1,), (2,)], [(1,), (2,), (2,)], False)  # multisets
    assert not results_equal([(1, 2)], [(1, 2, 3)], False)
    rows = [(i, i + 1, i + 2, i + 3, str(i)) for i in range(5)]
    assert results_equal(rows, [tuple(reversed(r)) for r in rows], False)


def test_execution_timeout():
    slow = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000000) "
            "SELECT count(*) FROM c")
    assert execution_match(slow, "SELECT count(*) FROM book", DEMO_DB, timeout_s=0.2) is False
    assert execution_match("SELECT count(*) FROM book", slow, DEMO_DB, timeout_s=0.2) is None


def test_execution_read_only(tmp_path):
    db = tmp_path / "copy.sqlite"
    shutil.copy(DEMO_DB, db)
    assert execution_match("DELETE FROM book", "SELECT count(*) FROM book", db) is False
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM book").fetchone() == (9,)


def test_execution_not_evaluable(tmp_path):
    assert execution_match("SELECT 1", "SELECT 1", tmp_path / "missing.sqlite") is None
    assert execution_match("SELECT 1", "SELECT nope FROM book", DEMO_DB) is None
    assert execution_match("SELEC 1", "SELECT count(*) FROM book", DEMO_DB) is False

