"""Thin adapter: the run's train splits -> a tiny random model folder (iclpt.tiny_model)."""

import logging
import os

from iclpt.io import read_jsonl
from iclpt.tiny_model import build_tiny_model, texts_from_records

sm = snakemake  # noqa: F821  (injected by Snakemake)
logging.basicConfig(filename=sm.log[0], level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
log = logging.getLogger("build_tiny_model")
try:
    import torch

    torch.set_num_threads(max(1, int(sm.threads)))
    texts = []
    for path in sm.input.train:
        texts += texts_from_records(read_jsonl(path, required=("input", "target")))
    build = dict(sm.params.build)
    out_dir = os.path.dirname(sm.output.config)
    build_tiny_model(texts, out_dir, **build)
    log.info("built %s from %d texts: %s", out_dir, len(texts), build)
except Exception:
    log.exception("build_tiny_model failed")
    raise
