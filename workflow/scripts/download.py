"""Snakemake adapter of the download rule: iclpt.data.download.download_task -> <download_dir>/<task>/manifest.json."""


from pathlib import Path

from iclpt.data.download import download_task
from iclpt.io import logged

if "snakemake" in globals():
    smk = globals()["snakemake"]
    with logged(smk.log[0] if smk.log else None, "download"):
        manifest = Path(smk.output.manifest)
        written = download_task(smk.params.task, manifest.parent.parent, base_url=smk.params.base_url)
        if written.resolve() != manifest.resolve():
            raise RuntimeError(f"download wrote {written}, expected {manifest}")
