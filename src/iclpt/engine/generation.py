"""Batched greedy decoding through ``inputs_embeds`` with the KV cache (ICL, PT, IPT, prompt transfer,
zero-shot).

Rows are left padded, the soft prompt sits right before each row's first real token and position ids count
from it (:func:`iclpt.engine.soft_prompt.assemble_inputs`), so a row decodes the same alone or in any batch. The first
forward encodes the whole prefix and fills the cache; every later step feeds one embedding per row. A row stops
at the first token whose text contains a newline, or at EOS; the prediction is the generated text up to that
newline, stripped. :class:`Decoder` holds what every batch of a job shares (and times a batch, for the run plan);
the job (:func:`predict_job`) is load (:func:`load_predict_inputs`, through :func:`iclpt.engine.job.load_job`)
-> run (:func:`run_prediction`) -> write (:func:`write_predictions`).

Decoding budget check: every prediction line carries ``max_new_tokens`` and ``ref_tokens`` (per reference, the
tokens decoding must produce to output it and stop: :func:`reference_token_counts`); the job logs how many
references the budget cannot reach (:func:`iclpt.data.tasks.base.reference_budget`), a warning above 1 %, and the
score rule writes the same summary into ``metrics.json`` (``decoding_budget``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from iclpt.engine.job import Job, JobInputs, SplitSpec, demo_layout, load_job
from iclpt.engine.packed_linear import packed_linears
from iclpt.engine.prompting import Template
from iclpt.engine.soft_prompt import assemble_inputs
from iclpt.models.loading import autocast, lm_forward, output_cache

_log = logging.getLogger(__name__)


def stop_token_ids(tokenizer: Any) -> list[int]:
    """EOS plus every vocabulary entry whose decoded text contains a newline."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    vocab_ids = sorted(set(tokenizer.get_vocab().values()))
    texts = tokenizer.batch_decode([[i] for i in vocab_ids])
    ids.update(int(i) for i, t in zip(vocab_ids, texts) if "\n" in t)
    return sorted(ids)


@torch.no_grad()
def greedy_generate(model: torch.nn.Module, prompt: torch.Tensor | None, rows: Sequence[Sequence[int]],
                    max_new_tokens: int, pad_id: int, stop_ids: Sequence[int] = (), use_cache: bool = True,
                    device: torch.device | None = None, precision: str = "fp32",
                    packed: bool = True) -> list[list[int]]:
    """Greedy continuation of each token row (the soft prompt prepended); returns the new ids of each row,
    up to and including its stop token. ``use_cache=False`` recomputes the whole sequence every step (the
    reference path of the tests).

    With the KV cache, a row that has stopped leaves the batch (its cache rows, mask and positions are dropped
    with ``Cache.reorder_cache``), so later steps compute only the rows still running; ``transformers``'
    ``generate()`` keeps feeding finished rows to the end. On a CPU the linear layers run through packed oneDNN
    weights (:mod:`iclpt.engine.packed_linear`; ``packed=False`` uses ``F.linear``)."""
    device = device or next(model.parameters()).device
    with packed_linears(model, enabled=packed):
        return _greedy(model, prompt, rows, max_new_tokens, pad_id, stop_ids, use_cache, device, precision)


def _greedy(model: torch.nn.Module, prompt: torch.Tensor | None, rows: Sequence[Sequence[int]],
            max_new_tokens: int, pad_id: int, stop_ids: Sequence[int], use_cache: bool, device: torch.device,
            precision: str) -> list[list[int]]:
    batch = _first_batch(model, prompt, rows, pad_id, device, precision)
    out = _Output.empty(len(rows), max_new_tokens, pad_id, device)
    stop = _stop_mask(model, stop_ids, device)
    for t in range(max_new_tokens):
        nxt = _next_tokens(model, batch, use_cache, t > 0, device, precision)
        out.record(t, batch.live, nxt, stop)
        if t == max_new_tokens - 1 or bool(out.done.all()):
            break
        _feed(model, batch, _drop_finished(batch, nxt, out.done, pad_id, use_cache), use_cache)
    return out.rows()


@dataclass
class _Batch:
    """The rows still being decoded (``live``: their index in the original batch), the embeddings the next forward
    takes (the whole sequence without the cache, the last token with it), attention mask, positions, KV cache."""

    live: torch.Tensor
    embeds: torch.Tensor
    attn: torch.Tensor
    pos: torch.Tensor
    cache: Any = None


@dataclass
class _Output:
    """New ids per original row (``[B, max_new]``), how many each row generated, and which rows have stopped."""

    ids: torch.Tensor
    n: torch.Tensor
    done: torch.Tensor

    @classmethod
    def empty(cls, rows: int, max_new_tokens: int, pad_id: int, device: torch.device) -> _Output:
        return cls(torch.full((rows, max_new_tokens), int(pad_id), dtype=torch.long, device=device),
                   torch.zeros(rows, dtype=torch.long, device=device),
                   torch.zeros(rows, dtype=torch.bool, device=device))

    def record(self, t: int, live: torch.Tensor, nxt: torch.Tensor, stop: torch.Tensor) -> None:
        """Step ``t``'s token of every row still running; a stop token ends its row."""
        act = ~self.done[live]
        rows = live[act]
        self.ids[rows, t] = nxt[act]
        self.n[rows] += 1
        self.done[rows] = stop[nxt[act]]

    def rows(self) -> list[list[int]]:
        return [r[: int(n)] for r, n in zip(self.ids.cpu().tolist(), self.n.cpu().tolist(), strict=True)]


def _first_batch(model: torch.nn.Module, prompt: torch.Tensor | None, rows: Sequence[Sequence[int]], pad_id: int,
                 device: torch.device, precision: str) -> _Batch:
    """The rows left padded, with the soft prompt before each row's first token."""
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), int(pad_id), dtype=torch.long)
    tmask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        if len(r) == 0:
            raise ValueError("cannot decode from an empty row")
        ids[i, T - len(r):] = torch.tensor(list(r), dtype=torch.long)
        tmask[i, T - len(r):] = 1
    P = prompt.to(device) if prompt is not None else None
    with autocast(device, precision):
        embeds, attn, pos = assemble_inputs(model, P, ids.to(device), tmask.to(device))
    return _Batch(torch.arange(len(rows), device=device), embeds, attn, pos)


def _stop_mask(model: torch.nn.Module, stop_ids: Sequence[int], device: torch.device) -> torch.Tensor:
    stop = torch.zeros(model.get_input_embeddings().weight.shape[0], dtype=torch.bool, device=device)
    if len(stop_ids):
        stop[torch.tensor(list(stop_ids), device=device)] = True
    return stop


def _next_tokens(model: torch.nn.Module, batch: _Batch, use_cache: bool, later: bool, device: torch.device,
                 precision: str) -> torch.Tensor:
    """The argmax token of each row: the whole sequence (first step, or no cache) or the last token + cache."""
    cached = use_cache and later
    with autocast(device, precision):
        out = lm_forward(model, batch.embeds, batch.attn, batch.pos[:, -1:] if cached else batch.pos,
                         cache=batch.cache if cached else None, use_cache=use_cache, last_only=True)
    if use_cache:
        batch.cache = output_cache(out)
    return out.logits[:, -1, :].float().argmax(dim=-1)


def _drop_finished(batch: _Batch, nxt: torch.Tensor, done: torch.Tensor, pad_id: int,
                   use_cache: bool) -> torch.Tensor:
    """The tokens to feed next: rows that stopped leave a cached batch (``Cache.reorder_cache``); where they stay
    (no cache, or a cache that cannot drop rows) they are fed padding and their output is ignored."""
    running = ~done[batch.live]
    if bool(running.all()):
        return nxt
    if use_cache and hasattr(batch.cache, "reorder_cache"):
        keep = running.nonzero().squeeze(1)
        batch.cache.reorder_cache(keep)
        batch.live, batch.attn, batch.pos = batch.live[keep], batch.attn[keep], batch.pos[keep]
        return nxt[keep]
    return torch.where(running, nxt, torch.full_like(nxt, int(pad_id)))


def _feed(model: torch.nn.Module, batch: _Batch, nxt: torch.Tensor, use_cache: bool) -> None:
    """Append ``nxt`` to every row (mask 1, next position); with the cache the next forward takes it alone."""
    step = model.get_input_embeddings()(nxt).unsqueeze(1)
    batch.attn = torch.cat([batch.attn, batch.attn.new_ones((batch.attn.shape[0], 1))], dim=1)
    batch.pos = torch.cat([batch.pos, batch.pos[:, -1:] + 1], dim=1)
    batch.embeds = step if use_cache else torch.cat([batch.embeds, step.to(batch.embeds.dtype)], dim=1)


def decode_prediction(tokenizer: Any, new_ids: Sequence[int]) -> str:
    """Generated text up to the first newline (EOS and special tokens removed), stripped."""
    eos = tokenizer.eos_token_id
    ids = [i for i in new_ids if i != eos]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    return text.split("\n", 1)[0].strip()


@dataclass
class Decoder:
    """A frozen model ready to decode the rows of one layout: its tokenizer (stop ids, padding), the soft prompt
    (None: none), device and precision."""

    model: torch.nn.Module
    tokenizer: Any
    prompt: torch.Tensor | None = None
    device: torch.device | None = None
    precision: str = "fp32"
    stop_ids: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.stop_ids = stop_token_ids(self.tokenizer)

    def new_ids(self, rows: Sequence[Sequence[int]], max_new_tokens: int) -> list[list[int]]:
        """:func:`greedy_generate` of one batch of rows."""
        return greedy_generate(self.model, self.prompt, rows, max_new_tokens, self.tokenizer.pad_token_id,
                               self.stop_ids, device=self.device, precision=self.precision)

    def timed(self, rows: Sequence[Sequence[int]], max_new_tokens: int) -> tuple[list[list[int]], float]:
        """(new ids, wall seconds) of one batch."""
        t0 = time.perf_counter()
        new = self.new_ids(rows, max_new_tokens)
        return new, time.perf_counter() - t0

    def texts(self, rows: Sequence[Sequence[int]], max_new_tokens: int, batch_size: int,
              log: Callable[[str], None] | None = None) -> list[str]:
        """Predictions for token rows, decoded in length-sorted batches (output in input order)."""
        order = sorted(range(len(rows)), key=lambda i: (-len(rows[i]), i))
        preds: list[str] = [""] * len(rows)
        t0 = time.time()
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            for i, n in zip(idx, self.new_ids([rows[i] for i in idx], max_new_tokens)):
                preds[i] = decode_prediction(self.tokenizer, n)
            if log:
                log(f"decoded {min(s + batch_size, len(order))}/{len(order)} ({time.time() - t0:.1f}s)")
        return preds


def generate_texts(model: torch.nn.Module, tokenizer: Any, prompt: torch.Tensor | None,
                   rows: Sequence[Sequence[int]], max_new_tokens: int, batch_size: int,
                   device: torch.device | None = None, precision: str = "fp32",
                   log: Callable[[str], None] | None = None) -> list[str]:
    """Predictions for token rows (:meth:`Decoder.texts`)."""
    return Decoder(model, tokenizer, prompt, device, precision).texts(rows, max_new_tokens, batch_size, log)


# ---- the whole job (what the predict rule runs): load -> run -> write --------------------------
def predict_job_inputs(params: dict[str, Any], test_path: str, train_path: str | None, retrieval_path: str | None,
                       prompt_path: str | None) -> JobInputs:
    """What a decoding job reads: the test split (its first ``max_examples``), demos from the train split when
    ``n_demos`` > 0, the soft prompt file if any."""
    n_demos = demo_layout(params, "predict_job", {"the train split": train_path,
                                                  "the retrieval file": retrieval_path})
    limit = int(params["max_examples"]) if params.get("max_examples") else None
    test = SplitSpec(test_path, retrieval_path, limit=limit, with_target=False, exclude_self=False)
    return JobInputs(splits={"test": test}, n_demos=n_demos, train_path=train_path, prompt_path=prompt_path,
                     max_length=int(params.get("max_length", 1024)), max_new_tokens=int(params["max_new_tokens"]))


def load_predict_inputs(*, model_path: str, test_path: str, params: dict[str, Any], train_path: str | None = None,
                        retrieval_path: str | None = None, prompt_path: str | None = None,
                        log: Callable[[str], None] | None = None) -> Job:
    """Check the params, load the frozen model (and the soft prompt, if any) and encode the test split."""
    say = log or (lambda s: None)
    job = load_job(model_path, params, predict_job_inputs(params, test_path, train_path, retrieval_path,
                                                          prompt_path))
    say(f"{len(job.examples('test'))} test examples, truncation {job.splits['test'].stats}")
    return job


def reference_token_counts(tokenizer: Any, references: Sequence[str]) -> list[int]:
    """Per reference, the tokens decoding must produce to output it and stop: its answer ``" {ref}\\n"``
    tokenised as training tokenises targets (no special tokens); the newline is the stop token (the "+ EOS")."""
    if not references:
        return []
    ids = tokenizer([Template.answer(r) for r in references], add_special_tokens=False)["input_ids"]
    return [len(x) for x in ids]


def check_budget(job: Job, log: Callable[[str], None] | None = None) -> list[list[int]]:
    """``ref_tokens`` of each test record (:func:`reference_token_counts`); logs how many references the job's
    ``max_new_tokens`` cannot reach, a warning above :data:`~iclpt.data.tasks.base.UNREACHABLE_WARN_FRACTION`."""
    from iclpt.data.tasks.base import UNREACHABLE_WARN_FRACTION, reference_budget

    records = job.splits["test"].records
    flat = reference_token_counts(job.tokenizer, [ref for r in records for ref in r["references"]])
    per_record, start = [], 0
    for r in records:
        per_record.append(flat[start:start + len(r["references"])])
        start += len(r["references"])
    b = reference_budget(flat, job.inputs.max_new_tokens)
    msg = (f"decoding budget: max_new_tokens {b['max_new_tokens']} cannot reach {b['n_unreachable_refs']} of "
           f"{b['n_refs']} references (99th percentile {b['ref_tokens_p99']} tokens with the stop token)")
    if b["n_unreachable_refs"] > UNREACHABLE_WARN_FRACTION * max(b["n_refs"], 1):
        _log.warning("%s: more than %.0f %%; raise tasks.<task>.max_new_tokens", msg, 100 * UNREACHABLE_WARN_FRACTION)
    elif log:
        log(msg)
    return per_record


def run_prediction(job: Job, batch_size: int, log: Callable[[str], None] | None = None) -> list[str]:
    """Greedy predictions of the encoded test examples (input order)."""
    decoder = Decoder(job.model, job.tokenizer, job.prompt, job.device, job.precision)
    return decoder.texts([e.ids for e in job.examples("test")], job.inputs.max_new_tokens, batch_size, log)


def write_predictions(out_path: str | os.PathLike[str], job: Job, preds: Sequence[str],
                      params: dict[str, Any], ref_tokens: Sequence[Sequence[int]] | None = None) -> int:
    """Write ``predictions.jsonl`` (``params["method"]`` and ``params["demos"]`` are labels only); each line
    carries ``max_new_tokens`` and its references' ``ref_tokens`` (:func:`check_budget` when not given)."""
    from iclpt.io import write_jsonl_atomic

    test = job.splits["test"]
    ref_tokens = check_budget(job) if ref_tokens is None else ref_tokens
    ran_on = job.ran_on()
    out_rows = []
    for r, e, p, n in zip(test.records, test.examples, preds, ref_tokens, strict=True):
        out_rows.append({
            "id": r["id"], "task": params.get("task"), "model": params.get("model"), "method": str(params["method"]),
            "seed": int(params.get("seed", 0)), "prompt_length": job.prompt_length,
            "demo_source": str(params.get("demos", "none")), "demo_ids": e.meta["demo_ids"],
            "demo_scores": e.meta["demo_scores"], "input_text": e.text, "prediction": p,
            "references": r["references"], "meta": r.get("meta", {}),
            "max_new_tokens": job.inputs.max_new_tokens, "ref_tokens": list(n), "ran_on": ran_on,
        })
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    return write_jsonl_atomic(out_path, out_rows)


def predict_job(*, model_path: str, test_path: str, out_path: str | os.PathLike[str], params: dict[str, Any],
                train_path: str | None = None, retrieval_path: str | None = None, prompt_path: str | None = None,
                log: Callable[[str], None] | None = None) -> int:
    """Decode the test split and write ``predictions.jsonl`` (architecture.md); returns the row count.

    The input layout comes from the arguments alone: a soft prompt iff ``prompt_path`` is given (its length must
    equal ``params["length"]`` when that is set), demos iff ``params["n_demos"] > 0`` (then ``train_path`` and
    ``retrieval_path`` are required; with 0 both must be absent). So ICL = demos, no prompt; PT = prompt, no
    demos; IPT / transfer = prompt and demos; zero-shot = neither.

    ``params``: n_demos, demos (demo source label: none iff n_demos is 0), length, seed, input_label,
    output_label, max_new_tokens, batch_size, max_length, max_examples, device, precision; task, model, method
    are labels written to each row.
    """
    say = log or (lambda s: None)
    job = load_predict_inputs(model_path=model_path, test_path=test_path, params=params, train_path=train_path,
                              retrieval_path=retrieval_path, prompt_path=prompt_path, log=say)
    ref_tokens = check_budget(job, log=say)
    preds = run_prediction(job, int(params.get("batch_size", 16)), log=say)
    return write_predictions(out_path, job, preds, params, ref_tokens)
