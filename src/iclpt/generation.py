"""Batched greedy decoding through ``inputs_embeds`` with the KV cache (ICL, PT, IPT and prompt transfer).

Rows are left padded, the soft prompt sits right before each row's first real token and position ids count
from it (:func:`iclpt.soft_prompt.assemble_inputs`), so a row decodes the same alone or in any batch. The first
forward encodes the whole prefix and fills the cache; every later step feeds one embedding per row. A row stops
at the first token whose text contains a newline, or at EOS; the prediction is the generated text up to that
newline, stripped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from iclpt.modeling import autocast, lm_forward, output_cache
from iclpt.soft_prompt import assemble_inputs


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
                    device: torch.device | None = None, precision: str = "fp32") -> list[list[int]]:
    """Greedy continuation of each token row (the soft prompt prepended); returns the new ids of each row,
    up to and including its stop token. ``use_cache=False`` recomputes the whole sequence every step (the
    reference path of the tests)."""
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
        nxt = torch.where(done, torch.full_like(nxt, int(pad_id)), nxt)
        out_ids[:, t] = nxt
        n_gen += (~done).long()
        done = done | stop[nxt]
        if bool(done.all()) or t == max_new_tokens - 1:
            break
        step_embeds = emb(nxt).unsqueeze(1)
        # finished rows keep being fed (their output is ignored); their mask stays 1 so shapes stay uniform
        attn = torch.cat([attn, attn.new_ones((B, 1))], dim=1)
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


def predict_job(*, model_path: str, test_path: str, out_path: str | os.PathLike[str], params: dict[str, Any],
                train_path: str | None = None, retrieval_path: str | None = None, prompt_path: str | None = None,
                log: Callable[[str], None] | None = None) -> int:
    """Decode the test split and write ``predictions.jsonl`` (architecture.md); returns the row count.

    ``params``: task, model, method (icl|pt|ipt|transfer_<src>), length, demos, seed, n_demos, input_label,
    output_label, max_new_tokens, batch_size, max_length, max_examples, device, precision.
    """
    from iclpt.io import read_jsonl, write_jsonl_atomic
    from iclpt.modeling import load_model, max_positions, resolve_device, resolve_precision, seed_everything
    from iclpt.prompting import Encoder, Template
    from iclpt.soft_prompt import load_prompt
    from iclpt.training import build_examples, index_by_id

    say = log or (lambda s: None)
    method = str(params["method"])
    demos_src = str(params.get("demos", "none"))
    use_demos = method != "pt" and demos_src != "none"
    if method in ("ipt", "icl") or method.startswith("transfer_"):
        if not use_demos:
            raise ValueError(f"method {method} needs demos (retrieved|random)")
    needs_prompt = method != "icl"
    if needs_prompt and not prompt_path:
        raise ValueError(f"method {method} needs a trained prompt")
    if use_demos and (not retrieval_path or not train_path):
        raise ValueError("demos need the train split and the retrieval file")
    device = resolve_device(params.get("device", "cpu"))
    precision = resolve_precision(params.get("precision", "fp32"), device)
    seed_everything(int(params.get("seed", 0)))

    model, tokenizer = load_model(model_path, device=device, precision=precision)
    prompt = None
    if needs_prompt:
        prompt, _ = load_prompt(prompt_path)
        if prompt.shape[1] != model.get_input_embeddings().weight.shape[1]:
            raise ValueError(f"{prompt_path}: prompt width {prompt.shape[1]} does not match the model")
        if int(params.get("length", prompt.shape[0])) != prompt.shape[0]:
            raise ValueError(f"{prompt_path}: prompt has {prompt.shape[0]} vectors, expected {params['length']}")
    n_virtual = 0 if prompt is None else int(prompt.shape[0])
    max_new = int(params["max_new_tokens"])
    max_length = int(params.get("max_length", 1024))
    mp = max_positions(model)
    if mp:
        max_length = min(max_length, mp)

    records = read_jsonl(test_path, required=("id", "input", "references"))
    if params.get("max_examples"):
        records = records[: int(params["max_examples"])]
    pool: dict[str, dict[str, Any]] = {}
    ret = None
    if use_demos:
        pool = index_by_id(read_jsonl(train_path, required=("id", "input", "target")), str(train_path))
        ret = index_by_id(read_jsonl(retrieval_path, required=("id", "demo_ids")), str(retrieval_path))
    encoder = Encoder(tokenizer, Template(params["input_label"], params["output_label"]))
    n_demos = int(params.get("n_demos", 1)) if use_demos else 0
    examples, stats = build_examples(encoder, records, ret, pool, n_demos, n_virtual, max_length,
                                     with_target=False, max_new_tokens=max_new, exclude_self=False)
    say(f"{len(examples)} test examples, truncation {stats}")
    preds = generate_texts(model, tokenizer, prompt, [e.ids for e in examples], max_new,
                           int(params.get("batch_size", 16)), device=device, precision=precision, log=say)
    out_rows = []
    for r, e, p in zip(records, examples, preds):
        out_rows.append({
            "id": r["id"], "task": params.get("task"), "model": params.get("model"), "method": method,
            "seed": int(params.get("seed", 0)), "prompt_length": n_virtual,
            "demo_source": demos_src, "demo_ids": e.meta["demo_ids"], "demo_scores": e.meta["demo_scores"],
            "input_text": e.text, "prediction": p, "references": r["references"], "meta": r.get("meta", {}),
        })
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    return write_jsonl_atomic(out_path, out_rows)
