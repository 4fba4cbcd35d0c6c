"""Exact top-k with deterministic ties: faiss for dense inner products, numpy for a score block (BM25).

Ties (equal float32 scores) go to the lower corpus index, so outputs are byte-identical across runs and devices.

Dense search: faiss ``IndexFlatIP`` (exact; a GPU index when faiss has GPU support and the device is CUDA) returns
``m = min(n, 2k + max excluded)`` candidates per query. Their scores are recomputed with numpy in float64 and
rounded to float32 (:func:`exact_scores`), so a score is the float32 nearest the exact inner product whatever
faiss's kernels, the device, the CPU's BLAS kernels or the block shapes: equal products tie bit for bit on every
machine. Excluded ones are dropped, the rest sorted by (-score, index). A row whose k-th score is within faiss's
rounding of the smallest fetched score (ties or near-ties at the window's edge) is redone exactly from its full
score row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from iclpt.retrieval.settings import MAX_BLOCK_BYTES, RetrievalError, block_rows, check_k

RESCORE_ROWS = 64  # query rows per numpy rescoring product (their candidates' union is the other side)
FULL_RESCORE_COLS = 4096  # corpora up to this size are rescored by one full queries x corpus product
GPU_MAX_K = 2048  # faiss GPU indexes return at most this many neighbours


def mask_rows(scores: np.ndarray, exclude: Sequence[np.ndarray] | None) -> None:
    """Set scores[i, exclude[i]] to -inf in place."""
    if exclude is None:
        return
    lens = [len(x) for x in exclude]
    if sum(lens):
        r = np.repeat(np.arange(len(exclude)), lens)
        scores[r, np.concatenate([np.asarray(x, dtype=np.int64) for x in exclude])] = -np.inf


def _sort_window(vals: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row of (vals, idx) by (-value, index)."""
    b, m = vals.shape
    rows = np.repeat(np.arange(b), m)
    order = np.lexsort((idx.ravel(), -vals.ravel(), rows)).reshape(b, m) - (np.arange(b) * m)[:, None]
    return np.take_along_axis(vals, order, axis=1), np.take_along_axis(idx, order, axis=1)


def _row_topk(row: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of one score row, best first, ties -> lower index."""
    v = np.partition(row, len(row) - k)[len(row) - k]
    gt = np.nonzero(row > v)[0]
    gt = gt[np.lexsort((gt, -row[gt]))]
    eq = np.nonzero(row == v)[0][: k - len(gt)]
    idx = np.concatenate([gt, eq])
    return idx, row[idx]


def topk_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of each row of a (b, n) float32 score block: (indices int64, values), best first.

    Ties go to the lower index. A window of 2k candidates (argpartition) is sorted; rows whose k-th value is
    still tied at the window's edge are redone from the full row.
    """
    b, n = scores.shape
    m = min(n, 2 * k)
    idx = np.argpartition(-scores, m - 1, axis=1)[:, :m] if m < n else np.tile(np.arange(n), (b, 1))
    vals, idx = _sort_window(np.take_along_axis(scores, idx, axis=1), idx.astype(np.int64))
    out_i, out_v = idx[:, :k].copy(), vals[:, :k].copy()
    if m < n:
        for r in np.nonzero(vals[:, k - 1] == vals[:, m - 1])[0]:
            out_i[r], out_v[r] = _row_topk(scores[r], k)
    return out_i, out_v.astype(np.float32)


def faiss_has_gpu() -> bool:
    """Whether the installed faiss was built with GPU support and sees a GPU."""
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def build_index(corpus: np.ndarray, device: str = "cpu", m: int = 1) -> Any:
    """An exact inner-product faiss index over the corpus; on the GPU when possible and device is CUDA."""
    import faiss

    index = faiss.IndexFlatIP(corpus.shape[1])
    index.add(corpus)
    if device.startswith("cuda") and m <= GPU_MAX_K and faiss_has_gpu():
        gpu = int(device.split(":")[1]) if ":" in device else 0
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), gpu, index)
    return index


def exact_scores(queries: np.ndarray, corpus: np.ndarray) -> np.ndarray:
    """(b, n) float32 inner products, each the float32 nearest the exact value: a float64 product rounded once.
    (float32 BLAS sums in an order that depends on the CPU's kernels and the matrix shapes, so two equal
    products can differ in the last bit there; float64's error is ~1e-9 of a float32 ulp.)"""
    return np.matmul(np.asarray(queries, dtype=np.float64), np.asarray(corpus, dtype=np.float64).T).astype(np.float32)


def _rescore(queries: np.ndarray, corpus: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """(b, m) :func:`exact_scores` of queries[i] with corpus[cand[i]].

    For a corpus larger than FULL_RESCORE_COLS (smaller ones are multiplied whole, see _search_block): through
    the union of the candidates of RESCORE_ROWS queries at a time (the scores do not depend on the shape).
    """
    out = np.empty(cand.shape, dtype=np.float32)
    for s in range(0, len(cand), RESCORE_ROWS):
        e = min(len(cand), s + RESCORE_ROWS)
        cols = np.unique(cand[s:e])
        sub = exact_scores(queries[s:e], corpus[cols])
        out[s:e] = np.take_along_axis(sub, np.searchsorted(cols, cand[s:e]), axis=1)
    return out


def _full_rows(queries: np.ndarray, corpus: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None,
               scores: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k from the full score rows of a few queries (the window-edge fallback).

    scores: their full rows when already computed (else :func:`exact_scores`).
    """
    if scores is None:
        scores = exact_scores(queries, corpus)
    scores = np.array(scores, dtype=np.float32)
    mask_rows(scores, exclude)
    return topk_rows(scores, k)


def _search_block(index: Any, queries: np.ndarray, corpus: np.ndarray, k: int, m: int,
                  exclude: Sequence[np.ndarray] | None, max_norm: float) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of one query block: faiss candidates, numpy rescoring, exclusion, ordering, edge fallback."""
    fscores, cand = index.search(queries, m)
    cand = cand.astype(np.int64)
    full = exact_scores(queries, corpus) if corpus.shape[0] <= FULL_RESCORE_COLS else None
    scores = np.take_along_axis(full, cand, axis=1) if full is not None else _rescore(queries, corpus, cand)
    if exclude is not None:
        for r, ex in enumerate(exclude):
            scores[r, np.isin(cand[r], ex)] = -np.inf
    vals, idx = _sort_window(scores, cand)
    out_i, out_v = idx[:, :k].copy(), vals[:, :k].copy()
    if m < corpus.shape[0]:
        d = queries.shape[1]
        tol = 2.02 * (d + 2) * np.finfo(np.float32).eps * np.linalg.norm(queries, axis=1) * max_norm
        redo = np.nonzero(vals[:, k - 1] <= fscores[:, m - 1] + tol)[0]
        if len(redo):
            ex = [exclude[r] for r in redo] if exclude is not None else None
            sub = full[redo] if full is not None else None
            out_i[redo], out_v[redo] = _full_rows(queries[redo], corpus, k, ex, sub)
    return out_i, out_v


def _max_norm(corpus: np.ndarray) -> float:
    """Largest row norm of the corpus (bounds the rounding difference between two float32 dot products)."""
    return float(np.sqrt(np.einsum("ij,ij->i", corpus, corpus).max()) * (1 + 1e-6))


def dense_topk(queries: np.ndarray, corpus: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None,
               block_size: int = 4096, device: str = "cpu", max_block_bytes: int = MAX_BLOCK_BYTES,
               engine: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k (cosine for unit vectors): (indices int64 (q, k), scores float32 (q, k)).

    Queries go to faiss in blocks of at most `block_size` rows (and `max_block_bytes` of fallback scores).
    exclude[i]: corpus indices query i must not get. Ties: lower corpus index first.
    device: 'cpu', 'cuda[:i]' or 'auto'. engine: 'auto' (faiss GPU index on CUDA when faiss has GPU support,
    else CPU) or 'cpu' (always the CPU index).
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    corpus = np.ascontiguousarray(corpus, dtype=np.float32)
    n = corpus.shape[0]
    check_k(k, n, exclude)
    if queries.ndim != 2 or corpus.ndim != 2 or queries.shape[1] != corpus.shape[1]:
        raise RetrievalError(f"query shape {queries.shape} and train shape {corpus.shape} do not match")
    if engine not in ("auto", "cpu"):
        raise RetrievalError(f"unknown engine {engine!r} (auto or cpu)")
    worst = max((len(e) for e in exclude), default=0) if exclude is not None else 0
    m = min(n, 2 * k + worst)
    index = build_index(corpus, _device_name(device) if engine == "auto" else "cpu", m)
    rows = block_rows(block_size, n, max_block_bytes)
    max_norm = _max_norm(corpus)
    out_i = np.empty((queries.shape[0], k), dtype=np.int64)
    out_v = np.empty((queries.shape[0], k), dtype=np.float32)
    for s in range(0, queries.shape[0], rows):
        e = min(queries.shape[0], s + rows)
        ex = exclude[s:e] if exclude is not None else None
        out_i[s:e], out_v[s:e] = _search_block(index, queries[s:e], corpus, k, m, ex, max_norm)
    return out_i, out_v


def _device_name(device: str | None) -> str:
    """The device as a string ('cpu', 'cuda', 'cuda:1'), resolved by iclpt.models.loading ('auto'/None: CUDA if any)."""
    from iclpt.models.loading import resolve_device

    return str(resolve_device(device or "auto"))
