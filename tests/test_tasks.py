"""Task adapters: registry, linearisations (golden examples on the real samples), demo data, edge cases."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest
import yaml

from iclpt.data.tasks import TASKS, UnknownTaskError, get_task
from iclpt.data.tasks.spider import normalize_sql
from iclpt.data.tasks.totto import linearize as totto_linearize
from iclpt.io import DataError


def test_registry_and_contract():
    assert set(TASKS) == {"totto", "dart", "logic2text", "spider", "mtop"}
    expected = {"totto": ["bleu"], "dart": ["bleu"], "logic2text": ["bleu"],
                "spider": ["exact_set_match", "execution_accuracy"], "mtop": ["exact_match"]}
    for name, task in TASKS.items():
        assert get_task(name) is task and task.name == name
        assert task.metrics == expected[name]
        assert task.max_new_tokens > 0 and task.input_label and task.output_label


def test_task_facts(repo_root, demo_data):
    """Published test sizes, demo files (the files config/tiny.yaml runs on) and database folders live on the task."""
    sizes = {t: dict(task.published_sizes) for t, task in TASKS.items()}
    assert sizes == {"totto": {"test": 7700}, "dart": {"test": 5097}, "logic2text": {"test": 1092},
                     "spider": {"test": 1034}, "mtop": {"test": 4386}}
    tiny = yaml.safe_load((repo_root / "config" / "tiny.yaml").read_text())
    assert {t: dict(task.demo_files) for t, task in TASKS.items()} == {t: c["files"] for t, c in tiny["tasks"].items()}
    assert all((demo_data / rel).is_file() for task in TASKS.values() for rel in task.demo_files.values())
    assert [t for t, task in TASKS.items() if task.database_dir(task.demo_files, str(demo_data))] == ["spider"]


def test_spider_database_dir_is_the_adapters_folder(tmp_path, demo_data):
    """Task.database_dir: database/ beside the test file, test_database/ beside the release's test.json; the
    schemas beside each (Task.database_tables) when they exist."""
    spider = get_task("spider")
    dev = spider.database_dir(spider.demo_files, str(demo_data))
    assert dev == os.path.normpath(demo_data / "spider" / "database") and os.path.isdir(dev)
    assert spider.database_tables(dev) == demo_data / "spider" / "tables.json"
    assert spider.database_dir({"test": "a/test.json"}, "base") == os.path.join("base", "a", "test_database")
    assert spider.database_dir({"test": "dev.json"}, "") == "database"
    assert spider.database_tables(tmp_path / "test_database") is None
    (tmp_path / "test_tables.json").write_text("[]")
    (tmp_path / "tables.json").write_text("[]")
    assert spider.database_tables(tmp_path / "test_database") == tmp_path / "test_tables.json"
    assert spider.database_tables(tmp_path / "database") == tmp_path / "tables.json"
    assert get_task("mtop").database_tables(tmp_path / "database") is None


def test_unknown_task_lists_known():
    with pytest.raises(UnknownTaskError) as err:
        get_task("wikisql")
    msg = str(err.value)
    assert "wikisql" in msg and all(t in msg for t in TASKS)


# ---- golden examples on the real samples (../shared/data) -------------------------------------------
def test_golden_totto(shared_data):
    recs = get_task("totto").load("dev", shared_data / "totto/dev_sample.jsonl")
    r = recs[0]
    assert r["id"] == "totto-dev-8456821687280478785"
    assert r["input"] == (
        "<page_title> Colin Hanlon </page_title> <section_title> Theatre credits </section_title> <table> "
        "<cell> 2015 <col_header> Year </col_header> </cell> <cell> The 12 <col_header> Show </col_header> </cell> "
        "<cell> Pete <col_header> Role </col_header> </cell> <cell> Denver Center <col_header> Notes </col_header> "
        "</cell> </table>")
    assert r["target"] == "In 2015, Colin Hanlon starred as Pete in The 12 at the Denver Center."
    assert r["references"] == [r["target"]] * 3
    assert all(len(x["references"]) == 3 for x in recs)


def test_golden_dart(shared_data):
    dev = get_task("dart").load("dev", shared_data / "dart/dev.json")
    assert dev[0]["input"] == ("Queens University of Charlotte | NICKNAME | Royals ; "
                               "Queens University of Charlotte | ENROLLMENT | 2386")
    assert dev[0]["target"] == "The nickname of the school with an enrollment of 2,386 is the royals."
    assert dev[0]["references"] == [dev[0]["target"]]
    test = get_task("dart").load("test", shared_data / "dart/test.xml")
    assert test[0]["id"] == "dart-test-00000" and test[0]["meta"]["eid"] == "Id1"
    assert test[0]["input"] == ("Hawaii Five-O | NOTES | Episode: The Flight of the Jewels ; "
                                "[TABLECONTEXT] | [TITLE] | Jeff Daniels ; [TABLECONTEXT] | TITLE | Hawaii Five-O")
    assert test[0]["references"] == ["Jeff Daniels played in the Hawaii Five-O episode The Flight of the Jewels"]


def test_golden_logic2text(shared_data):
    dev = get_task("logic2text").load("dev", shared_data / "logic2text/valid.json")
    r = dev[0]
    assert r["input"] == (
        "caption: eagle riders | logic: and { only { filter_eq { all_rows ; weapon ; razor boomerang } } ; "
        "eq { hop { filter_eq { all_rows ; weapon ; razor boomerang } ; eagle riders } ; hunter harris } } = true")
    assert r["references"] == ["hunter harris is the only eagle rider that uses a razor boomerang as a weapon ."]
    assert r["meta"]["table_id"] == "2-17464729-1.html.csv"
    train = get_task("logic2text").load("train", shared_data / "logic2text/train_lm.json")
    t = train[0]
    assert t["input"] == (
        "caption: list of cities, towns and villages in vojvodina | logic: and { only { filter_eq { all_rows ; "
        "largest ethnic group ( 2002 ) ; slovaks } } ; eq { hop { filter_eq { all_rows ; largest ethnic group "
        "( 2002 ) ; slovaks } ; settlement } ; pivnice } } = true")
    assert t["target"] == "pivnice is the only settlement in vojvodina with slovaks as the largest ethnic group ."
    assert t["meta"]["table_id"] == "1-2562572-12.html.csv"
    # 2,000 aligned lines; the one sentence absent from train_lm.json (line 565) gets no caption and is skipped
    assert len(train) == 1999 and "logic2text-train-00564" not in {x["id"] for x in train}


def test_golden_spider(shared_data):
    dev = get_task("spider").load("dev", shared_data / "spider/dev.json")
    r = dev[0]
    assert r["input"] == (
        "How many singers do we have? | concert_singer | stadium : Stadium_ID , Location , Name , Capacity , "
        "Highest , Lowest , Average | singer : Singer_ID , Name , Country , Song_Name , Song_release_year , Age , "
        "Is_male | concert : concert_ID , concert_Name , Theme , Stadium_ID , Year | singer_in_concert : "
        "concert_ID , Singer_ID")
    assert r["target"] == "SELECT count(*) FROM singer" and r["references"] == [r["target"]]
    assert r["meta"]["db_id"] == "concert_singer" and r["meta"]["db_path"] is None
    withdb = get_task("spider").load("test", shared_data / "spider/dev_with_db.json")
    assert withdb[0]["meta"]["db_path"].endswith("flight_2/flight_2.sqlite")
    train = get_task("spider").load("train", shared_data / "spider/train_spider.json")
    assert train[0]["target"] == "SELECT count(*) FROM head WHERE age > 56"


def test_golden_mtop(shared_data):
    r = get_task("mtop").load("train", shared_data / "mtop/train.json")[0]
    assert r["input"] == "Maricopa County weather forecast for this week"
    assert r["target"] == "[IN:GET_WEATHER [SL:LOCATION Maricopa County ] [SL:DATE_TIME for this week ] ]"
    assert r["references"] == [r["target"]]
    t = get_task("mtop").load("test", shared_data / "mtop/test.json")[0]
    assert t["meta"] == {"domain": "event", "intent": "IN:GET_EVENT", "group": "mtop-test-00000"}


# ---- demo data ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", sorted(TASKS))
def test_demo_data_loads(task, demo_data):
    for split, rel in get_task(task).demo_files.items():
        recs = get_task(task).load(split, demo_data / rel)
        assert 15 <= len(recs) <= 60, (task, split, len(recs))
        for r in recs:
            assert "\n" not in r["input"] and "\n" not in r["target"]
            assert r["references"] and r["target"] == r["references"][0]


def test_demo_data_features(demo_data):
    dev = get_task("totto").load("dev", demo_data / "totto/dev.jsonl")
    assert all(len(r["references"]) == 3 for r in dev)
    train = get_task("dart").load("train", demo_data / "dart/train.json")
    groups = [r["meta"]["group"] for r in train]
    assert len(set(groups)) < len(groups)  # entries with several annotations
    test = get_task("dart").load("test", demo_data / "dart/test.xml")
    assert max(len(r["references"]) for r in test) >= 2
    mtop = [r["input"] for r in get_task("mtop").load("train", demo_data / "mtop/train.json")]
    assert len(set(mtop)) < len(mtop)  # a duplicated utterance


def test_demo_spider_gold_queries_execute(demo_data):
    dev = get_task("spider").load("dev", demo_data / "spider/dev.json")
    assert all(r["meta"]["db_path"] for r in dev)
    con = sqlite3.connect(dev[0]["meta"]["db_path"])
    try:
        for r in dev:
            con.execute(r["target"]).fetchall()
    finally:
        con.close()


# ---- edge cases -----------------------------------------------------------------------------------------
def _c(v, h=False, cs=1, rs=1):
    return {"value": v, "is_header": h, "column_span": cs, "row_span": rs}


def test_totto_headers_respect_spans():
    table = [
        [_c("Year", True, rs=2), _c("Title", True, rs=2), _c("Chart", True, cs=2)],
        [_c("US", True), _c("UK", True)],
        [_c("2001", rs=2), _c("Alpha"), _c("3"), _c("5")],
        [_c("Beta"), _c("1"), _c("2")],  # 2001 spans into this row: "2" sits under UK, not US
    ]
    ex = {"table": table, "table_page_title": "Band", "table_section_title": "Singles",
          "highlighted_cells": [[3, 2], [3, 0]]}
    assert totto_linearize(ex) == (
        "<page_title> Band </page_title> <section_title> Singles </section_title> <table> "
        "<cell> Beta <col_header> Title </col_header> </cell> "
        "<cell> 2 <col_header> Chart </col_header> <col_header> UK </col_header> </cell> </table>")
    ex["highlighted_cells"] = [[9, 0]]
    with pytest.raises(DataError, match="outside the table"):
        totto_linearize(ex, "f.jsonl:1")


def test_totto_unlabelled_test_file_is_rejected(tmp_path):
    p = tmp_path / "test.jsonl"
    p.write_text(json.dumps({"table": [[_c("a")]], "highlighted_cells": [[0, 0]], "example_id": 1,
                             "table_page_title": "t", "table_section_title": "s"}) + "\n")
    with pytest.raises(DataError, match=r"test.jsonl:1: .*no final_sentence"):
        get_task("totto").load("test", p)


def test_spider_sql_normalisation_keeps_literals():
    assert normalize_sql("SELECT  name\nFROM t WHERE x  =  'a  b'") == "SELECT name FROM t WHERE x = 'a  b'"


def test_make_record_exact_references():
    from iclpt.data.tasks.base import make_record

    collapsed = make_record("t", "dev", "t-dev-1", " in  put ", ["a  'b  c'\t", "  ", "x"], where="here")
    assert collapsed["references"] == ["a 'b c'", "x"] and collapsed["input"] == "in put"
    exact = make_record("t", "dev", "t-dev-1", " in  put ", ["a  'b  c'\t", "  ", "x"], where="here",
                        exact_references=True)
    assert exact["references"] == ["a  'b  c'\t", "x"] and exact["target"] == "a  'b  c'\t"
    assert exact["input"] == "in put"
    with pytest.raises(DataError, match="no non-empty reference"):
        make_record("t", "dev", "t-dev-1", "in", ["  "], where="here", exact_references=True)


def test_spider_references_keep_literal_whitespace(tmp_path, demo_data):
    """Doubled spaces inside SQL literals survive into the references (they change execution)."""
    (tmp_path / "tables.json").write_text((demo_data / "spider/tables.json").read_text())
    query = "SELECT  name FROM author  WHERE  name = 'Louisville ,  Kentucky'"
    (tmp_path / "dev.json").write_text(json.dumps([{"question": "q?", "query": query, "db_id": "school_library"}]))
    rec = get_task("spider").load("dev", tmp_path / "dev.json")[0]
    assert rec["references"] == ["SELECT name FROM author WHERE name = 'Louisville ,  Kentucky'"]
    assert rec["target"] == rec["references"][0]


def test_spider_test_release_files(tmp_path, demo_data):
    """`test.json` reads `test_tables.json` and `test_database/` (the current release's test set)."""
    spider = get_task("spider")
    tables = json.loads((demo_data / "spider/tables.json").read_text())
    entry = next(t for t in tables if t["db_id"] == "school_library")
    (tmp_path / "test_tables.json").write_text(json.dumps([dict(entry, db_id="test_only_db")]))
    (tmp_path / "tables.json").write_text(json.dumps(tables))  # the dev schemas: must not be used for test.json
    db = tmp_path / "test_database/test_only_db"
    db.mkdir(parents=True)
    (db / "test_only_db.sqlite").write_bytes(
        (demo_data / "spider/database/school_library/school_library.sqlite").read_bytes())
    (tmp_path / "test.json").write_text(json.dumps([{"question": "How many books?",
                                                      "query": "SELECT count(*) FROM book",
                                                      "db_id": "test_only_db"}]))
    assert spider.tables_path(tmp_path / "test.json") == tmp_path / "test_tables.json"
    assert spider.side_files("test", tmp_path / "test.json") == [tmp_path / "test_tables.json"]
    assert spider.tables_path(tmp_path / "dev.json") == tmp_path / "tables.json"
    [rec] = spider.load("test", tmp_path / "test.json")
    assert rec["input"].startswith("How many books? | test_only_db | ")
    assert rec["meta"]["db_path"] == str(db / "test_only_db.sqlite")
    assert spider.database_dir({"test": "test.json"}, str(tmp_path)) == str(db.parent)  # where load looked
    # the same row in a file of another name looks in tables.json, where test_only_db is unknown
    (tmp_path / "dev.json").write_text((tmp_path / "test.json").read_text())
    with pytest.raises(DataError, match="test_only_db.*tables.json"):
        spider.load("test", tmp_path / "dev.json")


def test_spider_unknown_db_id(tmp_path, demo_data):
    (tmp_path / "tables.json").write_text((demo_data / "spider/tables.json").read_text())
    rows = [{"question": "q?", "query": "SELECT 1", "db_id": "school_library"},
            {"question": "q?", "query": "SELECT 1", "db_id": "no_such_db"}]
    (tmp_path / "dev.json").write_text(json.dumps(rows))
    with pytest.raises(DataError, match=r"dev.json: row 1: db_id 'no_such_db' is not in .*tables.json"):
        get_task("spider").load("dev", tmp_path / "dev.json")


def test_dart_train_one_record_per_annotation(tmp_path):
    entries = [{"tripleset": [["A", "p", "B"]], "subtree_was_extended": False,
                "annotations": [{"source": "s", "text": "A p B."}, {"source": "s", "text": "B is A's p."},
                                {"source": "s", "text": "  "}]}]
    (tmp_path / "t.json").write_text(json.dumps(entries))
    train = get_task("dart").load("train", tmp_path / "t.json")
    assert [r["id"] for r in train] == ["dart-train-00000-0", "dart-train-00000-1"]
    assert {r["meta"]["group"] for r in train} == {"dart-train-00000"}
    dev = get_task("dart").load("dev", tmp_path / "t.json")
    assert len(dev) == 1 and dev[0]["references"] == ["A p B.", "B is A's p."]
    assert dev[0]["meta"]["empty_references"] == 1


def test_mtop_official_tsv(tmp_path):
    p = tmp_path / "train.txt"
    p.write_text("1\tIN:CREATE_CALL\t5:8:SL:CONTACT\tcall  Tom\tcalling\ten_XX\t"
                 "[IN:CREATE_CALL [SL:CONTACT Tom ] ]\t{}\n")
    r = get_task("mtop").load("train", p)[0]
    assert r["input"] == "call Tom" and r["target"] == "[IN:CREATE_CALL [SL:CONTACT Tom ] ]"
    assert r["meta"]["domain"] == "calling"
