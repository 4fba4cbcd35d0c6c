"""Thin adapter: a hub model (or sentence encoder) at its pinned revision -> a local folder (iclpt.models.hub)."""

import os

from iclpt.io import logged

sm = snakemake  # noqa: F821  (injected by Snakemake)
with logged(sm.log[0] if sm.log else None, sm.rule) as log:
    from iclpt.models.hub import fetch_hub_model

    out_dir = os.path.dirname(sm.output[0])
    prov = fetch_hub_model(sm.params.repo_id, sm.params.revision, out_dir, sm.params.name, kind=sm.params.kind)
    log.info("fetched %s@%s (commit %s) into %s", prov["repo_id"], prov["revision"], prov["commit"], out_dir)
