"""Summary statistics of retrieval files: similarity quantiles and identical-input rates per split."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from iclpt.io import DataError, PathLike, provenance, read_jsonl, write_json_atomic
from iclpt.retrieval.settings import round_score

QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
_QNAMES = {0.0: "min", 0.05: "q05", 0.25: "q25", 0.5: "median", 0.75: "q75", 0.95: "q95", 1.0: "max"}


def _quantiles(x: np.ndarray) -> dict[str, Any]:
    """min, q05, q25, median, q75, q95, max and mean of x (rounded), and n; only n when x is empty."""
    if x.size == 0:
        return {"n": 0}
    out: dict[str, Any] = {_QNAMES[q]: round_score(np.quantile(x, q)) for q in QUANTILES}
    out["mean"] = round_score(float(np.mean(x)))
    out["n"] = int(x.size)
    return out


def summarize_split(lines: Sequence[dict[str, Any]], queries: Sequence[dict[str, Any]],
                    train: Sequence[dict[str, Any]], where: str = "") -> dict[str, Any]:
    """Similarity quantiles (first demo, all candidates) and which queries' first demo has their input (and, of
    those, which also share a target: the demo's target is one of the query's target or references)."""
    qids = [str(q["id"]) for q in queries]
    lids = [str(x["id"]) for x in lines]
    if qids != lids:
        raise DataError(f"{where}: retrieval ids do not match the split's records in order (stale file?)")
    by_id = {str(t["id"]): t for t in train}
    first = np.array([x["scores"][0] for x in lines if x["scores"]], dtype=np.float64)
    every = np.array([s for x in lines for s in x["scores"]], dtype=np.float64)
    same_input, same_pair = [], []
    for x, q in zip(lines, queries):
        if not x["demo_ids"]:
            continue
        d = str(x["demo_ids"][0])
        if d not in by_id:
            raise DataError(f"{where}: query {x['id']} has demo {d!r}, not a train id")
        if by_id[d]["input"] == q["input"]:
            same_input.append(str(q["id"]))
            if _targets(by_id[d]) & _targets(q):
                same_pair.append(str(q["id"]))
    same = len(same_input)
    n = len(lines)
    ks = sorted({len(x["demo_ids"]) for x in lines})
    return {
        "n_queries": n,
        "k": ks[0] if len(ks) == 1 else ks,
        "first_demo_score": _quantiles(first),
        "all_scores": _quantiles(every),
        "first_demo_identical_input": int(same),
        "first_demo_identical_input_fraction": round(same / n, 6) if n else 0.0,
        "first_demo_identical_input_ids": same_input,
        "first_demo_identical_pair": len(same_pair),
        "first_demo_identical_pair_fraction": round(len(same_pair) / n, 6) if n else 0.0,
        "first_demo_identical_pair_ids": same_pair,
    }


def _targets(record: dict[str, Any]) -> set[str]:
    """A record's target texts: its target and every reference it has."""
    refs = record.get("references") or []
    return {str(t) for t in [record.get("target"), *refs] if t is not None}


def summarize_files(retriever: str, retrieval_paths: dict[str, PathLike], data_paths: dict[str, PathLike],
                    train_path: PathLike, out_path: PathLike, task: str = "",
                    params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Summarise a retriever's split files (see summarize_split) with its config; write the JSON atomically."""
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
