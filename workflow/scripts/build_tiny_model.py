"""Thin adapter: the run's train splits -> a tiny random model folder (iclpt.models.tiny)."""

import os

from iclpt.io import logged, read_jsonl
from iclpt.models.tiny import build_tiny_model, texts_from_records

sm = snakemake  # noqa: F821  (injected by Snakemake)
with logged(sm.log[0] if sm.log else None, "build_tiny_model") as log:
    import torch

    torch.set_num_threads(max(1, int(sm.threads)))
    texts = []
    for path in sm.input.train:
        texts += texts_from_records(read_jsonl(path, required=("input", "target")))
    build = dict(sm.params.build)
    out_dir = os.path.dirname(sm.output.config)
    build_tiny_model(texts, out_dir, **build)
    log.info("built %s from %d texts: %s", out_dir, len(texts), build)
