"""Measured in fresh processes: a job's start-up (``python``, ``snakemake.script`` as a script job's preamble
imports it, the script's library modules, and for model jobs the model load or for encoder jobs the encoder
load), and how much slower jobs run while several share the machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[3]


def _env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a probe: PYTHONPATH starts with the library."""
    e = dict(os.environ if env is None else env)
    e["PYTHONPATH"] = os.pathsep.join([str(SRC)] + ([e["PYTHONPATH"]] if e.get("PYTHONPATH") else []))
    return e


def _run_python(code: str, timeout: float = 900) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``python -c code``; (the finished process, wall seconds), raising on failure."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=timeout)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"probe failed: {r.stderr[-1500:]}")
    return r, dt


def script_startup(modules: Sequence[str]) -> float:
    """Seconds to start a script job: python, ``snakemake.script`` (the preamble), the script's iclpt modules."""
    return _run_python("".join(f"import {m}\n" for m in ["snakemake.script", *modules]))[1]


def model_startup(modules: Sequence[str], path: str, device: str, precision: str, threads: int) -> float:
    """Seconds to start a train/predict job: python, its imports (``modules``), and loading the model."""
    code = ("import snakemake.script\nimport torch\n"
            f"torch.set_num_threads({int(threads)})\n"
            + "".join(f"import {m}\n" for m in modules)
            + "from iclpt.models.loading import load_model, resolve_device, resolve_precision\n"
            f"d = resolve_device({device!r})\n"
            f"load_model({path!r}, device=d, precision=resolve_precision({precision!r}, d))\n")
    return _run_python(code)[1]


def embed_probe(encoder_path: str, texts: Sequence[str], threads: int, device: str) -> tuple[float, float]:
    """(start-up seconds: python + imports + encoder load, sentences/s) of an embed job, measured."""
    code = ("import time, json\nt0 = time.perf_counter()\nimport snakemake.script\n"
            "from iclpt.retrieval import encode_texts, limit_threads, load_encoder\n"
            f"with limit_threads({int(threads)}):\n"
            f"    m = load_encoder({encoder_path!r}, device={device!r})\n"
            "    t1 = time.perf_counter()\n"
            f"    encode_texts(m, {list(texts)[:128]!r})\n"
            "    t2 = time.perf_counter()\n"
            f"print(json.dumps({{'load': t1 - t0, 'encode': t2 - t1, 'n': {min(len(texts), 128)}}}))\n")
    r, wall = _run_python(code)
    out: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return wall - out["encode"], out["n"] / max(out["encode"], 1e-9)


_PROBE = """
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
dt = torch.bfloat16 if sys.argv[2] == "bf16" else torch.float32
w = torch.randn(1536, 576, dtype=dt); big = torch.randn(512, 576, dtype=dt); small = torch.randn(16, 576, dtype=dt)
for _ in range(3):
    big @ w.T; small @ w.T
t0 = time.perf_counter(); n = 0
while time.perf_counter() - t0 < float(sys.argv[3]):
    big @ w.T
    for _ in range(8):
        small @ w.T
    n += 1
print(json.dumps(n / (time.perf_counter() - t0)))
"""


def concurrency_factor(slots: int, threads: int, precision: str, seconds: float = 3.0) -> float:
    """How many times slower a job runs while ``slots`` such jobs run at once on this machine, measured: a
    matmul probe (training- and decoding-sized products, ``threads`` threads) alone, then ``slots`` copies at
    once. It folds in whatever else loads the machine now; 1.0 for a single slot."""
    if slots <= 1:
        return 1.0

    def run(n: int) -> list[float]:
        procs = [subprocess.Popen([sys.executable, "-c", _PROBE, str(threads), precision, str(seconds)],
                                  stdout=subprocess.PIPE, text=True) for _ in range(n)]
        return [float(json.loads(p.communicate()[0].strip().splitlines()[-1])) for p in procs]

    alone = run(1)[0]
    together = run(slots)
    return max(1.0, alone / (sum(together) / len(together)))
