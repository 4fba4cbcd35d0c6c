"""Greedy decoding throughput on SmolLM2-135M: iclpt's decoder against the two baselines a researcher would use.

1. ICL (no soft prompt): ``iclpt.engine.generation.greedy_generate`` vs ``transformers``' own
   ``model.generate(do_sample=False)`` with its KV cache, on the same left-padded batches (attention mask) of
   real ICL inputs (one BM25-retrieved demo + the query, rendered by ``iclpt.engine.prompting``, real sample rows of
   each task), batch 16, the same stop rule (EOS and every token whose text holds a newline: ``eos_token_id`` =
   that list) and the same ``max_new_tokens`` (the task's budget). Both run on the same model object at the same
   precision (bf16 autocast over the bf16-stored matmul weights where the CPU has bf16, else fp32).
2. Soft prompt: iclpt (KV cache) vs PEFT prompt tuning's ``generate(use_cache=False)`` (its correct path), on
   16 PT-rendered rows of one task of equal token length (PEFT puts the prompt before the padding, so only
   unpadded batches are comparable), ``--peft-new-tokens`` new tokens at most, the same stop rule, both in
   ``--peft-precision`` (fp32 by default: in bf16 a KV-cache step and a full recomputation round their matmuls
   differently, as the GEMM blocking depends on the row count, so any two correct decoders, iclpt's own
   ``use_cache=False`` path included, may part ways at a near tie; in fp32 they agree). In bf16 the script
   checks instead that iclpt's ``use_cache=False`` path equals PEFT's token for token, and times the cached one.

Outputs must be identical token by token (the script exits 1 otherwise). Each side is timed ``--repeats``
times, alternating, the fastest counts; new tokens/s = generated tokens (up to each row's stop token) / s.
The last line prints both ratios.

    .venv/bin/python benchmarks/bench_decode.py [--model PATH] [--tasks dart spider mtop] [--repeats 2]
    .venv/bin/python benchmarks/bench_decode.py --tiny --tasks mtop --repeats 1    # seconds: smoke test
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from realdata import encode_rows, load_line, model_folder, sample, task_records  # noqa: E402


def cut_at_stop(row: list[int], stops: set[int]) -> list[int]:
    """New ids up to and including the first stop id (what iclpt returns)."""
    for i, t in enumerate(row):
        if t in stops:
            return row[: i + 1]
    return row


def best_of(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def hf_generate(model, ids, mask, max_new: int, stops: list[int], pad: int, use_cache: bool):
    from transformers import GenerationConfig

    gc = GenerationConfig(do_sample=False, max_new_tokens=max_new, eos_token_id=stops, pad_token_id=pad,
                          use_cache=use_cache)
    return model.generate(input_ids=ids, attention_mask=mask, generation_config=gc)


def left_pad(rows: list[list[int]], pad: int):
    import torch

    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, T - len(r):] = torch.tensor(r)
        mask[i, T - len(r):] = 1
    return ids, mask


def equal_length_rows(rows: list[list[int]], n: int) -> list[list[int]]:
    """``n`` rows of the most common length (the shortest such length among ties)."""
    counts = Counter(len(r) for r in rows)
    length = max(counts, key=lambda L: (min(counts[L], n), -L))
    return [r for r in rows if len(r) == length][:n]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="save_pretrained folder (default: SmolLM2-135M-Instruct, fetched once)")
    ap.add_argument("--tiny", action="store_true", help="a tiny random Llama (smoke test)")
    ap.add_argument("--tasks", nargs="+", default=["dart", "spider", "mtop"])
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--n-demos", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default: each task's budget")
    ap.add_argument("--peft-task", default="mtop")
    ap.add_argument("--peft-new-tokens", type=int, default=48)
    ap.add_argument("--prompt-len", type=int, default=8)
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    ap.add_argument("--peft-precision", default="fp32", choices=["auto", "bf16", "fp32"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-peft", action="store_true")
    args = ap.parse_args()

    import torch

    from iclpt.data.tasks import get_task
    from iclpt.engine.generation import greedy_generate, stop_token_ids
    from iclpt.engine.prompting import Encoder, Template
    from iclpt.engine.soft_prompt import init_prompt
    from iclpt.models.loading import autocast, load_model, resolve_precision

    torch.set_num_threads(args.threads)
    dev = torch.device("cpu")
    precision = resolve_precision(args.precision, dev)
    data = {t: task_records(t) for t in args.tasks + [args.peft_task]}
    texts = [x for recs, _ in data.values() for r in recs["train"] for x in (r["input"], r["target"])]
    path = model_folder(args.model, args.tiny, texts)
    model, tok = load_model(path, device=dev, precision=precision)  # bf16: matmul weights stored in bf16
    stops = stop_token_ids(tok)
    stop_set = set(stops)
    pad = tok.pad_token_id
    print(f"model {path} ({model.config.model_type}), precision {precision}, threads {args.threads}, "
          f"batch {args.batch_size}, {len(stops)} stop ids; {load_line()}")

    # ---- 1. ICL: iclpt vs generate() with the KV cache
    tot = {"iclpt": [0.0, 0], "generate": [0.0, 0]}
    same_all = True
    for task in args.tasks:
        recs, where = data[task]
        t = get_task(task)
        enc = Encoder(tok, Template(t.input_label, t.output_label))
        max_new = args.max_new_tokens or t.max_new_tokens
        queries = sample(recs["dev"], args.batch_size)
        rows = [e.ids for e in encode_rows(enc, queries, recs["train"], args.n_demos, 0, 2048, False, max_new)]
        ids, mask = left_pad(rows, pad)
        greedy_generate(model, None, rows[:2], 2, pad, stops, precision=precision)  # warm-up
        with torch.no_grad(), autocast(dev, precision):
            hf_generate(model, ids[:2], mask[:2], 2, stops, pad, True)
        t_ours = t_hf = float("inf")
        ours = ref = None
        for rep in range(args.repeats):  # alternating which side goes first; the fastest of each counts
            for side in (("iclpt", "generate") if rep % 2 == 0 else ("generate", "iclpt")):
                if side == "iclpt":
                    dt, ours = best_of(lambda: greedy_generate(model, None, rows, max_new, pad, stops,
                                                               precision=precision), 1)
                    t_ours = min(t_ours, dt)
                else:
                    with torch.no_grad(), autocast(dev, precision):
                        dt, out = best_of(lambda: hf_generate(model, ids, mask, max_new, stops, pad, True), 1)
                    t_hf = min(t_hf, dt)
                    ref = [cut_at_stop(r, stop_set) for r in out[:, ids.shape[1]:].tolist()]
        same = ref == ours
        same_all &= same
        n_new = sum(len(o) for o in ours)
        lens = sorted(len(r) for r in rows)
        print(f"{task} ({where}): ICL rows {len(rows)}, input tokens median {lens[len(lens) // 2]} max {lens[-1]}, "
              f"max_new {max_new}, {n_new} new tokens; iclpt {n_new / t_ours:7.1f} tok/s ({t_ours:.2f}s), "
              f"generate {n_new / t_hf:7.1f} tok/s ({t_hf:.2f}s), ratio {t_hf / t_ours:.2f}x; identical: {same}"
              + ("" if same else f" ({sum(a == b for a, b in zip(ours, ref))}/{len(ours)} rows)"))
        tot["iclpt"][0] += t_ours
        tot["generate"][0] += t_hf
        tot["iclpt"][1] += n_new
        tot["generate"][1] += n_new
    r_gen = (tot["iclpt"][1] / tot["iclpt"][0]) / (tot["generate"][1] / tot["generate"][0])

    # ---- 2. soft prompt: iclpt (KV cache) vs PEFT generate(use_cache=False)
    r_peft = float("nan")
    if not args.skip_peft:
        from peft import PromptTuningConfig, TaskType, get_peft_model
        from transformers import AutoModelForCausalLM

        recs, where = data[args.peft_task]
        t = get_task(args.peft_task)
        enc = Encoder(tok, Template(t.input_label, t.output_label))
        pool = [enc.encode(r["input"], n_virtual=args.prompt_len, max_length=2048).ids for r in recs["dev"]]
        rows = equal_length_rows(pool, args.batch_size)
        prompt = init_prompt(model, args.prompt_len, "vocab", seed=0)
        max_new = args.peft_new_tokens
        pp = resolve_precision(args.peft_precision, dev)
        del model
        model, _ = load_model(path, device=dev, precision=pp)
        greedy_generate(model, prompt, rows[:2], 2, pad, stops, precision=pp)
        t_ours, ours = best_of(lambda: greedy_generate(model, prompt, rows, max_new, pad, stops,
                                                       precision=pp), args.repeats)
        check = ours if pp == "fp32" else greedy_generate(model, prompt, rows, max_new, pad, stops, precision=pp,
                                                          use_cache=False)
        del model
        base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        pm = get_peft_model(base, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=args.prompt_len))
        with torch.no_grad():
            pm.prompt_encoder["default"].embedding.weight.copy_(prompt)
        ids = torch.tensor(rows)
        mask = torch.ones_like(ids)
        with torch.no_grad(), autocast(dev, pp):  # PEFT: plain autocast over float32 weights, as usual
            hf_generate(pm, ids[:2], mask[:2], 2, stops, pad, False)
            t_peft, out = best_of(lambda: hf_generate(pm, ids, mask, max_new, stops, pad, False), 1)
        ref = [cut_at_stop(r, stop_set) for r in out[:, ids.shape[1]:].tolist()]
        same = ref == check
        same_all &= same
        n_new, n_ref = sum(len(o) for o in ours), sum(len(o) for o in ref)
        r_peft = (n_new / t_ours) / (n_ref / t_peft)
        print(f"soft prompt ({args.peft_task}, {where}, {pp}): {len(rows)} rows of {len(rows[0])} tokens + prompt "
              f"{args.prompt_len}, max_new {max_new}, {n_new} new tokens; iclpt {n_new / t_ours:7.1f} tok/s "
              f"({t_ours:.2f}s), peft use_cache=False {n_ref / t_peft:7.1f} tok/s ({t_peft:.2f}s); identical"
              f"{'' if pp == 'fp32' else ' (iclpt use_cache=False vs peft)'}: {same}"
              + ("" if pp == "fp32" else f"; cached vs uncached rows equal {sum(a == b for a, b in zip(ours, check))}"
                 f"/{len(ours)}"))
    print(f"identical outputs: {same_all}; {load_line()}")
    print(f"decode throughput ratio (iclpt / generate KV cache, ICL, new tokens/s): {r_gen:.2f}x (target >= 1.0x); "
          f"iclpt / peft use_cache=False: {r_peft:.1f}x (target >= 10x){'' if same_all else '; OUTPUTS DIFFER'}")
    return 0 if same_all else 1


if __name__ == "__main__":
    sys.exit(main())
