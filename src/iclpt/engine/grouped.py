"""Decoding many runs of one (task, model) together: one loaded model, every run's rows in large length-sorted
batches, each row with its own soft prompt (or none), its own demos and its own ``max_new_tokens`` (issue 28,
item 2).

A *run* (:class:`DecodeRun`) is what one per-run decoding job decodes: its soft prompt tensor (None for
zero-shot / ICL), its rows (token ids of the rendered inputs, its own demos included) and its decoding budget.
:func:`decode_runs` pools the rows of all runs, sorts them by prefix length (soft prompt + tokens, longest
first), decodes them in batches and returns, per run, the texts :meth:`iclpt.engine.generation.Decoder.texts`
returns for that run alone.

Mixed rows (:func:`assemble_mixed`). Every row is laid out exactly as
:func:`iclpt.engine.soft_prompt.assemble_inputs` lays out a row of a single-prompt batch, only with its own
prompt length ``n_i``: ``[pad .. pad][P_i (n_i vectors)][t_1 .. t_m]``, left padded to the batch's longest
``n_i + m_i``, attention mask 1 from the first prompt vector on, position ids counting from it (0 .. n_i + m_i - 1).
A row without a prompt is ``n_i = 0``. So a row sees the same embeddings, mask and positions as alone, whatever
else is in its batch; only the amount of left padding (and the batch's row count) changes. The prefix is one
gather from ``[all distinct prompts ; the token embeddings]``.

Budgets: a row leaves the batch when it emits a stop token or has produced its run's ``max_new_tokens``.

Equality with the per-run path. The tokens are the same wherever the logits' argmax is not a near-tie: a row's
logits are not bit-identical across batch compositions, in either path, because the CPU kernels' arithmetic
follows the batch's padding. Measured on SmolLM2 and the tiny models (fp32, CPU; tests/test_grouped.py,
benchmarks/README.md): the packed oneDNN linears give a row the same bits for 1..300 rows, but ``F.linear`` /
``addmm`` take another kernel for 1-3 rows, and attention (the default CPU flash kernel and the math backend
alike) sums a row's keys in an order set by its left padding (vector lanes; blocks of 512 keys in the flash
kernel, GEMM blocks along the keys in the math one). A padding shift that is a multiple of 16 keeps the bits for
rows under ~256 positions, not beyond. So per-run decoding at batch 16 already differs from the same rows alone
by up to ~4e-5 in the logits; the grouped decode differs from it as much, and a near-tie can flip (the benchmark
reports the share of rows that differ).

Batch size (:func:`resolve_batch_size`, :func:`decode_in_batches`): an int is used as is; ``"auto"`` is
:data:`CPU_BATCH_SIZE` on a CPU (the measured best, benchmarks/README.md) and on CUDA the largest that fits
like lm-evaluation-harness's ``--batch_size auto``: start at ``max_batch_size`` and halve on
``torch.OutOfMemoryError`` (the longest rows come first, so the first batch that fits bounds the rest; a later
out-of-memory error halves again).

:func:`load_group` / :func:`predict_group` do the same at the job level: one model load, one
:class:`iclpt.engine.job.Job` per run sharing it (the run's own encoder, demos, prompt file and budget), and one
``predictions.jsonl`` per run through :func:`iclpt.engine.generation.write_predictions`.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from iclpt.engine.generation import (
    _Batch,
    _drop_finished,
    _feed,
    _next_tokens,
    _Output,
    _stop_mask,
    check_budget,
    decode_prediction,
    predict_job_inputs,
    stop_token_ids,
    write_predictions,
)
from iclpt.engine.packed_linear import packed_linears
from iclpt.models.loading import autocast

#: rows per batch of ``batch_size="auto"`` on a CPU (the measured best on SmolLM2-135M, benchmarks/README.md)
CPU_BATCH_SIZE = 32
#: where ``batch_size="auto"`` starts on CUDA (halved on out-of-memory; never more than the rows there are)
MAX_AUTO_BATCH_SIZE = 512


@dataclass(frozen=True)
class DecodeRun:
    """One run of a group: its soft prompt (``[n, hidden]``, None: none), its rows (token ids, demos included)
    and its decoding budget. ``name`` is a label for logs."""

    rows: Sequence[Sequence[int]]
    max_new_tokens: int
    prompt: torch.Tensor | None = None
    name: str = ""

    @property
    def prompt_length(self) -> int:
        return 0 if self.prompt is None else int(self.prompt.shape[0])


# ---- one batch of mixed rows --------------------------------------------------------------------------------
def assemble_mixed(model: torch.nn.Module, prompts: Sequence[torch.Tensor | None], rows: Sequence[Sequence[int]],
                   pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Embeddings ``[B, T, H]``, attention mask and position ids of rows ``[pad][P_i][tokens_i]``, each row with
    its own prompt ``prompts[i]`` (None: none), ``T = max(n_i + m_i)``.

    Row ``i`` gets what :func:`iclpt.engine.soft_prompt.assemble_inputs` gives it in a batch of its own prompt:
    the same vectors (prompt cast to the embeddings' dtype), mask and positions, after a different amount of
    left padding."""
    if len(prompts) != len(rows):
        raise ValueError(f"{len(prompts)} prompts for {len(rows)} rows")
    if any(len(r) == 0 for r in rows):
        raise ValueError("cannot decode from an empty row")
    B = len(rows)
    m = [len(r) for r in rows]
    Tt = max(m)
    ids = torch.full((B, Tt), int(pad_id), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, Tt - len(r):] = torch.tensor(list(r), dtype=torch.long)
    tok_emb = model.get_input_embeddings()(ids.to(device))  # [B, Tt, H]
    H = tok_emb.shape[-1]
    offset: dict[int, int] = {}
    parts: list[torch.Tensor] = []
    start = 0
    for p in prompts:
        if p is not None and id(p) not in offset:
            if p.dim() != 2 or int(p.shape[1]) != H:
                raise ValueError(f"a soft prompt of shape {tuple(p.shape)} for a model of hidden size {H}")
            offset[id(p)] = start
            start += int(p.shape[0])
            parts.append(p)
    bank = (torch.cat([p.to(device=device, dtype=tok_emb.dtype) for p in parts]) if parts
            else tok_emb.new_zeros((0, H)))
    n = torch.tensor([0 if p is None else int(p.shape[0]) for p in prompts], device=device).unsqueeze(1)
    off = torch.tensor([0 if p is None else offset[id(p)] for p in prompts], device=device).unsqueeze(1)
    T = int(max(int(a) + b for a, b in zip(n[:, 0].tolist(), m)))
    pad = T - n - torch.tensor(m, device=device).unsqueeze(1)  # [B, 1] left padding of each row
    j = torch.arange(T, device=device).unsqueeze(0)  # [1, T]
    row0 = bank.shape[0] + torch.arange(B, device=device).unsqueeze(1) * Tt  # row i's first token slot in src
    # pad slots take the row's first token slot (a pad token wherever the row is padded), prompt slots
    # P_i[j - pad_i], text slots tok_emb[i, j - (T - Tt)] (the same text column for every row)
    text = row0 + (j - (T - Tt)).clamp(min=0)
    prompt = off + (j - pad).clamp(min=0)
    idx = torch.where(j < pad, row0.expand(B, T), torch.where(j < pad + n, prompt, text))
    src = torch.cat([bank, tok_emb.reshape(B * Tt, H)])
    embeds = src[idx]
    attn = (j >= pad).to(torch.long)
    pos = (attn.cumsum(dim=1) - 1).clamp(min=0) * attn
    return embeds, attn, pos


@torch.no_grad()
def greedy_mixed(model: torch.nn.Module, prompts: Sequence[torch.Tensor | None], rows: Sequence[Sequence[int]],
                 max_new_tokens: Sequence[int], pad_id: int, stop_ids: Sequence[int] = (), use_cache: bool = True,
                 device: torch.device | None = None, precision: str = "fp32",
                 packed: bool = True) -> list[list[int]]:
    """:func:`iclpt.engine.generation.greedy_generate` of rows that each carry their own soft prompt and budget:
    the new ids of each row, up to and including its stop token, at most ``max_new_tokens[i]`` of them."""
    if len(max_new_tokens) != len(rows):
        raise ValueError(f"{len(max_new_tokens)} budgets for {len(rows)} rows")
    if min(max_new_tokens) < 1:
        raise ValueError("max_new_tokens must be >= 1")
    device = device or next(model.parameters()).device
    with packed_linears(model, enabled=packed):
        with autocast(device, precision):
            embeds, attn, pos = assemble_mixed(model, prompts, rows, pad_id, device)
        batch = _Batch(torch.arange(len(rows), device=device), embeds, attn, pos)
        budget = torch.tensor([int(b) for b in max_new_tokens], dtype=torch.long, device=device)
        longest = int(budget.max())
        out = _Output.empty(len(rows), longest, pad_id, device)
        stop = _stop_mask(model, stop_ids, device)
        for t in range(longest):
            nxt = _next_tokens(model, batch, use_cache, t > 0, device, precision)
            out.record(t, batch.live, nxt, stop)
            out.done |= out.n >= budget  # a row that used its run's budget leaves like a stopped one
            if t == longest - 1 or bool(out.done.all()):
                break
            _feed(model, batch, _drop_finished(batch, nxt, out.done, pad_id, use_cache), use_cache)
        return out.rows()


# ---- batch size ---------------------------------------------------------------------------------------------
def resolve_batch_size(batch_size: int | str, device: torch.device, n_rows: int,
                       max_batch_size: int = MAX_AUTO_BATCH_SIZE) -> tuple[int, bool]:
    """(batch size to start with, whether to halve it on out-of-memory). ``"auto"``: :data:`CPU_BATCH_SIZE` on a
    CPU; on CUDA ``max_batch_size`` (at most ``n_rows``), halved on out-of-memory. An int: itself (halved on
    out-of-memory on CUDA only, so a too-large explicit size degrades instead of failing)."""
    cuda = torch.device(device).type == "cuda"
    if batch_size == "auto":
        size = min(int(max_batch_size), max(1, n_rows)) if cuda else CPU_BATCH_SIZE
        return size, cuda
    size = int(batch_size)
    if size < 1:
        raise ValueError(f"batch_size must be >= 1 or 'auto', got {batch_size!r}")
    return size, cuda


def _is_oom(err: BaseException) -> bool:
    if isinstance(err, torch.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def decode_in_batches(order: Sequence[int], decode: Callable[[list[int]], list[Any]], batch_size: int,
                      halve_on_oom: bool = False, log: Callable[[str], None] | None = None) -> dict[int, Any]:
    """``decode`` every index of ``order`` in consecutive batches of ``batch_size``; returns {index: result}.

    With ``halve_on_oom`` a batch that raises an out-of-memory error (``torch.OutOfMemoryError``, or a
    RuntimeError saying "out of memory") is retried at half the size, and the smaller size is kept for the rest
    (the order is longest first); at size 1 the error propagates. The last size used is logged."""
    results: dict[int, Any] = {}
    size = max(1, int(batch_size))
    s = 0
    t0 = time.time()
    while s < len(order):
        idx = list(order[s:s + size])
        try:
            out = decode(idx)
        except Exception as err:  # noqa: BLE001 - only out-of-memory errors are handled, the rest re-raised
            if not (halve_on_oom and _is_oom(err)) or size == 1:
                raise
            oom = f"{type(err).__name__} at batch size {size}"
        else:
            oom = None
        if oom is not None:  # outside the except block: the traceback no longer holds the batch's tensors
            _free_memory()
            size //= 2
            if log:
                log(f"{oom}: halving to {size}")
            continue
        for i, r in zip(idx, out, strict=True):
            results[i] = r
        s += len(idx)
        if log:
            log(f"decoded {s}/{len(order)} rows, batch size {size} ({time.time() - t0:.1f}s)")
    return results


# ---- many runs ----------------------------------------------------------------------------------------------
def grouped_order(runs: Sequence[DecodeRun]) -> list[tuple[int, int]]:
    """(run, row) of every row, longest prefix (prompt + tokens) first; ties by run, then row."""
    pairs = [(k, i) for k, run in enumerate(runs) for i in range(len(run.rows))]
    return sorted(pairs, key=lambda p: (-(runs[p[0]].prompt_length + len(runs[p[0]].rows[p[1]])), p[0], p[1]))


def decode_runs_ids(model: torch.nn.Module, runs: Sequence[DecodeRun], pad_id: int, stop_ids: Sequence[int],
                    batch_size: int | str = "auto", device: torch.device | None = None, precision: str = "fp32",
                    max_batch_size: int = MAX_AUTO_BATCH_SIZE,
                    log: Callable[[str], None] | None = None) -> list[list[list[int]]]:
    """New ids of every row of every run (per run, in its row order), all runs decoded together in batches of
    :func:`grouped_order` (:func:`resolve_batch_size`, :func:`decode_in_batches`)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    for run in runs:
        if int(run.max_new_tokens) < 1:
            raise ValueError(f"run {run.name!r}: max_new_tokens must be >= 1")
    pairs = grouped_order(runs)
    size, halve = resolve_batch_size(batch_size, device, len(pairs), max_batch_size)

    def decode(idx: list[int]) -> list[list[int]]:
        sel = [pairs[i] for i in idx]
        return greedy_mixed(model, [runs[k].prompt for k, _ in sel], [runs[k].rows[i] for k, i in sel],
                            [int(runs[k].max_new_tokens) for k, _ in sel], pad_id, stop_ids, device=device,
                            precision=precision)

    got = decode_in_batches(range(len(pairs)), decode, size, halve, log)
    out: list[list[list[int]]] = [[[] for _ in run.rows] for run in runs]
    for j, (k, i) in enumerate(pairs):
        out[k][i] = got[j]
    return out


def decode_runs(model: torch.nn.Module, tokenizer: Any, runs: Sequence[DecodeRun], batch_size: int | str = "auto",
                device: torch.device | None = None, precision: str = "fp32", max_batch_size: int = MAX_AUTO_BATCH_SIZE,
                stop_ids: Sequence[int] | None = None,
                log: Callable[[str], None] | None = None) -> list[list[str]]:
    """Per run, the predictions (input order) :meth:`iclpt.engine.generation.Decoder.texts` gives that run alone,
    all runs decoded together (:func:`decode_runs_ids`); ``stop_ids`` default: :func:`stop_token_ids`."""
    stops = stop_token_ids(tokenizer) if stop_ids is None else list(stop_ids)
    ids = decode_runs_ids(model, runs, int(tokenizer.pad_token_id), stops, batch_size, device, precision,
                          max_batch_size, log)
    return [[decode_prediction(tokenizer, n) for n in run] for run in ids]


# ---- the job level: one model load, one Job per run ----------------------------------------------------------
@dataclass(frozen=True)
class RunFiles:
    """One run of a grouped decoding job: what :func:`iclpt.engine.generation.predict_job` takes besides the
    model (``out_path``: its ``predictions.jsonl``, None when only decoded)."""

    params: Mapping[str, Any]
    test_path: str
    train_path: str | None = None
    retrieval_path: str | None = None
    prompt_path: str | None = None
    out_path: str | os.PathLike[str] | None = None


#: params that must agree across the runs of a group (they decide the model and how it computes)
SHARED_PARAMS = ("device", "precision")


def load_group(model_path: str, runs: Sequence[RunFiles], log: Callable[[str], None] | None = None) -> list[Any]:
    """Load the model once and encode every run: one :class:`iclpt.engine.job.Job` per run, all sharing the
    model and tokenizer, each with its own encoder (labels), budget, demos and soft prompt; the same checks and
    the same encoding as :func:`iclpt.engine.generation.load_predict_inputs` for that run alone."""
    from iclpt.engine.job import Job, clamp_max_length, encode_splits, load_job, load_job_prompt
    from iclpt.engine.prompting import Encoder, Template

    if not runs:
        return []
    first = dict(runs[0].params)
    for r in runs[1:]:
        diff = [k for k in SHARED_PARAMS if r.params.get(k, first.get(k)) != first.get(k)]
        if diff:
            raise ValueError(f"a decoding group shares one model: runs differ in {', '.join(diff)}")
    inputs = [predict_job_inputs(dict(r.params), r.test_path, r.train_path, r.retrieval_path, r.prompt_path)
              for r in runs]
    base = load_job(model_path, first, inputs[0])
    jobs = [base]
    for r, x in zip(runs[1:], inputs[1:]):
        job = Job(inputs=x, model=base.model, tokenizer=base.tokenizer, device=base.device, precision=base.precision,
                  encoder=Encoder(base.tokenizer, Template(r.params["input_label"], r.params["output_label"])),
                  max_length=clamp_max_length(x.max_length, base.model),
                  prompt=load_job_prompt(x.prompt_path, base.model, r.params))
        job.splits = encode_splits(job)
        jobs.append(job)
    if log:
        log(f"{len(jobs)} runs, {sum(len(j.examples('test')) for j in jobs)} test rows, one model load")
    return jobs


def run_group(jobs: Sequence[Any], batch_size: int | str = "auto",
              log: Callable[[str], None] | None = None) -> list[list[str]]:
    """Per job, the predictions :func:`iclpt.engine.generation.run_prediction` gives it alone (input order)."""
    if not jobs:
        return []
    j0 = jobs[0]
    runs = [DecodeRun([e.ids for e in j.examples("test")], j.inputs.max_new_tokens, j.prompt) for j in jobs]
    return decode_runs(j0.model, j0.tokenizer, runs, batch_size, j0.device, j0.precision, log=log)


def predict_group(*, model_path: str, runs: Sequence[RunFiles], batch_size: int | str = "auto",
                  log: Callable[[str], None] | None = None) -> list[int]:
    """:func:`iclpt.engine.generation.predict_job` for every run of ``runs`` with one model load and one grouped
    decode; writes each run's ``predictions.jsonl`` (its ``out_path``) and returns the row counts."""
    say = log or (lambda s: None)
    jobs = load_group(model_path, runs, say)
    refs = [check_budget(j, log=say) for j in jobs]
    preds = run_group(jobs, batch_size, say)
    counts = []
    for r, j, p, n in zip(runs, jobs, preds, refs, strict=True):
        if r.out_path is None:
            counts.append(len(p))
            continue
        counts.append(write_predictions(r.out_path, j, p, dict(r.params), n))
    return counts
