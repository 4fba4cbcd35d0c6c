"""Measured training and decoding speed of a loaded model, through the jobs' own public step functions:
:func:`iclpt.engine.training.train_step` (after one warm-up step) and a dev-loss pass, and
:meth:`iclpt.engine.generation.Decoder.timed` on whole batches of test rows."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from iclpt.orchestration.calibrate.workload import eval_tokens


@dataclass
class TrainRate:
    """Measured training speed of one (model, task, layout)."""

    padded_tokens_per_s: float
    target_tokens_per_s: float
    eval_tokens_per_s: float
    steps: int
    seconds: float


@dataclass
class DecodeRate:
    """Measured decoding speed of one (model, task, layout): whole batches of ``rows`` rows."""

    seconds_per_batch: float
    new_tokens_per_s: float
    new_tokens_per_row: float
    batches: int
    rows: int


def measure_train(run: Any, init: Any, steps: int, n_virtual: int) -> TrainRate:
    """``steps`` optimizer steps of the job's step function (:class:`iclpt.engine.training.TrainRun` ``run``)
    after one warm-up step, and one dev-loss pass."""
    from iclpt.engine.training import draw_step, run_dev_loss, start_training, train_step

    st = start_training(run, init, seed=0)
    train_step(run, st)  # warm-up (allocations, kernels)
    padded = target = 0
    t0 = time.perf_counter()
    for _ in range(steps):
        micro = draw_step(run, st)
        padded += sum(b.input_ids.numel() + b.input_ids.shape[0] * n_virtual for b in micro)
        target += train_step(run, st, micro)["target_tokens"]
    dt = time.perf_counter() - t0
    t1 = time.perf_counter()
    run_dev_loss(run, st.prompt.detach())
    de = time.perf_counter() - t1
    ev = eval_tokens([len(e.ids) for e in run.dev_examples], run.cfg.batch_size, n_virtual)
    return TrainRate(padded / dt, target / dt, ev / max(de, 1e-9), steps, dt)


def measure_decode(decoder: Any, rows: Sequence[Sequence[int]], batch_size: int, max_new_tokens: int,
                   batches: int) -> DecodeRate:
    """``batches`` batches of ``batch_size`` rows (a seeded shuffle) through the jobs' decoder
    (:class:`iclpt.engine.generation.Decoder`), after a short warm-up."""
    decoder.new_ids([rows[0]], 2)
    order = list(range(len(rows)))
    random.Random(0).shuffle(order)
    new = n_rows = done = 0
    seconds = 0.0
    for s in range(0, len(order), batch_size):
        if done >= batches:
            break
        batch = [rows[i] for i in order[s:s + batch_size]]
        out, dt = decoder.timed(batch, max_new_tokens)
        seconds += dt
        new += sum(len(o) for o in out)
        n_rows += len(batch)
        done += 1
    per_batch = seconds / done * (batch_size / (n_rows / done))  # a full batch, when the rows were fewer
    return DecodeRate(per_batch, new / seconds, new / n_rows, done, batch_size)
