"""Batched greedy decoding through ``inputs_embeds`` with the KV cache (ICL, PT, IPT, prompt transfer,
zero-shot).

Rows are left padded, the soft prompt sits right before each row's first real token and position ids count
from it (:func:`iclpt.engine.soft_prompt.assemble_inputs`), so a row decodes the same alone or in any batch. The first
forward encodes the whole prefix and fills the cache; every later step feeds one embedding per row. A row stops
at the first token whose text contains a newline, or at EOS; the prediction is the generated text up to that
newline, stripped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from iclpt.models.loading import autocast, lm_forward, output_cache
from iclpt.engine.packed_linear import packed_linears
from iclpt.engine.prompting import Encoded, Encoder, Template, build_examples, demo_count, index_by_id, load_retrieval
from iclpt.engine.soft_prompt import assemble_inputs


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
    with packed_linears(model, enabled=packed):
        return _greedy(model, prompt, rows, max_new_tokens, pad_id, stop_ids, use_cache, device, precision)


def _greedy(model: torch.nn.Module, prompt: torch.Tensor | None, rows: Sequence[Sequence[int]],
            max_new_tokens: int, pad_id: int, stop_ids: Sequence[int], use_cache: bool,
            device: torch.device | None, precision: str) -> list[list[int]]:
    device = device or next(model.parameters()).device
    B = len(rows)
    T = max(len(r) for r in rows)
    ids = torch.full((B, T), int(pad_id), dtype=torch.long)
    tmask = torch.zeros((B, T), dtype=torch.long)
    for i, r in enumerate(rows):
        if len(r) == 0:
            raise ValueError("cannot decode from an empty row")
        ids[i, T - len(r):] = torch.tensor(list(r), dtype=torch.long)
        tmask[i, T - len(r):] = 1
    ids, tmask = ids.to(device), tmask.to(device)
    P = prompt.to(device) if prompt is not None else None
    stop = torch.zeros(model.get_input_embeddings().weight.shape[0], dtype=torch.bool, device=device)
    if len(stop_ids):
        stop[torch.tensor(list(stop_ids), device=device)] = True
    emb = model.get_input_embeddings()

    with autocast(device, precision):
        embeds, attn, pos = assemble_inputs(model, P, ids, tmask)
    out_ids = torch.full((B, max_new_tokens), int(pad_id), dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    n_gen = torch.zeros(B, dtype=torch.long, device=device)
    live = torch.arange(B, device=device)  # the rows of the original batch still in the (cached) batch
    cache = None
    for t in range(max_new_tokens):
        with autocast(device, precision):
            if use_cache:
                if t == 0:
                    out = lm_forward(model, embeds, attn, pos, use_cache=True, last_only=True)
                else:
                    out = lm_forward(model, step_embeds, attn, pos[:, -1:], cache=cache, use_cache=True,
                                     last_only=True)
                cache = output_cache(out)
            else:
                out = lm_forward(model, embeds, attn, pos, use_cache=False, last_only=True)
        nxt = out.logits[:, -1, :].float().argmax(dim=-1)
        if use_cache:  # rows that stopped leave the batch (below), so every row here is still decoding
            act = ~done[live]
            rows_act = live[act]
            out_ids[rows_act, t] = nxt[act]
            n_gen[rows_act] += 1
            done[rows_act] = stop[nxt[act]]
            if t == max_new_tokens - 1 or bool(done.all()):
                break
            running = ~done[live]
            if not bool(running.all()):
                if hasattr(cache, "reorder_cache"):
                    keep = running.nonzero().squeeze(1)
                    cache.reorder_cache(keep)
                    live, nxt, attn, pos = live[keep], nxt[keep], attn[keep], pos[keep]
                else:  # a cache that cannot drop rows: finished rows are fed on, their output ignored
                    nxt = torch.where(running, nxt, torch.full_like(nxt, int(pad_id)))
        else:
            nxt = torch.where(done, torch.full_like(nxt, int(pad_id)), nxt)
            out_ids[:, t] = nxt
            n_gen += (~done).long()
            done = done | stop[nxt]
            if bool(done.all()) or t == max_new_tokens - 1:
                break
        step_embeds = emb(nxt).unsqueeze(1)
        # finished rows that stay in the batch keep being fed (their output is ignored); their mask stays 1
        attn = torch.cat([attn, attn.new_ones((attn.shape[0], 1))], dim=1)
        pos = torch.cat([pos, pos[:, -1:] + 1], dim=1)
        if not use_cache:
            embeds = torch.cat([embeds, step_embeds.to(embeds.dtype)], dim=1)
    res = out_ids.cpu().tolist()
    return [r[: int(n)] for r, n in zip(res, n_gen.cpu().tolist())]


def decode_prediction(tokenizer: Any, new_ids: Sequence[int]) -> str:
    """Generated text up to the first newline (EOS and special tokens removed), stripped."""
    eos = tokenizer.eos_token_id
    ids = [i for i in new_ids if i != eos]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    return text.split("\n", 1)[0].strip()


def generate_texts(model: torch.nn.Module, tokenizer: Any, prompt: torch.Tensor | None,
                   rows: Sequence[Sequence[int]], max_new_tokens: int, batch_size: int,
                   device: torch.device | None = None, precision: str = "fp32",
                   log: Callable[[str], None] | None = None) -> list[str]:
    """Predictions for token rows, decoded in length-sorted batches (output in input order)."""
    stops = stop_token_ids(tokenizer)
    order = sorted(range(len(rows)), key=lambda i: (-len(rows[i]), i))
    preds: list[str] = [""] * len(rows)
    t0 = time.time()
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        new = greedy_generate(model, prompt, [rows[i] for i in idx], max_new_tokens, tokenizer.pad_token_id,
                              stops, device=device, precision=precision)
        for i, n in zip(idx, new):
            preds[i] = decode_prediction(tokenizer, n)
        if log:
            log(f"decoded {min(s + batch_size, len(order))}/{len(order)} ({time.time() - t0:.1f}s)")
    return preds


# ---- the whole job (what the predict rule runs): load -> run -> write --------------------------
@dataclass
class PredictInputs:
    """A decoding job, loaded and encoded (:func:`load_predict_inputs`)."""

    model: torch.nn.Module
    tokenizer: Any
    prompt: torch.Tensor | None
    device: torch.device
    precision: str
    max_new_tokens: int
    records: list[dict[str, Any]]
    examples: list[Encoded]

    @property
    def prompt_length(self) -> int:
        return 0 if self.prompt is None else int(self.prompt.shape[0])


def predict_layout(params: dict[str, Any], train_path: str | None, retrieval_path: str | None) -> int:
    """``n_demos`` of a decoding job: > 0 needs the train split and the retrieval file, 0 takes neither."""
    n_demos = demo_count(params, "predict_job")
    if n_demos > 0 and (not retrieval_path or not train_path):
        raise ValueError(f"predict_job: n_demos {n_demos} needs the train split and the retrieval file")
    if n_demos == 0 and (retrieval_path or train_path):
        raise ValueError("predict_job: n_demos 0 decodes without demos; pass no train split / retrieval file")
    return n_demos


def load_job_prompt(prompt_path: str | None, model: torch.nn.Module, params: dict[str, Any]) -> torch.Tensor | None:
    """The soft prompt at ``prompt_path`` (checked against the model and ``params["length"]``), or None."""
    from iclpt.engine.soft_prompt import load_prompt

    if not prompt_path:
        return None
    length = int(params["length"]) if params.get("length") is not None else None
    prompt, _ = load_prompt(prompt_path, hidden_size=int(model.get_input_embeddings().weight.shape[1]),
                            length=length)
    return prompt


def _encode_test(tokenizer: Any, params: dict[str, Any], test_path: str, train_path: str | None,
                 retrieval_path: str | None, n_demos: int, n_virtual: int, max_length: int,
                 ) -> tuple[list[dict[str, Any]], list[Encoded], dict[str, int]]:
    from iclpt.io import read_jsonl

    all_records = read_jsonl(test_path, required=("id", "input", "references"))
    records = all_records[: int(params["max_examples"])] if params.get("max_examples") else all_records
    pool: dict[str, dict[str, Any]] = {}
    ret = None
    if n_demos > 0:
        pool = index_by_id(read_jsonl(train_path, required=("id", "input", "target")), str(train_path))
        ret = load_retrieval(str(retrieval_path), all_records, pool, n_demos, str(test_path), str(train_path),
                             exclude_self=False)
    encoder = Encoder(tokenizer, Template(params["input_label"], params["output_label"]))
    examples, stats = build_examples(encoder, records, ret, pool, n_demos, n_virtual, max_length,
                                     with_target=False, max_new_tokens=int(params["max_new_tokens"]),
                                     exclude_self=False)
    return records, examples, stats


def load_predict_inputs(*, model_path: str, test_path: str, params: dict[str, Any], train_path: str | None = None,
                        retrieval_path: str | None = None, prompt_path: str | None = None,
                        log: Callable[[str], None] | None = None) -> PredictInputs:
    """Check the params, load the frozen model (and the soft prompt, if any) and encode the test split."""
    from iclpt.models.loading import load_model, max_positions, resolve_device, resolve_precision, seed_everything

    say = log or (lambda s: None)
    n_demos = predict_layout(params, train_path, retrieval_path)
    device = resolve_device(params.get("device", "cpu"))
    precision = resolve_precision(params.get("precision", "fp32"), device)
    seed_everything(int(params.get("seed", 0)))
    model, tokenizer = load_model(model_path, device=device, precision=precision)
    prompt = load_job_prompt(prompt_path, model, params)
    n_virtual = 0 if prompt is None else int(prompt.shape[0])
    max_new = int(params["max_new_tokens"])
    max_length = int(params.get("max_length", 1024))
    mp = max_positions(model)
    if mp:
        max_length = min(max_length, mp)
    records, examples, stats = _encode_test(tokenizer, params, test_path, train_path, retrieval_path, n_demos,
                                            n_virtual, max_length)
    say(f"{len(examples)} test examples, truncation {stats}")
    return PredictInputs(model=model, tokenizer=tokenizer, prompt=prompt, device=device, precision=precision,
                         max_new_tokens=max_new, records=records, examples=examples)


def run_prediction(inputs: PredictInputs, batch_size: int, log: Callable[[str], None] | None = None) -> list[str]:
    """Greedy predictions of the encoded test examples (input order)."""
    x = inputs
    return generate_texts(x.model, x.tokenizer, x.prompt, [e.ids for e in x.examples], x.max_new_tokens,
                          batch_size, device=x.device, precision=x.precision, log=log)


def write_predictions(out_path: str | os.PathLike[str], inputs: PredictInputs, preds: Sequence[str],
                      params: dict[str, Any]) -> int:
    """Write ``predictions.jsonl`` (``params["method"]`` and ``params["demos"]`` are labels only)."""
    from iclpt.io import write_jsonl_atomic

    out_rows = []
    for r, e, p in zip(inputs.records, inputs.examples, preds):
        out_rows.append({
            "id": r["id"], "task": params.get("task"), "model": params.get("model"), "method": str(params["method"]),
            "seed": int(params.get("seed", 0)), "prompt_length": inputs.prompt_length,
            "demo_source": str(params.get("demos", "none")), "demo_ids": e.meta["demo_ids"],
            "demo_scores": e.meta["demo_scores"], "input_text": e.text, "prediction": p,
            "references": r["references"], "meta": r.get("meta", {}),
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
    inputs = load_predict_inputs(model_path=model_path, test_path=test_path, params=params, train_path=train_path,
                                 retrieval_path=retrieval_path, prompt_path=prompt_path, log=say)
    preds = run_prediction(inputs, int(params.get("batch_size", 16)), log=say)
    return write_predictions(out_path, inputs, preds, params)
