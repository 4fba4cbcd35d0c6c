"""Thin adapter: decode the test split (iclpt.engine.generation.predict_job) into predictions.jsonl."""

from iclpt.io import logged

sm = snakemake  # noqa: F821  (injected by Snakemake)
with logged(sm.log[0] if sm.log else None, "predict") as log:
    from iclpt.devices import job_setup

    job = dict(sm.params.job)
    # before CUDA starts: lease the rule's GPUs (CUDA_VISIBLE_DEVICES), or fail now if none is visible
    job["device"], _ = job_setup(job["device"], sm.resources.get("gpu", 0), note=f"{sm.rule} {dict(sm.wildcards)}",
                                 say=log.info)
    import torch

    from iclpt.engine.generation import predict_job

    torch.set_num_threads(max(1, int(sm.threads)))
    n = predict_job(
        model_path=sm.params.model_path,
        test_path=sm.input.test,
        out_path=sm.output.predictions,
        params=job,
        train_path=sm.input.get("train"),
        retrieval_path=sm.input.get("retrieval"),
        prompt_path=sm.input.get("prompt"),
        log=log.info,
    )
    log.info("wrote %d predictions to %s", n, sm.output.predictions)
