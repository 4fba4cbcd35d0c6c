"""Snakemake adapter of the embed rule: encode one split's inputs -> <split>.npy (float32, L2-normalised)."""

import logging
import time
from typing import Any

from iclpt.devices import job_setup
from iclpt.io import logged
from iclpt.retrieval import embed_file, limit_threads


def run(params: dict[str, Any], inputs: dict[str, str], outputs: dict[str, str], threads: int = 1,
        gpus: int = 0) -> None:
    """Nothing is written unless the encoder loads and every input is encoded. Before CUDA starts, the rule's
    GPUs are leased (or the job fails now when it asks for one and none is visible)."""
    t0 = time.perf_counter()
    device, _ = job_setup(params["device"], gpus, note=f"embed {inputs['data']}", say=logging.info)
    with limit_threads(threads):
        emb = embed_file(inputs["data"], outputs["emb"], params["encoder_path"],
                         batch_size=int(params["batch_size"]), device=device)
    logging.info("encoded %d inputs of %s with %s -> %s in %.1fs", emb.shape[0], inputs["data"],
                 params["encoder_path"], tuple(emb.shape), time.perf_counter() - t0)


if "snakemake" in globals():
    smk = globals()["snakemake"]
    with logged(smk.log[0] if smk.log else None, "embed"):
        run(dict(smk.params.items()), dict(smk.input.items()), dict(smk.output.items()), smk.threads,
            smk.resources.get("gpu", 0))
