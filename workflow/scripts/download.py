"""Snakemake adapter of the download rule: iclpt.download.download_task -> <download_dir>/<task>/manifest.json."""


import logging
from pathlib import Path

from iclpt.download import download_task

if "snakemake" in globals():
    smk = globals()["snakemake"]
    Path(smk.log[0]).parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(smk.log[0], mode="w")], force=True)
    manifest = Path(smk.output.manifest)
    try:
        written = download_task(smk.params.task, manifest.parent.parent, base_url=smk.params.base_url)
    except Exception:
        logging.getLogger("download").exception("download %s failed", smk.params.task)
        raise
    if written.resolve() != manifest.resolve():
        raise RuntimeError(f"download wrote {written}, expected {manifest}")
