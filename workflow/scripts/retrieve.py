"""Snakemake adapter of the retrieve rule: k train demos per query of one split -> <split>.jsonl."""

import logging
import time
from typing import Any

from iclpt.devices import job_setup
from iclpt.io import logged
from iclpt.retrieval import limit_threads, retrieve_files


def run(params: dict[str, Any], inputs: dict[str, str], outputs: dict[str, str], threads: int = 1,
        gpus: int = 0) -> int:
    """Validate (k vs train size, embeddings vs data) before any output; write the JSONL atomically. The rule's
    GPUs (if any) are leased first (:func:`iclpt.devices.job_setup`)."""
    t0 = time.perf_counter()
    device, _ = job_setup(params.get("device", "cpu"), gpus, note=f"retrieve {outputs['retrieval']}",
                          say=logging.info)
    settings = {}
    if params.get("encoder_path") is not None:
        settings = {"encoder": params.get("encoder"), "encoder_path": params["encoder_path"]}
    with limit_threads(threads):
        n = retrieve_files(
            params["retriever"], inputs["queries"], inputs["train"], outputs["retrieval"],
            k=int(params["k"]), split=params["split"], query_emb_path=inputs.get("query_emb"),
            train_emb_path=inputs.get("train_emb"), block_size=int(params.get("block_size", 4096)),
            device=device, settings=settings, task=params.get("task", ""),
            seed=params.get("seed"),
        )
    logging.info("%s %s/%s: %d queries, k=%s in %.1fs", params["retriever"], params.get("task"), params["split"],
                 n, params["k"], time.perf_counter() - t0)
    return n


if "snakemake" in globals():
    smk = globals()["snakemake"]
    with logged(smk.log[0] if smk.log else None, "retrieve"):
        run(dict(smk.params.items()), dict(smk.input.items()), dict(smk.output.items()), smk.threads,
            smk.resources.get("gpu", 0))
