"""Thin adapter: decode the test split (iclpt.generation.predict_job) into predictions.jsonl."""

import logging

sm = snakemake  # noqa: F821  (injected by Snakemake)
logging.basicConfig(filename=sm.log[0], level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
log = logging.getLogger("predict")
try:
    import torch

    from iclpt.generation import predict_job

    torch.set_num_threads(max(1, int(sm.threads)))
    n = predict_job(
        model_path=sm.params.model_path,
        test_path=sm.input.test,
        out_path=sm.output.predictions,
        params=dict(sm.params.job),
        train_path=sm.input.get("train"),
        retrieval_path=sm.input.get("retrieval"),
        prompt_path=sm.input.get("prompt"),
        log=log.info,
    )
    log.info("wrote %d predictions to %s", n, sm.output.predictions)
except Exception:
    log.exception("predict failed")
    raise
