"""Metrics: BLEU vs direct sacrebleu, exact match, Spider exact set match and execution accuracy, bad input."""

import json
import sqlite3

import pytest
import sacrebleu

from iclpt.data.tasks import TASKS, get_task
from iclpt.data.tasks.spider import sql_match_key as normalize_sql
from iclpt.evaluation.metrics import (
    CORPUS_BOOTSTRAP,
    CORPUS_STATISTICS,
    MEAN_OF_EVALUATED,
    METRICS,
    PRIMARY_PREFERENCE,
    PROPORTION,
    MetricError,
    bleu,
    check_metric_names,
    compute_metric,
    exact_match,
    exact_set_match,
    execution_accuracy,
    load_predictions,
    normalize_whitespace,
    reference_streams,
    score_predictions,
    task_needs_database,
)
from iclpt.io import DataError


# ---- BLEU -------------------------------------------------------------------------------------------------
def test_bleu_single_reference_equals_sacrebleu():
    hyps = ["the cat sat on the mat", "a dog barked loudly"]
    refs = [["the cat sat on a mat"], ["the dog barked very loudly"]]
    r = bleu(hyps, refs)
    direct = sacrebleu.corpus_bleu(hyps, [["the cat sat on a mat", "the dog barked very loudly"]])
    assert r.value == pytest.approx(direct.score)
    assert r.n_evaluated == 2
    assert r.per_example[0] == pytest.approx(sacrebleu.sentence_bleu(hyps[0], refs[0]).score)


def test_bleu_varying_reference_counts_pads_with_none():
    hyps = ["john is tall", "the river flows north to the sea", "it rains"]
    refs = [["john is very tall", "john is tall"], ["the river flows north into the sea"], ["it is raining", "rain",
                                                                                             "it rains today"]]
    streams = reference_streams(refs)
    assert streams == [
        ["john is very tall", "the river flows north into the sea", "it is raining"],
        ["john is tall", None, "rain"],
        [None, None, "it rains today"],
    ]
    r = bleu(hyps, refs)
    assert r.value == pytest.approx(sacrebleu.corpus_bleu(hyps, streams).score)
    # padding with None is the same as scoring each example on exactly its own references: check via stats
    per_stats = [sacrebleu.BLEU()._extract_corpus_statistics([h], [[x] for x in rr]) for h, rr in zip(hyps, refs)]
    summed = [sum(s[0][k] for s in per_stats) for k in range(len(per_stats[0][0]))]
    assert r.value == pytest.approx(sacrebleu.BLEU()._compute_score_from_stats(summed).score)


def test_bleu_empty_string_padding_would_distort():
    # hypothesis of 2 words; refs of 6 words; an '' pad (length 0) would be the "closest" ref -> no brevity penalty
    hyps = ["john walked"]
    refs = [["john walked to the big market"]]
    good = bleu(hyps, refs + [])  # one ref
    pad_none = sacrebleu.corpus_bleu(hyps, [["john walked to the big market"], [None]])
    pad_empty = sacrebleu.corpus_bleu(hyps, [["john walked to the big market"], [""]])
    assert good.value == pytest.approx(pad_none.score)
    assert pad_empty.bp != pytest.approx(pad_none.bp)


def test_bleu_empty_references_rejected():
    with pytest.raises(MetricError):
        bleu(["x"], [[]])


# ---- exact match --------------------------------------------------------------------------------------------
def test_exact_match_whitespace():
    r = exact_match(["[IN:GET_WEATHER  [SL:LOCATION paris ] ]", "[IN:A ]", "x"],
                    [["[IN:GET_WEATHER [SL:LOCATION paris ] ]"], ["[IN:B ]"], ["y", " x "]])
    assert r.per_example == [100.0, 0.0, 100.0]
    assert r.value == pytest.approx(200 / 3)
    assert normalize_whitespace("  a \t b\n") == "a b"


def test_exact_match_is_case_sensitive_for_mtop():
    assert exact_match(["[in:a ]"], [["[IN:A ]"]]).value == 0.0


@pytest.mark.parametrize(
    "a,b",
    [
        ("SELECT count(*) FROM singer;", "select count ( * ) from singer"),
        ('SELECT name FROM t WHERE x = "A"', "select name from t where x='a'"),
        ("select a,b from t where c>=1", "SELECT a , b FROM t WHERE c >= 1 ;"),
    ],
)
def test_normalize_sql_equal(a, b):
    assert normalize_sql(a) == normalize_sql(b)


def test_normalize_sql_different():
    assert normalize_sql("select a from t") != normalize_sql("select b from t")


def test_mtop_exact_match_strips_ends_only():
    """The reference evaluators strip the ends and compare strings: inner whitespace matters."""
    rows = [{"prediction": p, "references": ["[IN:GET_WEATHER [SL:LOCATION paris ] ]"], "meta": {}}
            for p in ("  [IN:GET_WEATHER [SL:LOCATION paris ] ]\n", "[IN:GET_WEATHER  [SL:LOCATION paris ] ]",
                      "[IN:GET_WEATHER [SL:LOCATION paris ]]")]
    r = compute_metric("exact_match", rows, task="mtop")
    assert r.per_example == [100.0, 0.0, 0.0]
    assert r.name == "exact_match" and r.details["normalization"] == "normalize_answer"


def test_spider_string_match_is_a_secondary_metric():
    rows = [{"prediction": "SELECT count(*) FROM singer;", "references": ["select count ( * ) from singer"],
             "meta": {"db_id": "x"}}]
    assert "exact_match_string" in METRICS and "exact_set_match" in METRICS
    r = compute_metric("exact_match_string", rows, task="spider")
    assert r.name == "exact_match_string" and r.value == 100.0
    assert compute_metric("exact_match_string", rows, task="mtop").value == 0.0
    assert "exact_match_string" not in get_task("spider").metrics


# ---- execution accuracy ------------------------------------------------------------------------------------
@pytest.fixture()
def dbdir(tmp_path):
    d = tmp_path / "database" / "shop"
    d.mkdir(parents=True)
    conn = sqlite3.connect(d / "shop.sqlite")
    conn.executescript(
        """
        CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT, price REAL);
        INSERT INTO item VALUES (1, 'apple', 3.0), (2, 'pear', 1.0), (3, 'fig', 2.0), (4, 'kiwi', 2.0);
        """
    )
    conn.commit()
    conn.close()
    return tmp_path / "database"


def test_execution_accuracy_cases(dbdir):
    gold_unordered = "SELECT name FROM item WHERE price >= 2"
    gold_ordered = "SELECT name FROM item ORDER BY price, id"
    preds = [
        "SELECT name FROM item WHERE price > 1 ORDER BY name DESC",  # same set, different order -> correct
        "SELECT name FROM item ORDER BY id",  # gold has ORDER BY, order differs -> wrong
        "SELECT name FROM item ORDER BY price ASC, id ASC",  # same order -> correct
        "SELEC name FROM item",  # invalid SQL -> wrong
        "SELECT name FROM item WHERE price = 2",  # missing a row -> wrong
        "SELECT name FROM item",  # DB missing -> skipped
        "SELECT name FROM item",  # no db_id -> skipped
        "SELECT name FROM item WHERE price >= 2 UNION ALL SELECT 'fig'",  # extra duplicate: multiset differs
        "DELETE FROM item",  # read-only DB -> error -> wrong
    ]
    refs = [[gold_unordered], [gold_ordered], [gold_ordered], [gold_unordered], [gold_unordered], [gold_unordered],
            [gold_unordered], [gold_unordered], [gold_unordered]]
    dbs = ["shop", "shop", "shop", "shop", "shop", "nowhere", None, "shop", "shop"]
    r = execution_accuracy(preds, refs, dbs, dbdir, timeout_s=5)
    assert r.per_example == [100.0, 0.0, 100.0, 0.0, 0.0, None, None, 0.0, 0.0]
    assert r.n_evaluated == 7
    assert r.n_skipped == 2
    assert r.value == pytest.approx(200 / 7)
    assert r.skipped_reasons == {"database missing: nowhere": 1, "no db_id in meta": 1}
    # the database is untouched (opened read-only)
    conn = sqlite3.connect(dbdir / "shop" / "shop.sqlite")
    assert conn.execute("SELECT count(*) FROM item").fetchone()[0] == 4
    conn.close()


def test_execution_accuracy_official_semantics(dbdir):
    """DISTINCT is stripped, columns may be permuted, order matters only when the gold has ORDER BY."""
    preds = [
        "SELECT DISTINCT price FROM item",  # DISTINCT stripped from both -> same bag
        "SELECT price, name FROM item",  # columns permuted
        "SELECT name FROM item ORDER BY price DESC, id",  # gold unordered -> order ignored
        "SELECT name, price FROM item WHERE price = 2",  # fewer rows
    ]
    refs = [["SELECT price FROM item"], ["SELECT name, price FROM item"], ["SELECT name FROM item"],
            ["SELECT name, price FROM item WHERE price >= 2"]]
    r = execution_accuracy(preds, refs, ["shop"] * 4, dbdir, timeout_s=5)
    assert r.per_example == [100.0, 100.0, 100.0, 0.0]
    assert r.n_skipped == 0 and r.details["wrong_reasons"] == {}


def test_execution_accuracy_timeout(dbdir):
    slow = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000000) "
            "SELECT count(*) FROM c")
    r = execution_accuracy([slow], [["SELECT 1"]], ["shop"], dbdir, timeout_s=0.2)
    assert r.per_example == [0.0]
    assert r.details["wrong_reasons"] == {"prediction timed out": 1}


def test_execution_accuracy_gold_failure_is_skipped(dbdir):
    r = execution_accuracy(["SELECT 1"], [["SELECT nope FROM nothing"]], ["shop"], dbdir)
    assert r.per_example == [None]
    assert r.value is None
    assert r.skipped_reasons == {"gold SQL failed to execute": 1}


def test_execution_accuracy_needs_database_dir():
    with pytest.raises(MetricError, match="database_dir"):
        execution_accuracy(["SELECT 1"], [["SELECT 1"]], ["x"], None)


# ---- exact set match ------------------------------------------------------------------------------------
def _shop_schema_rows(preds_refs, db_id="shop"):
    return [{"id": str(i), "prediction": p, "references": [g], "meta": {"db_id": db_id}}
            for i, (p, g) in enumerate(preds_refs)]


def test_exact_set_match_cases(dbdir):
    gold = "SELECT name, price FROM item WHERE price >= 2 AND id < 4"
    preds = [
        "select price , name from item where id < 4 and price >= 2",  # reordered: sets
        "SELECT T1.name, T1.price FROM item AS T1 WHERE T1.price >= 5 AND T1.id < 1",  # aliases, other values
        "SELECT name, price FROM item WHERE price >= 2",  # missing condition
        "SELECT id, price FROM item WHERE price >= 2 AND id < 4",  # wrong column
        "SELEC name FROM",  # does not parse -> wrong
    ]
    rows = _shop_schema_rows([(p, gold) for p in preds])
    rows.append({"id": "nodb", "prediction": gold, "references": [gold], "meta": {"db_id": "nowhere"}})
    rows.append({"id": "noid", "prediction": gold, "references": [gold], "meta": {}})
    rows.append({"id": "badgold", "prediction": gold, "references": ["SELECT FROM WHERE"], "meta": {"db_id": "shop"}})
    r = compute_metric("exact_set_match", rows, task="spider", database_dir=dbdir)
    assert r.per_example == [100.0, 100.0, 0.0, 0.0, 0.0, None, None, None]
    assert r.n_evaluated == 5 and r.value == pytest.approx(40.0)
    assert r.skipped_reasons == {"database missing: nowhere": 1, "no db_id in meta": 1,
                                 "gold SQL does not parse": 1}
    assert r.details["wrong_reasons"] == {"prediction does not parse": 1}
    with pytest.raises(MetricError, match="database_dir"):
        exact_set_match(["SELECT 1"], [["SELECT 1"]], ["shop"], None)


def _spider_rows(path, perturb):
    data = json.loads(path.read_text())
    return [{"id": str(i), "prediction": perturb(e["query"]), "references": [e["query"]],
             "meta": {"db_id": e["db_id"]}} for i, e in enumerate(data)]


def test_spider_default_metrics_on_demo_database(demo_data):
    """score_predictions with Spider's default metrics: gold-as-prediction is 100 on both; a literal change
    is still an exact set match (values are ignored) but not an execution match."""
    spider = demo_data / "spider"
    metrics = get_task("spider").metrics
    assert metrics == ["exact_set_match", "execution_accuracy"]
    rows = _spider_rows(spider / "dev.json", lambda q: q)
    body, scores = score_predictions(rows, metrics, task="spider", database_dir=spider / "database")
    assert body["primary_metric"] == "exact_set_match"
    assert body["metrics"] == {"exact_set_match": 100.0, "execution_accuracy": 100.0}
    assert body["n_skipped"] == {"exact_set_match": 0, "execution_accuracy": 0}
    changed = _spider_rows(spider / "dev.json", lambda q: q.replace("'Salt and Stone'", "'No Such Title'"))
    hit = [i for i, r in enumerate(changed) if "No Such Title" in r["prediction"]]
    assert hit
    body, scores = score_predictions(changed, metrics, task="spider", database_dir=spider / "database")
    assert all(scores[i]["exact_set_match"] == 100.0 and scores[i]["execution_accuracy"] == 0.0 for i in hit)


def test_spider_exact_set_match_on_shared_sample(shared_data):
    spider = shared_data / "spider"
    if not (spider / "dev_with_db.json").is_file():
        pytest.skip("no shared Spider sample")
    rows = _spider_rows(spider / "dev_with_db.json", lambda q: q)
    body, _ = score_predictions(rows, ["exact_set_match", "execution_accuracy"], task="spider",
                                database_dir=spider / "database")
    assert body["metrics"]["exact_set_match"] == 100.0 and body["n_skipped"]["exact_set_match"] == 0
    assert body["metrics"]["execution_accuracy"] == 100.0


# ---- the metric registry --------------------------------------------------------------------------------------
def _registry_rows(demo_data):
    """Spider's demo dev set with its gold queries as predictions, every third one broken."""
    data = json.loads((demo_data / "spider" / "dev.json").read_text())
    return [{"id": str(i), "prediction": e["query"] if i % 3 else "SELECT nothing", "references": [e["query"]],
             "meta": {"db_id": e["db_id"]}} for i, e in enumerate(data)]


def test_registry_facts_hold_for_every_metric(demo_data):
    """What the registry says of each metric is what it does: needs a database or not, how its corpus value
    aggregates the examples (and so which bootstrap interval fits it)."""
    rows = _registry_rows(demo_data)
    dbdir = demo_data / "spider" / "database"
    assert list(METRICS) == ["bleu", "exact_match", "exact_match_string", "exact_set_match", "execution_accuracy"]
    for name, m in METRICS.items():
        assert m.name == name and m.higher_is_better
        if m.needs_database:
            with pytest.raises(MetricError, match="database_dir"):
                compute_metric(name, rows, task="spider")
        r = compute_metric(name, rows, task="spider", database_dir=dbdir)
        assert r.name == name and 0 < r.value < 100, name
        if m.aggregation == CORPUS_STATISTICS:
            assert m.interval == CORPUS_BOOTSTRAP and r.per_example_stats is not None
            assert r.value != pytest.approx(sum(r.per_example) / len(r.per_example))  # not a mean of sentences
        else:
            assert m.aggregation == MEAN_OF_EVALUATED and m.interval == PROPORTION and r.per_example_stats is None
            done = [v for v in r.per_example if v is not None]
            assert set(done) <= {0.0, 100.0} and r.value == pytest.approx(sum(done) / len(done))


def test_registry_answers_the_workflow_and_the_reports():
    assert PRIMARY_PREFERENCE == ("bleu", "exact_match", "exact_set_match", "execution_accuracy")
    assert all(t.metrics[0] in PRIMARY_PREFERENCE and set(t.metrics) <= set(METRICS) for t in TASKS.values())
    assert [t for t in TASKS if task_needs_database(t)] == ["spider"]


# ---- dispatch and bad input --------------------------------------------------------------------------------
def test_unknown_metric_name():
    with pytest.raises(MetricError, match="unknown metric.*'rouge'"):
        check_metric_names(["bleu", "rouge"])


def _line(**kw):
    base = {"id": "a", "task": "mtop", "model": "m", "method": "pt", "seed": 0, "prompt_length": 4,
            "demo_source": "none", "demo_ids": [], "demo_scores": [], "input_text": "in", "prediction": "x",
            "references": ["x"], "meta": {}}
    base.update(kw)
    return base


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_load_predictions_missing_field(tmp_path):
    bad = _line(id="b")
    del bad["references"]
    p = _write(tmp_path / "predictions.jsonl", [_line(), bad])
    with pytest.raises(DataError, match=r"predictions.jsonl:2: missing field\(s\) references"):
        load_predictions(p)


def test_load_predictions_empty_references(tmp_path):
    p = _write(tmp_path / "predictions.jsonl", [_line(), _line(id="b", references=[])])
    with pytest.raises(DataError, match=r"predictions.jsonl:2: 'references' must be a non-empty list"):
        load_predictions(p)


def test_load_predictions_duplicate_id(tmp_path):
    p = _write(tmp_path / "predictions.jsonl", [_line(), _line()])
    with pytest.raises(DataError, match=r":2: duplicate id"):
        load_predictions(p)


def test_score_predictions_body(tmp_path):
    rows = [_line(id="a", prediction="x"), _line(id="b", prediction="y")]
    body, scores = score_predictions(rows, ["exact_match"], task="mtop")
    assert body["metrics"] == {"exact_match": 50.0}
    assert body["n_evaluated"] == {"exact_match": 2} and body["n_skipped"] == {"exact_match": 0}
    assert body["primary_metric"] == "exact_match"
    assert scores == [{"id": "a", "exact_match": 100.0}, {"id": "b", "exact_match": 0.0}]
