"""Snakemake adapter of the embed rule: encode one split's inputs -> <split>.npy (float32, L2-normalised)."""

import logging
import time
from pathlib import Path
from typing import Any

from iclpt.retrieval import embed_file, limit_threads


def run(params: dict[str, Any], inputs: dict[str, str], outputs: dict[str, str], threads: int = 1) -> None:
    """Nothing is written unless the encoder loads and every input is encoded."""
    t0 = time.perf_counter()
    with limit_threads(threads):
        emb = embed_file(inputs["data"], outputs["emb"], params["encoder_path"],
                         batch_size=int(params["batch_size"]), device=params["device"])
    logging.info("encoded %d inputs of %s with %s -> %s in %.1fs", emb.shape[0], inputs["data"],
                 params["encoder_path"], tuple(emb.shape), time.perf_counter() - t0)


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
        run(dict(smk.params.items()), dict(smk.input.items()), dict(smk.output.items()), smk.threads)
    except Exception:
        logging.exception("embed failed")
        raise
