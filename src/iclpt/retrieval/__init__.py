"""Demonstration retrieval: dense (sentence embeddings), BM25 and the seeded random control.

Every retriever returns, for each query, ``k`` demo candidates from the **train** split, with a score each.
Ties are broken by the lower train index (line number), so outputs are byte-identical across runs.
When the queries are the train split, a query never gets itself nor an example of its own ``meta.group``.

Modules: :mod:`~iclpt.retrieval.settings` (names, error, k checks), :mod:`~iclpt.retrieval.encoder` (sentence
encoder, embedding cache, thread limits), :mod:`~iclpt.retrieval.topk` (exact top-k through faiss),
:mod:`~iclpt.retrieval.retrievers` (dense / bm25 / random, the file job) and :mod:`~iclpt.retrieval.summary`.

Heavy packages (torch, sentence-transformers, bm25s, faiss) are imported lazily, so the Snakefile can import this
package at parse time for :func:`check_config`.
"""

from iclpt.retrieval.encoder import (
    embed_file,
    encode_texts,
    limit_threads,
    load_embeddings,
    load_encoder,
    resolve_encoder_path,
    save_embeddings,
)
from iclpt.retrieval.retrievers import (
    bm25_tokenize,
    bm25_topk,
    check_config,
    exclusion_lists,
    group_key,
    pair_scores,
    random_demos,
    retrieve,
    retrieve_files,
)
from iclpt.retrieval.settings import (
    BM25_SETTINGS,
    MAX_BLOCK_BYTES,
    PACKAGED_ENCODER,
    SCORE_DECIMALS,
    RetrievalError,
    needs_embeddings,
    parse_retriever,
)
from iclpt.retrieval.summary import QUANTILES, summarize_files, summarize_split
from iclpt.retrieval.topk import dense_topk, topk_rows

__all__ = [
    "PACKAGED_ENCODER", "BM25_SETTINGS", "MAX_BLOCK_BYTES", "SCORE_DECIMALS", "QUANTILES", "RetrievalError",
    "parse_retriever", "needs_embeddings", "resolve_encoder_path", "check_config", "limit_threads", "load_encoder",
    "encode_texts", "save_embeddings", "load_embeddings", "embed_file", "group_key", "exclusion_lists",
    "dense_topk", "topk_rows", "bm25_topk", "bm25_tokenize", "random_demos", "pair_scores", "retrieve",
    "retrieve_files", "summarize_split", "summarize_files",
]
