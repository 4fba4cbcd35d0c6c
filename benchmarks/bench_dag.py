"""DAG benchmarks (issue 6): `snakemake -n` of the full paper config, and a no-op run after the demo.

Baselines are the targets themselves: 20 s to build the paper DAG, 10 s for a no-op rerun of a finished demo.
The no-op part needs a finished demo (`make demo`) and is skipped otherwise. Last line: the worst ratio.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def timed(*args: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=ROOT, env=ENV, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"snakemake {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return dt, proc.stdout + proc.stderr


def main() -> None:
    ratios = []
    dt, out = timed("-n", "--cores", "8", "--configfile", "config/config.yaml", "--quiet", "all")
    total = re.search(r"^total\s+(\d+)", out, re.M)
    print(f"paper DAG: {total.group(1) if total else '?'} jobs built in {dt:.1f} s (target 20 s): ratio {dt / 20:.2f}")
    ratios.append(dt / 20)
    if (ROOT / "results" / "demo" / "tables" / "main.csv").exists():
        dt, out = timed("--cores", "2", "--configfile", "config/tiny.yaml")
        nothing = "Nothing to be done" in out
        print(f"demo no-op: {dt:.1f} s (target 10 s), nothing to be done: {nothing}: ratio {dt / 10:.2f}")
        ratios.append(dt / 10)
    else:
        print("demo no-op: skipped (run `make demo` first)")
    print(f"worst ratio vs target: {max(ratios):.2f}")


if __name__ == "__main__":
    main()
