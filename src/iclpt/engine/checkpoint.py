"""Resumable-job checkpoints: the checkpoint key of a job, RNG state capture, atomic save / load.

A job's checkpoint folder is ``<checkpoint_root>/<key>`` (:func:`job_checkpoint_dir`); ``key`` hashes the job's
parameters and its input files (:func:`checkpoint_key`), so a rerun of the same job resumes and a changed job
starts afresh.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


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
    write_checkpoint(path, state)


def load_checkpoint(path: Path, required: Sequence[str] = ()) -> dict[str, Any] | None:
    return read_checkpoint(path, required)


# ---- writing and reading a checkpoint file: failures name it ---------------------------------------------------
def write_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Serialise ``state`` in memory, then write it atomically (:func:`iclpt.io.write_bytes_atomic`): a full disk,
    a permission or a read-only file system raises :class:`iclpt.io.WriteError` naming ``path`` and the cause, and
    leaves the previous checkpoint and no temp file."""
    from iclpt.io import write_bytes_atomic

    buf = io.BytesIO()
    torch.save(state, buf)
    write_bytes_atomic(path, buf.getvalue())


def read_checkpoint(path: Path, required: Sequence[str] = ()) -> dict[str, Any] | None:
    """The state in ``path``, or None when there is none or it cannot be used: a file that does not load
    (truncated, emptied, overwritten), or that is not a dict holding every key in ``required``, is discarded
    (:func:`discard_checkpoint`: removed, with a warning naming it) so that training starts afresh instead of
    failing on every rerun."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch / pickle / zipfile raise many kinds for a damaged file
        discard_checkpoint(path, f"it does not load ({type(exc).__name__}: {exc})")
        return None
    if not isinstance(state, dict):
        discard_checkpoint(path, f"it holds a {type(state).__name__}, not a checkpoint")
        return None
    missing = [k for k in required if k not in state]
    if missing:
        discard_checkpoint(path, f"it lacks {', '.join(missing)}")
        return None
    return state


def discard_checkpoint(path: Path, reason: str) -> None:
    """Remove an unusable checkpoint file, with a warning naming it and why (training restarts from step 0)."""
    log.warning("checkpoint %s is unusable: %s; it was removed and training restarts from step 0", path, reason)
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:  # the next save replaces it, or names why it cannot
        log.warning("could not remove %s (%s)", path, exc)
