"""The workload of a run: the records each task's jobs read, rendered as the jobs render them, and the padded
tokens a training step and a dev pass cost.

Records (:func:`task_sample`): the prepared split files (``results/<run>/data/<task>/*.jsonl``) when present,
else the configured official files through the task adapter and :func:`iclpt.data.prepare.prepare_task` (the
same subsample), else the adapter run over the task's example files (``Task.demo_files`` in
``resources/demo_data``; length statistics only: the job sizes then come from ``max_examples`` or
``Task.published_sizes``). Rows (:class:`Workload`) go through the jobs' own builder
(:func:`iclpt.engine.prompting.build_examples`) with the model's tokenizer, the config's lengths and budgets;
their demos come from a stand-in for the run's retrieval files (:func:`stand_in_retrieval`: BM25 over the train
split, or a seeded draw).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[4]
DEMO_DATA = ROOT / "resources" / "demo_data"
SPLITS = ("train", "dev", "test")
LENGTH_SAMPLE = 400  # records per split rendered for the length statistics


@dataclass
class TaskSample:
    """Records of one task for the length statistics, the job sizes, and where both came from."""

    task: str
    records: dict[str, list[dict[str, Any]]]
    counts: dict[str, int]
    source: str


def configured_files(config: Mapping[str, Any], task: str, workdir: Path) -> dict[str, Path]:
    """{split: path} of the task's official files, as workflow/rules/common.smk resolves them."""
    t = config["tasks"][task]
    base = Path(config["download_dir"]) / task if t.get("source") == "download" else Path(config["data_root"])
    base = base if base.is_absolute() else workdir / base
    return {s: base / t["files"][s] for s in SPLITS}


def job_sizes(config: Mapping[str, Any], task: str, n_demo: Mapping[str, int]) -> dict[str, int]:
    """Split sizes of the jobs when only the example files were readable: ``max_examples``, else the published
    test size, the config's dev examples and the example files' train size."""
    from iclpt.data.tasks import get_task

    m = config["tasks"][task].get("max_examples") or {}
    test = m.get("test") or get_task(task).published_sizes.get("test", n_demo["test"])
    dev = m.get("dev") or int(config["train"]["dev_examples"])
    train = m.get("train") or n_demo["train"]
    return {"train": int(train), "dev": int(dev), "test": int(test)}


def task_sample(config: Mapping[str, Any], task: str, workdir: Path) -> TaskSample:
    """The task's records: prepared files, else the configured files, else the example files (statistics only)."""
    from iclpt.data.prepare import prepare_task
    from iclpt.data.tasks import get_task
    from iclpt.io import read_jsonl

    prepared = {s: workdir / "results" / str(config["run"]) / "data" / task / f"{s}.jsonl" for s in SPLITS}
    if all(p.is_file() for p in prepared.values()):
        recs = {s: read_jsonl(p) for s, p in prepared.items()}
        return TaskSample(task, recs, {s: len(r) for s, r in recs.items()}, "prepared data")
    t = config["tasks"][task]
    seed = int(config.get("data_seed", 0))
    kw = {"missing_database": t["missing_database"]} if "missing_database" in t else {}
    try:
        recs = prepare_task(task, configured_files(config, task, workdir), t.get("max_examples") or {}, seed, **kw)
        return TaskSample(task, recs, {s: len(r) for s, r in recs.items()}, "data files (adapter)")
    except Exception:  # noqa: BLE001 - files absent (not downloaded yet) or unreadable: fall back
        pass
    demo = {s: DEMO_DATA / p for s, p in get_task(task).demo_files.items()}
    recs = prepare_task(task, demo, {}, seed)
    counts = job_sizes(config, task, {s: len(r) for s, r in recs.items()})
    return TaskSample(task, recs, counts, "adapter statistics of resources/demo_data (data not present)")


def stand_in_retrieval(queries: Sequence[dict[str, Any]], train: Sequence[dict[str, Any]], n: int, kind: str,
                       seed: int = 0) -> dict[str, dict[str, Any]] | None:
    """Retrieval lines (``{id: {"demo_ids"}}``) of ``n`` train demos per query: BM25 (``retrieved``) or a seeded
    draw (``random``), the query's own group excluded; None without demos (``n`` 0, or no train record allowed)."""
    from iclpt.retrieval import bm25_topk, exclusion_lists
    from iclpt.retrieval.retrievers import random_demos

    if n <= 0:
        return None
    ex = exclusion_lists(queries, train)
    k = min(n, len(train) - max((len(e) for e in ex), default=0))
    if k <= 0:
        return None
    if kind == "random":
        idx = random_demos(len(queries), len(train), k, seed, "calibrate", ex)
    else:
        idx, _ = bm25_topk([q["input"] for q in queries], [t["input"] for t in train], k, ex)
    return {q["id"]: {"demo_ids": [train[i]["id"] for i in row]} for q, row in zip(queries, idx.tolist(), strict=True)}


def sample_rows(rows: Sequence[dict[str, Any]], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """A seeded sample of at most ``n`` rows (original order kept)."""
    if len(rows) <= n:
        return list(rows)
    return [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), n))]


def step_tokens(lengths: Sequence[int], batch_size: int, n_virtual: int, bucket: bool,
                seed: int = 0) -> float:
    """Mean padded tokens (soft prompt included) of the batches the training sampler cuts from ``lengths``."""
    from iclpt.engine.training import epoch_batches

    batches = epoch_batches(lengths, batch_size, seed, 0, bucket)
    full = [b for b in batches if len(b) == batch_size] or batches
    return sum(len(b) * (max(lengths[i] for i in b) + n_virtual) for b in full) / len(full)


def eval_tokens(lengths: Sequence[int], batch_size: int, n_virtual: int) -> int:
    """Padded tokens of one dev-loss pass (length-sorted batches, as :func:`iclpt.engine.training.dev_loss`)."""
    s = sorted(lengths)
    return sum(len(s[i:i + batch_size]) * (max(s[i:i + batch_size]) + n_virtual)
               for i in range(0, len(s), batch_size))


class Workload:
    """One task's rows for one tokenizer, in each layout the run uses (cached): a sample of train, the jobs' dev
    examples, a sample of the test rows the jobs decode."""

    def __init__(self, config: Mapping[str, Any], sample: TaskSample, tokenizer: Any, max_positions: int | None):
        from iclpt.data.tasks import get_task
        from iclpt.engine.prompting import Encoder, Template, index_by_id

        t = get_task(sample.task)
        self.encoder = Encoder(tokenizer, Template(t.input_label, t.output_label))
        self.max_new = int(config["tasks"][sample.task].get("max_new_tokens") or t.max_new_tokens)
        cap = max_positions or 10**9
        self.train_len = min(int(config["train"]["max_length"]), cap)
        self.predict_len = min(int(config["predict"]["max_length"]), cap)
        pmax = config["predict"].get("max_examples")
        self.n_test = min(sample.counts["test"], int(pmax)) if pmax else sample.counts["test"]
        self.train_pool = sample.records["train"]
        self.pool = index_by_id(self.train_pool, f"{sample.task} train split")
        self.splits = {"train": sample_rows(sample.records["train"], LENGTH_SAMPLE),
                       "dev": sample.records["dev"][: int(config["train"]["dev_examples"])],
                       "test": sample_rows(sample.records["test"][: self.n_test], LENGTH_SAMPLE)}
        self._cache: dict[tuple[Any, ...], list[Any]] = {}

    def rows(self, split: str, n_demos: int, demos: str, n_virtual: int) -> list[Any]:
        """Encoded rows of ``split`` with ``n_demos`` demos of source ``demos`` and ``n_virtual`` prompt slots."""
        from iclpt.engine.prompting import build_examples

        key = (split, n_demos, demos, n_virtual)
        if key not in self._cache:
            train = split != "test"
            queries = self.splits[split]
            lines = stand_in_retrieval(queries, self.train_pool, n_demos, demos)
            self._cache[key], _ = build_examples(
                self.encoder, queries, lines, self.pool, n_demos if lines else 0, n_virtual,
                self.train_len if train else self.predict_len, with_target=train,
                max_new_tokens=0 if train else self.max_new, exclude_self=train)
        return self._cache[key]

    def lengths(self, split: str, n_demos: int, demos: str, n_virtual: int) -> list[int]:
        return [len(e.ids) for e in self.rows(split, n_demos, demos, n_virtual)]
