"""Soft-prompt training throughput: iclpt (length-bucketed batches, LM head on target positions only) vs PEFT
prompt tuning with the usual random-order, padded batches.

GPT-2-small-shaped random model (124M), batch 8, prompt length 25, fp32 unless the CPU has native bf16 (then bf16
autocast on both sides), 2 threads. Inputs: the PT rendering of the real DART and Spider samples in
../shared/data (synthetic lengths when absent), tokenised by a byte-level BPE trained on that text. Each side
runs in its own process (so peak RSS is its own) for --steps optimizer steps after one warm-up step, drawing
batches from a pool of --pool examples: iclpt through its sampler (sorted windows of 50 batches), PEFT in random
order. Reports target tokens/s (wall and CPU time), peak RSS, and model FLOP/s (4 x params x real tokens / s) against a matmul peak
measured in the same run. The last line prints the speed ratio.

    .venv/bin/python benchmarks/bench_train.py [--steps 3] [--threads 2] [--tiny]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SAMPLES = {"dart": ("train", "dart/train_pool_from_dev.json"), "spider": ("train", "spider/train_spider.json")}


def real_records(task: str, n: int, seed: int = 0) -> list[dict]:
    from iclpt.tasks import get_task

    split, rel = SAMPLES[task]
    path = SHARED / rel
    if not path.exists():
        rng = random.Random(seed)  # synthetic: similar char lengths to the samples
        mu_in, mu_out = (155, 119) if task == "dart" else (560, 109)
        return [{"input": "x " * max(5, int(rng.gauss(mu_in, mu_in / 3)) // 2),
                 "target": "y " * max(3, int(rng.gauss(mu_out, mu_out / 3)) // 2)} for _ in range(n)]
    recs = get_task(task).load(split, path)
    random.Random(seed).shuffle(recs)
    return recs[:n]


def make_examples(task: str, n: int, n_virtual: int, max_length: int):
    from iclpt.prompting import Encoder, Template
    from iclpt.tasks import get_task
    from iclpt.tiny_model import train_tokenizer

    recs = real_records(task, n)
    tok = train_tokenizer([r["input"] for r in recs] + [r["target"] for r in recs], 8000)
    t = get_task(task)
    enc = Encoder(tok, Template(t.input_label, t.output_label))
    exs = [enc.encode(r["input"], target=r["target"], n_virtual=n_virtual, max_length=max_length) for r in recs]
    return [(e.ids, e.n_target) for e in exs], tok.pad_token_id


def build_model(tiny: bool):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from iclpt.soft_prompt import freeze

    torch.manual_seed(0)
    if tiny:
        cfg = GPT2Config(n_embd=64, n_layer=2, n_head=2, vocab_size=8192, n_positions=1024, bos_token_id=0,
                         eos_token_id=0)
    else:
        cfg = GPT2Config(n_embd=768, n_layer=12, n_head=12, vocab_size=50257, n_positions=1024)
    cfg.resid_pdrop = cfg.embd_pdrop = cfg.attn_pdrop = 0.0
    return freeze(GPT2LMHeadModel(cfg))


def _worker(side: str, examples, pad_id: int, args, precision: str, queue) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from iclpt.modeling import autocast, precast_for_autocast
    from iclpt.prompting import Encoded, make_batch
    from iclpt.soft_prompt import init_prompt
    from iclpt.training import batch_loss_sum, epoch_batches

    model = build_model(args.tiny)
    dev = torch.device("cpu")
    n_params = sum(p.numel() for p in model.parameters())
    enc = [Encoded(ids=i, n_target=t, text="", n_demos=0) for i, t in examples]
    lengths = [len(e.ids) for e in enc]
    batches = epoch_batches(lengths, args.batch_size, seed=0, epoch=0, bucket=(side == "iclpt"))
    batches = [b for b in batches if len(b) == args.batch_size]
    random.Random(1).shuffle(batches)
    batches = batches[: args.steps + 1]
    init = init_prompt(model, args.prompt_len, "vocab", seed=0)

    if side == "iclpt":
        if precision == "bf16":
            precast_for_autocast(model)  # what iclpt.modeling.load_model does for bf16
        prompt = torch.nn.Parameter(init.clone())
        opt = torch.optim.AdamW([prompt], lr=0.01)

        def step(b):
            batch = make_batch([enc[i] for i in b], pad_id)
            opt.zero_grad(set_to_none=True)
            with autocast(dev, precision):
                loss, n = batch_loss_sum(model, prompt, batch)
            (loss / n).backward()
            torch.nn.utils.clip_grad_norm_([prompt], 1.0)
            opt.step()
            return batch.n_target, int(batch.token_mask.sum()) + len(b) * args.prompt_len
    else:
        from peft import PromptTuningConfig, TaskType, get_peft_model

        pm = get_peft_model(model, PromptTuningConfig(task_type=TaskType.CAUSAL_LM,
                                                      num_virtual_tokens=args.prompt_len))
        with torch.no_grad():
            pm.prompt_encoder["default"].embedding.weight.copy_(init)
        params = [p for p in pm.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=0.01)

        def step(b):  # the usual collator: right padding to the longest row, labels -100 off target
            rows = [enc[i] for i in b]
            T = max(len(e.ids) for e in rows)
            ids = torch.full((len(rows), T), pad_id)
            mask = torch.zeros((len(rows), T), dtype=torch.long)
            labels = torch.full((len(rows), T), -100)
            for r, e in enumerate(rows):
                ids[r, : len(e.ids)] = torch.tensor(e.ids)
                mask[r, : len(e.ids)] = 1
                labels[r, len(e.ids) - e.n_target: len(e.ids)] = torch.tensor(e.ids[-e.n_target:])
            opt.zero_grad(set_to_none=True)
            with autocast(dev, precision):
                loss = pm(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            return sum(e.n_target for e in rows), int(mask.sum()) + len(rows) * args.prompt_len

    step(batches[0])  # warm-up
    tgt = real = 0
    c0 = time.process_time()
    t0 = time.perf_counter()
    for b in batches[1:]:
        a, r = step(b)
        tgt += a
        real += r
    dt = time.perf_counter() - t0
    cpu = time.process_time() - c0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB
    queue.put({"side": side, "seconds": dt, "cpu_seconds": cpu, "target_tokens": tgt, "real_tokens": real, "rss_mib": rss,
               "n_params": n_params, "padded_tokens": sum(len(b) * max(lengths[i] for i in b) for b in batches[1:])})


def matmul_peak(threads: int, precision: str, seconds: float = 2.0) -> float:
    import torch

    torch.set_num_threads(threads)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(1024, 1024, dtype=dtype)
    b = torch.randn(1024, 1024, dtype=dtype)
    for _ in range(3):
        a @ b
    best = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        for _ in range(4):
            a @ b
        best = max(best, 4 * 2 * 1024**3 / (time.perf_counter() - t))
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=25)
    ap.add_argument("--pool", type=int, default=400)
    ap.add_argument("--tasks", nargs="+", default=["dart", "spider"])
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--tiny", action="store_true", help="smoke test with a tiny model")
    args = ap.parse_args()

    import torch

    from iclpt.modeling import resolve_precision

    precision = resolve_precision("auto", torch.device("cpu"))
    peak = matmul_peak(args.threads, precision)
    print(f"precision {precision}, threads {args.threads}, matmul peak {peak / 1e9:.1f} GFLOP/s"
          f"{'' if SHARED.exists() else ' (synthetic lengths: ../shared/data absent)'}")
    ctx = mp.get_context("spawn")
    totals = {"iclpt": [0.0, 0, 0.0], "peft": [0.0, 0, 0.0]}
    rss = {"iclpt": 0.0, "peft": 0.0}
    for task in args.tasks:
        examples, pad_id = make_examples(task, args.pool, args.prompt_len, args.max_length)
        lens = sorted(len(e[0]) for e in examples)
        print(f"{task}: {len(examples)} examples, tokens/example median {lens[len(lens) // 2]}, max {lens[-1]}")
        for side in ("iclpt", "peft"):
            q = ctx.Queue()
            p = ctx.Process(target=_worker, args=(side, examples, pad_id, args, precision, q))
            p.start()
            r = q.get()
            p.join()
            flops = 4 * r["n_params"] * r["real_tokens"] / r["seconds"]
            print(f"  {side:5s}: {r['target_tokens'] / r['seconds']:8.1f} target tok/s  "
                  f"({r['target_tokens']} target / {r['padded_tokens']} padded tokens in {r['seconds']:.1f}s, "
                  f"CPU {r['cpu_seconds']:.1f}s)  "
                  f"peak RSS {r['rss_mib']:.0f} MiB  model FLOP/s {flops / 1e9:.1f} G "
                  f"({100 * flops / peak:.0f}% of matmul peak)")
            totals[side][0] += r["seconds"]
            totals[side][1] += r["target_tokens"]
            totals[side][2] += r["cpu_seconds"]
            rss[side] = max(rss[side], r["rss_mib"])
    ours = totals["iclpt"][1] / totals["iclpt"][0]
    ref = totals["peft"][1] / totals["peft"][0]
    cpu_ratio = (totals["iclpt"][1] / totals["iclpt"][2]) / (totals["peft"][1] / totals["peft"][2])
    print(f"peak RSS: iclpt {rss['iclpt']:.0f} MiB, peft {rss['peft']:.0f} MiB; "
          f"ratio by CPU time (steadier on a shared machine): {cpu_ratio:.2f}x")
    print(f"train throughput ratio (iclpt / peft, target tokens/s): {ours / ref:.2f}x (target >= 1.3x)")


if __name__ == "__main__":
    sys.exit(main())
