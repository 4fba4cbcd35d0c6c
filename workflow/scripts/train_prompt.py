"""Thin adapter: train one soft prompt (iclpt.engine.training.train_job) into the rule's output folder."""

import os

from iclpt.io import logged

sm = snakemake  # noqa: F821  (injected by Snakemake)
with logged(sm.log[0] if sm.log else None, "train_prompt") as log:
    from iclpt.devices import job_setup

    job = dict(sm.params.job)
    # before CUDA starts: lease the rule's GPUs (CUDA_VISIBLE_DEVICES), or fail now if none is visible
    job["device"], _ = job_setup(job["device"], sm.resources.get("gpu", 0), note=f"{sm.rule} {dict(sm.wildcards)}",
                                 say=log.info)
    import torch

    from iclpt.engine.training import train_job

    torch.set_num_threads(max(1, int(sm.threads)))
    job["train"] = dict(job["train"])
    job["prompt"] = dict(job["prompt"])
    out_dir = os.path.dirname(sm.output.prompt)
    meta = train_job(
        model_path=sm.params.model_path,
        train_path=sm.input.train,
        dev_path=sm.input.dev,
        train_retrieval=sm.input.get("train_retrieval"),
        dev_retrieval=sm.input.get("dev_retrieval"),
        out_dir=out_dir,
        params=job,
        checkpoint_root=sm.params.checkpoint_root,
        log=log.info,
    )
    missing = [p for p in sm.output if not os.path.exists(p)]
    if missing:
        raise RuntimeError(f"train_job did not write {missing}")
    log.info("done: %d steps, best dev loss %s at step %d", meta["steps"], meta["best_dev_loss"], meta["best_step"])
