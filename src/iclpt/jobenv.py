"""The environment every Snakemake job inherits (set once by the Snakefile)."""

from __future__ import annotations

import os


def export_pythonpath(src: str) -> None:
    """Put the library folder `src` first on PYTHONPATH (once), so every job imports this checkout's iclpt: in
    this environment, a conda env (--sdm conda) or on a cluster node."""
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if src not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([src, *parts])


def export_gpus(gpus: int | str | None) -> None:
    """The config's ``gpus`` (a count or ids) as ``ICLPT_GPUS``, the GPUs local jobs lease
    (:mod:`iclpt.devices`); None leaves the machine's own list."""
    if gpus is not None:
        os.environ["ICLPT_GPUS"] = str(gpus)
