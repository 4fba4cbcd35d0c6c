"""Greedy decoding throughput: iclpt (KV cache through inputs_embeds) vs PEFT prompt tuning's correct path
(``generate(use_cache=False)``), with identical outputs required.

GPT-2-small-shaped random model (124M), batch 16, 64 new tokens (no early stop on either side), soft prompt of
--prompt-len vectors, --input-len tokens per row (equal lengths: PEFT puts the prompt before the padding, so only
unpadded batches are comparable), 2 threads, the same precision on both sides. The last line prints the ratio.

    .venv/bin/python benchmarks/bench_decode.py [--input-len 16] [--prompt-len 8] [--tiny]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--input-len", type=int, default=16)
    ap.add_argument("--prompt-len", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="runs of the (fast) iclpt side; the fastest counts")
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()

    import torch
    from peft import PromptTuningConfig, TaskType, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    from iclpt.generation import greedy_generate
    from iclpt.modeling import autocast, precast_for_autocast, resolve_precision
    from iclpt.soft_prompt import freeze, init_prompt

    torch.set_num_threads(args.threads)
    dev = torch.device("cpu")
    precision = resolve_precision("auto", dev)
    if args.tiny:
        cfg = GPT2Config(n_embd=64, n_layer=2, n_head=2, vocab_size=8192, n_positions=1024)
    else:
        cfg = GPT2Config(n_embd=768, n_layer=12, n_head=12, vocab_size=50257, n_positions=1024)
    cfg.bos_token_id = cfg.eos_token_id = cfg.pad_token_id = 0
    cfg.resid_pdrop = cfg.embd_pdrop = cfg.attn_pdrop = 0.0

    def make_model():
        torch.manual_seed(0)
        m = freeze(GPT2LMHeadModel(cfg))
        # peaked next-token distributions (a random model at init_std 0.02 is near-uniform: argmax ties decide)
        with torch.no_grad():
            m.transformer.wte.weight.mul_(10)
        return m

    model = make_model()
    n_params = sum(p.numel() for p in model.parameters())
    if precision == "bf16":
        precast_for_autocast(model)  # what iclpt.modeling.load_model does for bf16
    prompt = init_prompt(model, args.prompt_len, "vocab", seed=0)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, cfg.vocab_size, (args.batch_size, args.input_len), generator=g)
    print(f"precision {precision}, threads {args.threads}, batch {args.batch_size}, {args.new_tokens} new tokens, "
          f"input {args.input_len} + prompt {args.prompt_len} tokens, {n_params / 1e6:.0f}M params")

    print(f"load average at start: {os.getloadavg()[0]:.1f} (a shared machine slows the many small decode steps most)")
    greedy_generate(model, prompt, ids[:2].tolist(), 4, 0, (), precision=precision)  # warm-up
    t_ours = c_ours = float("inf")
    for _ in range(args.repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        ours = greedy_generate(model, prompt, ids.tolist(), args.new_tokens, 0, (), precision=precision)
        t_ours = min(t_ours, time.perf_counter() - t0)
        c_ours = min(c_ours, time.process_time() - c0)
    n_new = sum(len(o) for o in ours)
    print(f"iclpt (KV cache):       {n_new / t_ours:8.1f} new tokens/s ({t_ours:.1f}s, CPU {c_ours:.1f}s; "
          f"best of {args.repeats})")

    del model
    pm = get_peft_model(make_model(), PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=args.prompt_len))
    with torch.no_grad():
        pm.prompt_encoder["default"].embedding.weight.copy_(prompt)
    kw = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False, use_cache=False,
              pad_token_id=0, eos_token_id=None)
    with torch.no_grad(), autocast(dev, precision):
        pm.generate(input_ids=ids[:2], attention_mask=torch.ones_like(ids[:2]), **{**kw, "max_new_tokens": 2,
                                                                                  "min_new_tokens": 2})
        c0, t0 = time.process_time(), time.perf_counter()
        out = pm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kw)
        t_peft = time.perf_counter() - t0
        c_peft = time.process_time() - c0
    ref = out[:, -args.new_tokens:].tolist()
    same = ref == ours
    n_ref = sum(len(r) for r in ref)
    print(f"peft (use_cache=False): {n_ref / t_peft:8.1f} new tokens/s ({t_peft:.1f}s, CPU {c_peft:.1f}s)")
    print(f"ratio by CPU time: {c_peft / c_ours:.1f}x; load average at end: {os.getloadavg()[0]:.1f}")
    print(f"identical outputs: {same}" + ("" if same else
          f" ({sum(a == b for a, b in zip(ref, ours))}/{len(ours)} rows equal)"))
    print(f"decode throughput ratio (iclpt / peft, new tokens/s): {(n_new / t_ours) / (n_ref / t_peft):.1f}x "
          f"(target >= 10x){'' if same else ' OUTPUTS DIFFER'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
