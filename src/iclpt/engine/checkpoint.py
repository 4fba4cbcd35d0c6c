"""Resumable-job checkpoints: the checkpoint key of a job, RNG state capture, atomic save / load.

A job's checkpoint folder is ``<checkpoint_root>/<key>`` (:func:`job_checkpoint_dir`); ``key`` hashes the job's
parameters and its input files (:func:`checkpoint_key`), so a rerun of the same job resumes and a changed job
starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch


def file_fingerprint(path: str | os.PathLike[str]) -> str:
    """sha256 of a data file; for model folders / weights: name, size and mtime of each file (cheap)."""
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        for f in sorted(p.iterdir()):
            if f.is_file():
                st = f.stat()
                h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        return h.hexdigest()
    if not p.exists():
        return f"absent:{p}"
    with p.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_key(params: dict[str, Any], files: Sequence[str | os.PathLike[str]]) -> str:
    """Hash of the job's parameters and its input files: the name of its checkpoint folder."""
    payload = {"params": params, "files": {str(f): file_fingerprint(f) for f in files}}
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def job_checkpoint_dir(params: dict[str, Any], model_path: str, files: Sequence[str],
                       checkpoint_root: str | os.PathLike[str] | None) -> Path | None:
    """``<checkpoint_root>/<key>`` of the job (the model folder counts among its inputs), or None."""
    if not checkpoint_root:
        return None
    files = list(files) + ([model_path] if os.path.isdir(model_path) else [])
    return Path(checkpoint_root) / checkpoint_key({**params, "model_path": model_path}, files)


def resolved_key_params(params: dict[str, Any], device: torch.device | str, precision: str) -> dict[str, Any]:
    """The params a checkpoint key hashes: the job's, with the device type and precision it actually runs with
    instead of the configured ``auto``. A CPU-fp32 checkpoint is never resumed by a CUDA-bf16 run (nor the
    reverse); a resume on another GPU of the same kind is."""
    return {**params, "device": torch.device(device).type, "precision": str(precision)}


def rng_state(device: torch.device | str | None = None) -> dict[str, Any]:
    """The python, torch, numpy RNG states, and the CUDA one of ``device`` alone (a CUDA device): a job uses one
    GPU, and a state per visible GPU could not be restored where fewer are visible."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    try:
        import numpy as np

        state["numpy"] = np.random.get_state()
    except ImportError:  # pragma: no cover
        pass
    if device is not None and torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(torch.device(device))
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | str | None = None) -> None:
    """Restore what :func:`rng_state` captured; the CUDA state goes to ``device`` (when it is a CUDA device). A
    checkpoint written by an older version holds one CUDA state per visible GPU: the first is the job's."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])
    cuda = state.get("cuda")
    if cuda is not None and device is not None and torch.device(device).type == "cuda":
        if isinstance(cuda, (list, tuple)):
            if not cuda:
                return
            cuda = cuda[0]
        torch.cuda.set_rng_state(cuda, torch.device(device))


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)
