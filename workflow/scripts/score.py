"""Thin adapter: score one predictions.jsonl -> metrics.json + scores.jsonl."""

from iclpt.io import logged, provenance, write_json_atomic, write_jsonl_atomic
from iclpt.evaluation.metrics import load_predictions, score_predictions

sm = snakemake  # noqa: F821  (injected by Snakemake)
with logged(sm.log[0] if sm.log else None, "score") as log:
    params = {
        "metrics": list(sm.params.metrics),
        "database_dir": sm.params.database_dir,
        "exec_timeout_s": float(sm.params.exec_timeout_s),
        "run": dict(sm.params.run),
    }
    rows = load_predictions(sm.input.predictions)
    body, scores = score_predictions(
        rows,
        params["metrics"],
        task=params["run"]["task"],
        database_dir=params["database_dir"],
        timeout_s=params["exec_timeout_s"],
    )
    body.update({"demos": params["run"]["demos"], "length": params["run"]["length"]})
    for key in ("model", "method", "seed", "prompt_length"):
        if body.get(key) is None:
            body[key] = params["run"]["length" if key == "prompt_length" else key]
    body["predictions_file"] = str(sm.input.predictions)
    body["provenance"] = provenance(params)
    write_jsonl_atomic(sm.output.scores, scores)
    write_json_atomic(sm.output.metrics, body)
    log.info("%s: %s (evaluated %s, skipped %s)", sm.input.predictions, body["metrics"], body["n_evaluated"],
             body["n_skipped"])
