"""Snakemake adapter of the retrieval_summary rule: the three split files of a retriever -> summary.json."""

from typing import Any

from iclpt.io import logged
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


if "snakemake" in globals():
    smk = globals()["snakemake"]
    with logged(smk.log[0] if smk.log else None, "retrieval_summary") as log:
        s = run(dict(smk.params.items()), dict(smk.input.items()), dict(smk.output.items()))
        log.info("summary %s/%s: %s", s["task"], s["retriever"],
                 {k: v["n_queries"] for k, v in s["splits"].items()})
