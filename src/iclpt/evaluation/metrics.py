"""Evaluation metrics: corpus BLEU (sacrebleu, multi-reference), exact match, Spider exact set match and
execution accuracy.

Every metric returns a :class:`MetricResult`: the corpus-level value (0-100), the per-example values (same scale;
``None`` for an example that was not evaluated), how many examples were evaluated and skipped, and why.

Which metrics a task has, and how exact match normalises its answers, live with the task
(``iclpt.data.tasks.<task>``: ``metrics``, ``normalize_answer``); this module computes them. The metric registry
(:data:`METRICS`, one :class:`Metric` line each) says per metric how it scores, how its corpus value aggregates the
examples, what it needs (the task's databases), whether higher is better and which bootstrap interval it takes;
``compute_metric``, the score rule's database input and the reports' primary-metric fallback read it.

* ``exact_match``: ``task.normalize_answer(prediction) == task.normalize_answer(reference)`` for any reference.
  The default collapses whitespace runs and strips the ends; MTOP overrides it to strip the ends only, as its
  reference evaluators do (inner whitespace matters).
* ``exact_match_string``: the same string comparison under the name of a secondary metric, for tasks whose
  primary exact match is something else (Spider: ``iclpt.data.tasks.spider.sql_match_key``, a normalised SQL
  string; *not* the official metric). No task lists it by default; request it explicitly.
* ``exact_set_match`` (Spider, primary): the official component "exact set match"
  (``iclpt.evaluation.spider_eval.exact_set_match``, taoyds/test-suite-sql-eval semantics: values and DISTINCT ignored,
  SELECT/WHERE/... compared as sets, join conditions not compared). The schema is read from
  ``<database_dir>/<db_id>/<db_id>.sqlite`` (``schema_from_sqlite``), with the foreign keys of the
  ``tables.json`` entry beside ``database_dir`` when the task has one (``Task.database_tables``: Spider's
  ``test_tables.json`` beside ``test_database/``), as the official does. An unparsable prediction is wrong; a
  missing ``db_id``, a missing database file or an unparsable *gold* is *not evaluated* (``n_skipped`` with the
  reason).
* ``execution_accuracy`` (Spider): ``iclpt.evaluation.spider_eval.execution_match`` (the official ``--etype exec``
  defaults) on ``<database_dir>/<db_id>/<db_id>.sqlite`` opened on a connection that cannot write (no ATTACH,
  VACUUM [INTO], PRAGMA, CREATE, ...: an authorizer; temp storage in memory, SQLite's heap capped) with a per-query
  timeout: DISTINCT removed from both queries, result rows compared as multisets up to a permutation of columns, as
  ordered lists only when the gold contains ``order by``. The prediction is fetched row by row and stopped once it
  holds more rows or data than the largest gold result (it could no longer compare equal). Invalid SQL, a refused
  statement, a result too large, running out of memory or a timeout of the *prediction* is wrong (the reason is
  counted in ``details.wrong_reasons``). A missing ``db_id``, a missing database file or a gold query that fails is
  *not evaluated* (counted in ``n_skipped`` with the reason). With several references, correct when any evaluable
  one matches.
* ``bleu``: ``sacrebleu.corpus_bleu`` (default 13a tokenisation, exp smoothing) with all references. When examples
  have different numbers of references the shorter reference lists are padded with ``None``, which sacrebleu 2.x
  drops per segment (an empty string would instead count as a zero-length reference and distort the brevity
  penalty). Per example: ``sacrebleu.sentence_bleu`` with that example's references, and the example's BLEU
  sufficient statistics (``per_example_stats``: hypothesis length, closest reference length, matching and total
  n-grams of orders 1-4, as sacrebleu extracts them), whose sum gives the corpus BLEU back; ``iclpt.reporting.stats``
  resamples them for the bootstrap.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iclpt.data.tasks import Task, get_task
from iclpt.data.tasks.base import database_file
from iclpt.io import DataError, PathLike, read_jsonl

#: keys every prediction line must carry (docs/architecture.md)
PREDICTION_FIELDS = (
    "id",
    "task",
    "model",
    "method",
    "seed",
    "prompt_length",
    "demo_source",
    "demo_ids",
    "demo_scores",
    "input_text",
    "prediction",
    "references",
    "meta",
)

class MetricError(ValueError):
    """Unknown metric or a metric that cannot run with the given arguments."""


@dataclass
class MetricResult:
    name: str
    value: float | None
    per_example: list[float | None]
    n_evaluated: int
    n_skipped: int = 0
    skipped_reasons: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    #: per-example sufficient statistics of a corpus-level metric (BLEU), summed over examples to get `value`
    per_example_stats: list[list[int]] | None = None


# ---- normalisation --------------------------------------------------------------------------------
def normalize_whitespace(text: str) -> str:
    return " ".join(str(text).split())



# ---- BLEU --------------------------------------------------------------------------------------------
def reference_streams(references: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """Transpose per-example reference lists into sacrebleu streams, padding short lists with None."""
    if not references:
        return [[]]
    width = max(len(r) for r in references)
    if width == 0:
        raise MetricError("every example has an empty references list")
    return [[refs[j] if j < len(refs) else None for refs in references] for j in range(width)]


def bleu_metric() -> Any:
    """The sacrebleu BLEU of every score (the defaults of sacrebleu.corpus_bleu).

    iclpt.reporting.stats rescores with it."""
    import sacrebleu

    return sacrebleu.BLEU()


def bleu_stats(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> list[list[int]]:
    """Per-example BLEU sufficient statistics (sacrebleu's segment statistics, references padded as in bleu())."""
    streams = reference_streams(references)
    return [[int(x) for x in row] for row in bleu_metric()._extract_corpus_statistics(
        [str(p) for p in predictions], streams)]


def bleu(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> MetricResult:
    import sacrebleu

    preds = [str(p) for p in predictions]
    if len(preds) != len(references):
        raise MetricError(f"bleu: {len(preds)} predictions but {len(references)} reference lists")
    if not preds:
        return MetricResult("bleu", None, [], 0)
    for i, refs in enumerate(references):
        if not refs:
            raise MetricError(f"bleu: example {i} has no references")
    streams = reference_streams(references)
    metric = bleu_metric()
    corpus = metric.corpus_score(preds, streams)
    per = [float(sacrebleu.sentence_bleu(p, list(r)).score) for p, r in zip(preds, references)]
    return MetricResult(
        "bleu",
        float(corpus.score),
        per,
        len(preds),
        details={"signature": str(metric.get_signature()), "bp": corpus.bp, "sys_len": corpus.sys_len,
                 "ref_len": corpus.ref_len},
        per_example_stats=bleu_stats(preds, references),
    )


# ---- exact match ---------------------------------------------------------------------------------------
def exact_match(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    normalize: Callable[[str], str] = normalize_whitespace,
    name: str = "exact_match",
) -> MetricResult:
    """1 (reported as 100) when the normalised prediction equals any normalised reference."""
    per: list[float | None] = []
    for p, refs in zip(predictions, references, strict=True):
        gold = {normalize(r) for r in refs}
        per.append(100.0 if normalize(p) in gold else 0.0)
    value = sum(per) / len(per) if per else None
    return MetricResult(name, value, per, len(per), details={"normalization": normalize.__name__})


# ---- Spider: exact set match and execution accuracy ------------------------------------------------------
def _spider_db(db_id: str | None, database_dir: PathLike, reasons: Counter[str]) -> Path | None:
    """The example's SQLite file, or None after counting why it cannot be evaluated."""
    if not db_id:
        reasons["no db_id in meta"] += 1
        return None
    path = database_file(database_dir, db_id)
    if not path.is_file():
        reasons[f"database missing: {db_id}"] += 1
        return None
    return path


def _tables_entries(path: PathLike | None) -> dict[str, dict[str, Any]]:
    """{db_id: entry} of a tables.json (empty when there is none or it does not read)."""
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, list):
        return {}
    return {e["db_id"]: e for e in data if isinstance(e, dict) and "db_id" in e}


def _parses(sql: str, schema: Any) -> bool:
    from iclpt.evaluation.spider_eval import SqlParseError, parse_sql

    try:
        parse_sql(sql, schema)
    except SqlParseError:
        return False
    return True


def _over_evaluated(name: str, per: list[float | None], reasons: Counter[str], details: dict[str, Any]) -> MetricResult:
    """The corpus value over the evaluated examples (None = skipped, counted with its reason)."""
    done = [v for v in per if v is not None]
    return MetricResult(name, sum(done) / len(done) if done else None, per, len(done),
                        n_skipped=sum(reasons.values()), skipped_reasons=dict(reasons), details=details)


def exact_set_match(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    db_ids: Sequence[str | None],
    database_dir: PathLike | None,
    tables_json: PathLike | None = None,
) -> MetricResult:
    """Official Spider exact set match (x100) over the evaluable examples (see module doc); the foreign keys
    come from `tables_json` when given (the task's ``database_tables``)."""
    from iclpt.evaluation.spider_eval import SqlParseError, schema_from_sqlite
    from iclpt.evaluation.spider_eval import exact_set_match as esm

    if database_dir is None:
        raise MetricError("exact_set_match needs database_dir (the folder holding <db_id>/<db_id>.sqlite)")
    entries = _tables_entries(tables_json)
    per: list[float | None] = []
    reasons: Counter[str] = Counter()
    wrong: Counter[str] = Counter()
    schemas: dict[str, Any] = {}
    for pred, refs, db_id in zip(predictions, references, db_ids, strict=True):
        path = _spider_db(db_id, database_dir, reasons)
        if path is None:
            per.append(None)
            continue
        assert db_id is not None
        if db_id not in schemas:
            schemas[db_id] = schema_from_sqlite(path, entries.get(db_id))
        verdicts = []
        for ref in refs:
            try:
                verdicts.append(esm(pred, ref, schemas[db_id]))
            except SqlParseError:
                continue
        if not verdicts:
            reasons["gold SQL does not parse"] += 1
            per.append(None)
            continue
        ok = any(verdicts)
        if not ok and not _parses(pred, schemas[db_id]):
            wrong["prediction does not parse"] += 1
        per.append(100.0 if ok else 0.0)
    return _over_evaluated("exact_set_match", per, reasons, {
        "wrong_reasons": dict(wrong), "tables_json": str(tables_json) if tables_json else None})


def execution_accuracy(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    db_ids: Sequence[str | None],
    database_dir: PathLike | None,
    timeout_s: float = 10.0,
) -> MetricResult:
    """Fraction (x100) of evaluable examples whose predicted SQL returns the gold result (see module doc)."""
    from iclpt.evaluation.spider_sql.execution import (
        QueryFailed,
        QueryRefused,
        ResultTooLarge,
        postprocess,
        remove_distinct,
        result_size,
        results_equal,
        run_query,
    )

    per: list[float | None] = []
    reasons: Counter[str] = Counter()
    wrong: Counter[str] = Counter()
    if database_dir is None:
        raise MetricError("execution_accuracy needs database_dir (the folder holding <db_id>/<db_id>.sqlite)")
    gold_cache: dict[tuple[str, str], list[tuple] | None] = {}
    for pred, refs, db_id in zip(predictions, references, db_ids, strict=True):
        path = _spider_db(db_id, database_dir, reasons)
        if path is None:
            per.append(None)
            continue
        assert db_id is not None
        golds = []
        for ref in refs:
            key = (db_id, ref)
            if key not in gold_cache:
                try:
                    gold_cache[key] = run_query(path, remove_distinct(postprocess(ref)), timeout_s)
                except QueryFailed:
                    gold_cache[key] = None
            if gold_cache[key] is not None:
                golds.append(ref)
        if not golds:
            reasons["gold SQL failed to execute"] += 1
            per.append(None)
            continue
        # the same steps as spider_eval.execution_match, with the gold rows cached and the failure reason kept; the
        # prediction may hold no more rows / data than the largest gold result (more can never compare equal)
        gold_rows = [gold_cache[(db_id, ref)] or [] for ref in golds]
        try:
            rows = run_query(path, remove_distinct(postprocess(pred)), timeout_s,
                             max_rows=max(len(g) for g in gold_rows), max_size=max(result_size(g) for g in gold_rows))
        except QueryFailed as exc:
            wrong[_query_failure(exc, QueryRefused, ResultTooLarge)] += 1
            per.append(0.0)
            continue
        ok = any(results_equal(gold_cache[(db_id, ref)] or [], rows,
                               "order by" in remove_distinct(postprocess(ref)).lower()) for ref in golds)
        per.append(100.0 if ok else 0.0)
    return _over_evaluated("execution_accuracy", per, reasons, {
        "wrong_reasons": dict(wrong), "timeout_s": timeout_s,
        "semantics": "official test-suite-sql-eval exec (distinct removed, column permutations)"})


def _query_failure(exc: Exception, refused: type, too_large: type) -> str:
    """Why a predicted query counts as wrong (metrics.json ``details.execution_accuracy.wrong_reasons``)."""
    if isinstance(exc, refused):
        return "prediction refused (writes, attaches or changes settings)"
    if isinstance(exc, too_large):
        return "prediction returns more rows or data than the gold result"
    text = str(exc).lower()
    if "interrupted" in text:  # sqlite3 reports an interrupt by the progress handler as "interrupted"
        return "prediction timed out"
    if "memory" in text:
        return "prediction ran out of memory"
    return "prediction invalid SQL"


# ---- the metric registry ---------------------------------------------------------------------------------
#: how a metric's corpus value comes from its examples
CORPUS_STATISTICS = "corpus_statistics"  # summed per-example sufficient statistics (BLEU), not a mean of sentences
MEAN_OF_EVALUATED = "mean_of_evaluated"  # mean of the per-example 0/100 values over the examples it evaluated
#: the bootstrap interval of a cell (iclpt.reporting.stats): resample the statistics and rescore the corpus, or
#: resample the 0/100 values and average them (an interval of a proportion)
CORPUS_BOOTSTRAP, PROPORTION = "corpus_bootstrap", "proportion"
#: what a metric may need besides the predictions: the task's databases (the score rule passes database_dir)
NEEDS_DATABASE = "database"


@dataclass(frozen=True)
class ScoreInput:
    """What a metric scores: the prediction rows of one run, their task and, for database metrics, where the
    task's databases are and how long one query may run."""

    rows: Sequence[dict[str, Any]]
    task: Task
    database_dir: PathLike | None = None
    timeout_s: float = 10.0

    @property
    def predictions(self) -> list[str]:
        return [r["prediction"] for r in self.rows]

    @property
    def references(self) -> list[list[str]]:
        return [r["references"] for r in self.rows]

    @property
    def db_ids(self) -> list[str | None]:
        return [(r.get("meta") or {}).get("db_id") for r in self.rows]

    @property
    def tables_json(self) -> Path | None:
        return self.task.database_tables(self.database_dir) if self.database_dir is not None else None


@dataclass(frozen=True)
class Metric:
    """One metric: `score` gives its per-example values and corpus value (a MetricResult); `aggregation` says how
    the corpus value comes from the examples, `interval` which bootstrap interval its cells get, `needs` what it
    reads besides the predictions. `secondary`: never a primary metric (left out of the primary fallback).
    `label`: how tables' column headers name it (the name the literature uses)."""

    name: str
    score: Callable[[ScoreInput], MetricResult]
    aggregation: str
    interval: str
    label: str
    needs: tuple[str, ...] = ()
    higher_is_better: bool = True
    secondary: bool = False

    @property
    def needs_database(self) -> bool:
        return NEEDS_DATABASE in self.needs


def _bleu(x: ScoreInput) -> MetricResult:
    return bleu(x.predictions, x.references)


def _exact_match(x: ScoreInput) -> MetricResult:
    return exact_match(x.predictions, x.references, x.task.normalize_answer, name="exact_match")


def _exact_match_string(x: ScoreInput) -> MetricResult:
    return exact_match(x.predictions, x.references, x.task.normalize_answer, name="exact_match_string")


def _exact_set_match(x: ScoreInput) -> MetricResult:
    return exact_set_match(x.predictions, x.references, x.db_ids, x.database_dir, x.tables_json)


def _execution_accuracy(x: ScoreInput) -> MetricResult:
    return execution_accuracy(x.predictions, x.references, x.db_ids, x.database_dir, x.timeout_s)


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("bleu", _bleu, CORPUS_STATISTICS, CORPUS_BOOTSTRAP, "BLEU"),
        Metric("exact_match", _exact_match, MEAN_OF_EVALUATED, PROPORTION, "EM"),
        Metric("exact_match_string", _exact_match_string, MEAN_OF_EVALUATED, PROPORTION, "string EM", secondary=True),
        Metric("exact_set_match", _exact_set_match, MEAN_OF_EVALUATED, PROPORTION, "exact set match",
               needs=(NEEDS_DATABASE,)),
        Metric("execution_accuracy", _execution_accuracy, MEAN_OF_EVALUATED, PROPORTION, "execution accuracy",
               needs=(NEEDS_DATABASE,)),
    )
}
def metric_label(name: str) -> str:
    """The metric's column-header label; a name the registry does not know (a foreign table) is shown as is."""
    return METRICS[name].label if name in METRICS else name


#: when a metrics.json names no primary metric, the first of these it has is used (iclpt.reporting.aggregate)
PRIMARY_PREFERENCE = tuple(n for n, m in METRICS.items() if not m.secondary)


def task_metrics(task: str) -> list[str]:
    """The metrics the task declares (iclpt.data.tasks); the first is its primary metric."""
    return list(get_task(task).metrics)


def task_needs_database(task: str) -> bool:
    """Whether one of the task's metrics reads its databases (the score rule then passes database_dir)."""
    return any(METRICS[m].needs_database for m in task_metrics(task))


def check_metric_names(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise MetricError(f"unknown metric(s) {', '.join(map(repr, unknown))}; known: {', '.join(METRICS)}")
    if not names:
        raise MetricError("no metric requested")


def compute_metric(
    name: str,
    rows: Sequence[dict[str, Any]],
    task: str,
    database_dir: PathLike | None = None,
    timeout_s: float = 10.0,
) -> MetricResult:
    check_metric_names([name])
    return METRICS[name].score(ScoreInput(rows, get_task(task), database_dir, timeout_s))


def load_predictions(path: PathLike) -> list[dict[str, Any]]:
    """Read and validate a predictions.jsonl; every problem names the file and line."""
    rows = read_jsonl(path, required=PREDICTION_FIELDS)
    if not rows:
        raise DataError(f"{path}: no predictions")
    seen: dict[str, int] = {}
    # line numbers: read_jsonl skips blank lines, so recount them for messages
    linenos = [i for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1) if line.strip()]
    for row, lineno in zip(rows, linenos):
        where = f"{path}:{lineno}"
        if not isinstance(row["prediction"], str):
            raise DataError(f"{where}: 'prediction' must be a string, got {type(row['prediction']).__name__}")
        refs = row["references"]
        if not isinstance(refs, list) or not refs:
            raise DataError(f"{where}: 'references' must be a non-empty list of strings")
        if not all(isinstance(r, str) for r in refs):
            raise DataError(f"{where}: 'references' must contain strings only")
        if not isinstance(row["demo_scores"], list):
            raise DataError(f"{where}: 'demo_scores' must be a list")
        if row["meta"] is not None and not isinstance(row["meta"], dict):
            raise DataError(f"{where}: 'meta' must be an object")
        rid = str(row["id"])
        if rid in seen:
            raise DataError(f"{where}: duplicate id {rid!r} (first on line {seen[rid]})")
        seen[rid] = lineno
    return rows


#: (prediction line field, run field) pairs that must agree: a predictions file names the run that wrote it
_RUN_LABELS = (("task", "task"), ("model", "model"), ("method", "method"), ("seed", "seed"),
               ("prompt_length", "length"), ("demo_source", "demos"))


def _nonblank_linenos(path: PathLike) -> list[int]:
    return [i for i, line in enumerate(Path(path).read_bytes().split(b"\n"), 1) if line.strip()]


def _some(ids: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(repr(i) for i in ids[:n])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > n else "")


def check_predictions_match(rows: Sequence[dict[str, Any]], path: PathLike, test_path: PathLike,
                            max_examples: int | None = None, run: dict[str, Any] | None = None) -> None:
    """A predictions file must be its run's answer to exactly the test split the predict rule decoded: the ids of
    the first ``max_examples`` (all when None) examples of ``test_path``, each once, and, with ``run``, every
    line labelled with the run's task, model, method, seed, prompt length and demo source. Anything else (a file
    cut short at a line end, another task's or data version's file, another run's file) raises DataError naming
    the file and the missing / extra ids or the line and label."""
    if run is not None:
        for row, lineno in zip(rows, _nonblank_linenos(path)):
            for field_name, run_key in _RUN_LABELS:
                if run_key in run and str(row.get(field_name)) != str(run[run_key]):
                    raise DataError(f"{path}:{lineno}: {field_name} is {row.get(field_name)!r}, this run's is "
                                    f"{run[run_key]!r} (the predictions of another run?); delete the file so that "
                                    "predict reruns")
    test_ids = [str(r["id"]) for r in read_jsonl(test_path, required=("id",))]
    if max_examples:
        test_ids = test_ids[: int(max_examples)]
    got = [str(r["id"]) for r in rows]
    want, have = set(test_ids), set(got)
    missing = [i for i in test_ids if i not in have]
    extra = [i for i in got if i not in want]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} test id(s) missing ({_some(missing)})")
        if extra:
            parts.append(f"{len(extra)} id(s) not in the test split ({_some(extra)})")
        raise DataError(f"{path}: holds {len(got)} predictions, the test split {test_path} has {len(test_ids)} "
                        f"examples to predict: {'; '.join(parts)} (cut short, or another run's or data version's "
                        "file?); delete it so that predict reruns")


def score_predictions(
    rows: Sequence[dict[str, Any]],
    metrics: Sequence[str],
    task: str,
    database_dir: PathLike | None = None,
    timeout_s: float = 10.0,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(metrics.json body without the run's identity and provenance, scores.jsonl rows).

    A scores line is ``{"id", <metric>: per-example value, ...}`` plus, when a metric is corpus-level (BLEU),
    ``"stats": {<metric>: [its per-example sufficient statistics]}`` for the bootstrap (iclpt.reporting.stats)."""
    check_metric_names(list(metrics))
    results = [compute_metric(m, rows, task, database_dir, timeout_s) for m in metrics]
    body: dict[str, Any] = {
        "metric_names": list(metrics),
        "primary_metric": metrics[0],
        "n_examples": len(rows),
        "metrics": {r.name: r.value for r in results},
        "n_evaluated": {r.name: r.n_evaluated for r in results},
        "n_skipped": {r.name: r.n_skipped for r in results},
        "skipped_reasons": {r.name: r.skipped_reasons for r in results},
        "details": {r.name: r.details for r in results},
    }
    scores = []
    for i, row in enumerate(rows):
        line = {"id": row["id"]}
        for r in results:
            line[r.name] = r.per_example[i]
        stats = {r.name: r.per_example_stats[i] for r in results if r.per_example_stats is not None}
        if stats:
            line["stats"] = stats
        scores.append(line)
    return body, scores
