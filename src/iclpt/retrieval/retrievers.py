"""The three retrievers (dense, bm25, seeded random_s<seed>), exclusion lists and the per-split file job.

* ``dense``: cosine similarity of L2-normalised embeddings, exact top-k (faiss IndexFlatIP, see topk), best first.
* ``bm25``: Okapi BM25 (``bm25s``, Lucene variant, k1=1.5, b=0.75) over ``bm25s.tokenize`` tokens: lower-cased,
  regex ``\\b\\w\\w+\\b``, English stop words removed, no stemming. Best first.
* ``random_s<seed>``: k distinct train examples drawn uniformly (seeded per seed and split), each with its dense
  cosine similarity; lines keep the draw order.

Ties go to the lower train index. When the queries are the train split, a query never gets itself nor an example
of its own ``meta.group``.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from iclpt.io import PathLike, read_jsonl, write_jsonl_atomic
from iclpt.retrieval.encoder import load_embeddings, resolve_encoder_path
from iclpt.retrieval.settings import (
    BM25_SETTINGS,
    MAX_BLOCK_BYTES,
    RetrievalError,
    block_rows,
    check_k,
    parse_retriever,
    round_score,
)
from iclpt.retrieval.topk import dense_topk, mask_rows, topk_rows

log = logging.getLogger(__name__)


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



def bm25_tokenize(texts: Sequence[str]) -> list[list[str]]:
    """bm25s tokens of each text under BM25_SETTINGS (empty tokens dropped)."""
    import bm25s

    s = BM25_SETTINGS
    toks = bm25s.tokenize(list(texts), lower=s["lower"], token_pattern=s["token_pattern"],
                          stopwords=s["stopwords"], return_ids=False, show_progress=False)
    return [[t for t in doc if t] for doc in toks]


def _bm25_index(corpus_texts: Sequence[str]) -> Any:
    """A bm25s index of the corpus under BM25_SETTINGS (a corpus without any word scores 0 everywhere)."""
    import bm25s

    s = BM25_SETTINGS
    model = bm25s.BM25(k1=s["k1"], b=s["b"], method=s["method"])
    corpus_tokens = bm25_tokenize(corpus_texts)
    if not any(corpus_tokens):
        corpus_tokens = [["\u0000"] for _ in corpus_tokens]  # no words at all: every score is 0
    model.index(corpus_tokens, show_progress=False)
    return model


def bm25_topk(query_texts: Sequence[str], corpus_texts: Sequence[str], k: int,
              exclude: Sequence[np.ndarray] | None = None, block_size: int = 4096,
              max_block_bytes: int = MAX_BLOCK_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """Exact BM25 top-k (bm25s scoring, deterministic top-k): (indices (q, k), scores (q, k)), ties -> lower index."""
    n = len(corpus_texts)
    check_k(k, n, exclude)
    model = _bm25_index(corpus_texts)
    q_tokens = bm25_tokenize(query_texts)
    nq = len(q_tokens)
    rows = block_rows(block_size, n, max_block_bytes)
    out_i = np.empty((nq, k), dtype=np.int64)
    out_v = np.empty((nq, k), dtype=np.float32)
    for s0 in range(0, nq, rows):
        e = min(nq, s0 + rows)
        block = np.zeros((e - s0, n), dtype=np.float32)
        for r in range(s0, e):
            ids = model.get_tokens_ids(q_tokens[r])
            if ids:
                block[r - s0] = model.get_scores_from_ids(ids)
        mask_rows(block, exclude[s0:e] if exclude is not None else None)
        out_i[s0:e], out_v[s0:e] = topk_rows(block, k)
    return out_i, out_v


def random_demos(n_queries: int, n_corpus: int, k: int, seed: int, split: str = "",
                 exclude: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """(q, k) distinct corpus indices per query, uniform among the allowed ones, in draw order.

    The stream is seeded by (seed, split), so each split's draws are reproducible on their own.
    """
    check_k(k, n_corpus, exclude)
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


def _check_embeddings(kind: str, n_queries: int, n_train: int, query_emb: np.ndarray | None,
                      train_emb: np.ndarray | None, what: str, retriever: str) -> None:
    """Dense and random retrievers need embeddings whose rows match the records."""
    if kind not in ("dense", "random"):
        return
    if query_emb is None or train_emb is None:
        raise RetrievalError(f"{what}retriever {retriever!r} needs query and train embeddings")
    if query_emb.shape[0] != n_queries or train_emb.shape[0] != n_train:
        raise RetrievalError(
            f"{what}embeddings do not match the data: {query_emb.shape[0]} query rows for {n_queries} "
            f"records, {train_emb.shape[0]} train rows for {n_train} records"
        )


def _search(kind: str, seed: int | None, queries: Sequence[dict[str, Any]], train: Sequence[dict[str, Any]],
            k: int, exclude: list[np.ndarray] | None, query_emb: np.ndarray | None, train_emb: np.ndarray | None,
            split: str, block_size: int, device: str, cfg: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(indices, scores) of one retriever kind; records its settings in cfg."""
    if kind == "dense":
        return dense_topk(query_emb, train_emb, k, exclude, block_size=block_size, device=device)
    if kind == "bm25":
        cfg["bm25"] = dict(BM25_SETTINGS)
        return bm25_topk([q["input"] for q in queries], [t["input"] for t in train], k, exclude,
                         block_size=block_size)
    cfg["seed"] = seed
    cfg["order"] = "draw"
    idx = random_demos(len(queries), len(train), k, seed, split=split, exclude=exclude)
    return idx, pair_scores(query_emb, train_emb, idx)


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
    check_k(k, n, exclude, what)
    log.info("%s%d queries x %d train examples, k=%d, %s", what, len(queries), n, k,
             f"excluding {sum(len(e) for e in exclude)} own/group pairs" if exclude is not None else "no exclusion")
    cfg: dict[str, Any] = {"retriever": retriever, "k": int(k), "exclude_own_group": bool(exclude_own)}
    _check_embeddings(kind, len(queries), n, query_emb, train_emb, what, retriever)
    idx, val = _search(kind, seed, queries, train, k, exclude, query_emb, train_emb, split, block_size, device, cfg)
    if kind in ("dense", "random"):
        cfg.update(settings or {})
    cfg = {key: cfg[key] for key in sorted(cfg)}
    train_ids = [str(t["id"]) for t in train]
    return [
        {"id": q["id"], "demo_ids": [train_ids[j] for j in idx[i]], "scores": [round_score(v) for v in val[i]],
         "retriever": retriever, "config": cfg}
        for i, q in enumerate(queries)
    ]


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
