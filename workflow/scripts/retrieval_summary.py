"""Snakemake adapter of the retrieval_summary rule: the three split files of a retriever -> summary.json."""

import logging
from pathlib import Path
from typing import Any

from iclpt.retrieval import summarize_files


def run(params: dict[str, Any], inputs: dict[str, str], outputs: dict[str, str]) -> dict[str, Any]:
    splits = list(params["splits"])
    return summarize_files(
        params["retriever"],
        {s: inputs[f"retrieval_{s}"] for s in splits},
        {s: inputs[f"data_{s}"] for s in splits},
        inputs["data_train"],
        outputs["summary"],
        task=params.get("task", ""),
        params=params,
    )


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
        s = run(dict(smk.params.items()), dict(smk.input.items()), dict(smk.output.items()))
        logging.info("summary %s/%s: %s", s["task"], s["retriever"],
                     {k: v["n_queries"] for k, v in s["splits"].items()})
    except Exception:
        logging.exception("retrieval_summary failed")
        raise
