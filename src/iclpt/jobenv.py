"""The environment every Snakemake job inherits (set once by the Snakefile)."""

from __future__ import annotations

import os


def export_pythonpath(src: str) -> None:
    """Put the library folder `src` first on PYTHONPATH (once), so every job imports this checkout's iclpt: in
    this environment, a conda env (--sdm conda) or on a cluster node."""
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if src not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([src, *parts])
