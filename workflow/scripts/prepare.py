"""Snakemake adapter of the prepare rule: iclpt.data.prepare_task -> three split files + prepare.json."""


import logging
from pathlib import Path
from typing import Any

from iclpt.data import prepare_task, summarize
from iclpt.io import provenance, write_json_atomic, write_jsonl_atomic


def run(params: dict[str, Any], outputs: dict[str, str], log_path: str | None = None) -> dict[str, Any]:
    """Prepare `params["task"]`; nothing is written unless every split loads and validates."""
    splits = prepare_task(params["task"], {s: Path(p) for s, p in params["files"].items()},
                          params.get("max_examples") or {}, int(params.get("data_seed", 0)))
    counts = summarize(splits)
    for split, records in splits.items():
        write_jsonl_atomic(outputs[split], records)
    summary = {"task": params["task"], "counts": counts, "provenance": provenance(params)}
    if outputs.get("summary"):
        write_json_atomic(outputs["summary"], summary)
    return summary


def _configure_logging(path: str | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path, mode="w", encoding="utf-8"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=handlers, force=True)


if "snakemake" in globals():
    smk = globals()["snakemake"]
    _configure_logging(smk.log[0] if smk.log else None)
    try:
        run({k: smk.params[k] for k in ("task", "files", "max_examples", "data_seed", "source")},
            {k: smk.output[k] for k in ("train", "dev", "test", "summary")})
    except Exception:
        logging.getLogger("prepare").exception("prepare %s failed", smk.params["task"])
        raise
