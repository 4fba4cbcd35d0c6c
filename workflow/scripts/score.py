"""Thin adapter: score one predictions.jsonl -> metrics.json + scores.jsonl.

The run's identity (task, model, method, length, demos, seed) comes from params.run only; metrics.json carries
it, one key per field, and the reports read it from there. `decoding_budget`: how many references the run's
max_new_tokens cannot reach (iclpt.data.tasks.base.reference_budget over the prediction lines' ref_tokens; null
for prediction files written before they carried them). The predictions must be this run's, for exactly the test
split's examples the predict rule decoded (its first predict.max_examples): else the job stops naming the file and
the missing / extra ids (iclpt.evaluation.metrics.check_predictions_match)."""

from iclpt.data.tasks.base import reference_budget
from iclpt.evaluation.metrics import check_predictions_match, load_predictions, score_predictions
from iclpt.io import logged, provenance, write_json_atomic, write_jsonl_atomic
from iclpt.orchestration.layout import RUN_FIELDS

sm = snakemake  # noqa: F821  (injected by Snakemake)
with logged(sm.log[0] if sm.log else None, "score") as log:
    run = {k: sm.params.run[k] for k in RUN_FIELDS}
    params = {
        "metrics": list(sm.params.metrics),
        "database_dir": sm.params.database_dir,
        "exec_timeout_s": float(sm.params.exec_timeout_s),
        "run": run,
    }
    rows = load_predictions(sm.input.predictions)
    check_predictions_match(rows, sm.input.predictions, sm.input.test, sm.params.max_examples, run)
    body, scores = score_predictions(
        rows,
        params["metrics"],
        task=run["task"],
        database_dir=params["database_dir"],
        timeout_s=params["exec_timeout_s"],
    )
    budget = None
    if rows and all("ref_tokens" in r and "max_new_tokens" in r for r in rows):
        budget = reference_budget([n for r in rows for n in r["ref_tokens"]], int(rows[0]["max_new_tokens"]))
    doc = {**run, **body, "decoding_budget": budget, "predictions_file": str(sm.input.predictions),
           "provenance": provenance(params)}
    write_jsonl_atomic(sm.output.scores, scores)
    write_json_atomic(sm.output.metrics, doc)
    log.info("%s: %s (evaluated %s, skipped %s)", sm.input.predictions, doc["metrics"], doc["n_evaluated"],
             doc["n_skipped"])
