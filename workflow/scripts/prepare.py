"""Snakemake adapter of the prepare rule: iclpt.data.prepare.prepare_task -> three split files + prepare.json."""


from pathlib import Path
from typing import Any

from iclpt.data.prepare import dev_is_test, prepare_task, summarize
from iclpt.io import logged, provenance, write_json_atomic, write_jsonl_atomic


def run(params: dict[str, Any], outputs: dict[str, str], log_path: str | None = None) -> dict[str, Any]:
    """Prepare `params["task"]`; nothing is written unless every split loads and validates. `dev_from_train`
    (given when the dev and test files are one file): dev is held out of train (iclpt.data.prepare)."""
    excluded: dict[str, list[dict[str, str]]] = {}
    files = {s: Path(p) for s, p in params["files"].items()}
    holdout = params.get("dev_from_train")
    splits = prepare_task(params["task"], files, params.get("max_examples") or {}, int(params.get("data_seed", 0)),
                          missing_database=params.get("missing_database") or "error", excluded=excluded,
                          dev_from_train=holdout)
    counts = summarize(splits)
    for split, records in splits.items():
        write_jsonl_atomic(outputs[split], records)
    summary = {"task": params["task"], "counts": counts, "provenance": provenance(params),
               "dev_source": "held out of train" if holdout is not None and dev_is_test(files) else "dev file",
               "excluded": {s: {"n": len(rows), "examples": rows} for s, rows in excluded.items() if rows}}
    if outputs.get("summary"):
        write_json_atomic(outputs["summary"], summary)
    return summary


if "snakemake" in globals():
    smk = globals()["snakemake"]
    with logged(smk.log[0] if smk.log else None, "prepare"):
        run({k: smk.params[k] for k in ("task", "files", "max_examples", "data_seed", "source", "missing_database",
                                        "inputs_sha256", "dev_from_train")},
            {k: smk.output[k] for k in ("train", "dev", "test", "summary")})
