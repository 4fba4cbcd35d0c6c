"""Soft-prompt training throughput on SmolLM2-135M: iclpt against PEFT prompt tuning on the same real model.

Inputs: the real samples of DART, Spider and MTOP (``../shared/data``, official formats, read by the task
adapters), tokenised by SmolLM2's tokenizer and rendered by ``iclpt.engine.prompting`` in the PT layout
(``[P] query answer``) and the IPT layout (``[P] demo query answer``, one BM25-retrieved demo from the train
pool, own group excluded), ``--pool`` training examples per task, soft prompt of ``--prompt-len`` (25, the
paper config) vectors, batch ``--batch-size`` (8).

- iclpt: the training job's own step (``iclpt.engine.training.train_step``, through ``batch_loss_sum``: left
  padding, LM head on the target positions only, fast loss) on batches from its length-bucketed sampler
  (``epoch_batches``: sorted windows of 50 batches, so a pool of 400 is one window); the model as
  ``iclpt.models.loading.load_model`` loads it (bf16: matmul weights stored in bf16 once).
- PEFT: ``get_peft_model(PromptTuningConfig)`` on the float32 model, the usual collator (random order, right
  padding to the longest row, labels -100 off the target), loss from ``labels``, plain autocast for bf16.

Each side draws its batches from its own sampler over the same pool (one epoch): iclpt's length-bucketed
sampler, PEFT's random order. ``--steps`` batches of each epoch are timed, at evenly spaced ranks of padded batch
length (a systematic sample of that epoch, the same rule on both sides), after one untimed warm-up step per
process; AdamW, gradient clipping 1.0. Target tokens/s then estimate each side's rate over its whole epoch; the
padded tokens per batch of both epochs are printed beside them (computed from the lengths). Each (side,
precision) runs in its own process (peak RSS is its own) over every task and layout. Precisions: bf16 autocast
on both sides where the CPU has native bf16 (the default), and fp32 (``--precisions bf16 fp32``).

Reported per task and layout: target tokens/s of each side and their ratio, and model FLOP/s as a share of a
bf16/fp32 matmul peak measured in the same run (model FLOPs = 4 x (non-embedding params x real tokens + LM head
params x target tokens): forward and input-gradient backward of the frozen base, the head where a loss needs
it; the same formula for both sides). The last line prints the ratio per precision.

    .venv/bin/python benchmarks/bench_train.py [--model PATH] [--precisions bf16 fp32] [--steps 2]
    .venv/bin/python benchmarks/bench_train.py --tiny --steps 1 --pool 40 --tasks mtop    # seconds: smoke test
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import resource
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from realdata import encode_rows, load_line, model_folder, sample, task_records  # noqa: E402


def make_sets(tasks, layouts, path, args):
    """{(task, layout): (encoded rows, iclpt batches, peft batches, source, epoch stats)}; batch 0 = warm-up.

    Each side's batches come from its own sampler over the same pool (one epoch): iclpt's length-bucketed
    ``epoch_batches`` (windows of 50 batches, as the jobs), PEFT's random order. Timed: ``--steps`` batches of each
    epoch, at evenly spaced ranks of padded batch length (a systematic sample of each epoch: short, middle and
    long batches alike)."""
    from transformers import AutoTokenizer

    from iclpt.data.tasks import get_task
    from iclpt.engine.prompting import Encoder, Template
    from iclpt.engine.training import epoch_batches

    tok = AutoTokenizer.from_pretrained(path)
    out = {}
    for task in tasks:
        recs, where = task_records(task)
        pool = sample(recs["train"], args.pool)
        t = get_task(task)
        enc = Encoder(tok, Template(t.input_label, t.output_label))
        for layout in layouts:
            nd = args.n_demos if layout == "ipt" else 0
            ex = encode_rows(enc, pool, recs["train"], nd, args.prompt_len, args.max_length, True)
            rows = [(e.ids, e.n_target) for e in ex]
            L = [len(r[0]) for r in rows]
            B, K = args.batch_size, args.steps

            def padded(b):
                return len(b) * (max(L[i] for i in b) + args.prompt_len)
            def systematic(bucket):
                epoch = sorted((b for b in epoch_batches(L, B, 0, 0, bucket) if len(b) == B), key=padded)
                picks = [int((k + 0.5) * len(epoch) / K) for k in range(K)]
                warm = next(i for i in range(len(epoch)) if i not in picks)
                timed = [epoch[i] for i in picks]
                random.Random(1).shuffle(timed)
                return [epoch[warm]] + timed, sum(map(padded, epoch)) / len(epoch)
            ours, e_ours = systematic(True)
            theirs, e_peft = systematic(False)
            stats = {"epoch_padded": (e_ours, e_peft), "real": sum(L) / len(L) * B + B * args.prompt_len}
            out[(task, layout)] = (rows, ours, theirs, where, stats)
    return out, tok.pad_token_id


def count_params(model):
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    total = sum(p.numel() for p in model.parameters())  # a tied head is counted once
    tied = head.data_ptr() == emb.data_ptr()
    body = total - emb.numel() - (0 if tied else head.numel())
    return body, head.numel()


def _worker(side, precision, sets, pad_id, path, args, queue):
    import torch

    torch.set_num_threads(args.threads)
    from iclpt.engine.prompting import Encoded, make_batch
    from iclpt.engine.soft_prompt import init_prompt
    from iclpt.engine.training import TrainConfig, TrainRun, start_training, train_step
    from iclpt.models.loading import autocast, load_model

    dev = torch.device("cpu")
    if side == "iclpt":
        model, _ = load_model(path, device=dev, precision="fp32")
        body, head = count_params(model)
        if precision == "bf16":
            from iclpt.models.loading import precast_for_autocast

            precast_for_autocast(model)  # what load_model(precision="bf16") does
        init = init_prompt(model, args.prompt_len, "vocab", seed=0)
    else:
        from peft import PromptTuningConfig, TaskType, get_peft_model
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        body, head = count_params(model)
        init = init_prompt(model, args.prompt_len, "vocab", seed=0)
        pm = get_peft_model(model, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=args.prompt_len))
        params = [p for p in pm.parameters() if p.requires_grad]
    results = {}
    for key, (rows, ours, theirs, _, _) in sets.items():
        enc = [Encoded(ids=i, n_target=t, text="", n_demos=0) for i, t in rows]
        if side == "iclpt":  # the job's step: AdamW, clipping 1.0 (the schedule does not change the time)
            cfg = TrainConfig(lr=0.01, warmup_steps=0, max_steps=len(ours) + 1, batch_size=args.batch_size)
            run = TrainRun(model, enc, [], cfg, pad_id, dev, precision)
            st = start_training(run, init, seed=0)

            def step(b):
                batch = make_batch([enc[i] for i in b], pad_id)
                train_step(run, st, [batch])
                return batch.n_target, int(batch.token_mask.sum()) + len(b) * args.prompt_len, \
                    len(b) * (batch.input_ids.shape[1] + args.prompt_len)
            batches = ours
        else:
            with torch.no_grad():
                pm.prompt_encoder["default"].embedding.weight.copy_(init)
            opt = torch.optim.AdamW(params, lr=0.01)

            def step(b):  # the usual collator: right padding to the longest row, labels -100 off the target
                rs = [enc[i] for i in b]
                T = max(len(e.ids) for e in rs)
                ids = torch.full((len(rs), T), pad_id)
                mask = torch.zeros((len(rs), T), dtype=torch.long)
                labels = torch.full((len(rs), T), -100)
                for r, e in enumerate(rs):
                    ids[r, : len(e.ids)] = torch.tensor(e.ids)
                    mask[r, : len(e.ids)] = 1
                    labels[r, len(e.ids) - e.n_target: len(e.ids)] = torch.tensor(e.ids[-e.n_target:])
                opt.zero_grad(set_to_none=True)
                with autocast(dev, precision):
                    loss = pm(input_ids=ids, attention_mask=mask, labels=labels).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                return sum(e.n_target for e in rs), int(mask.sum()) + len(rs) * args.prompt_len, \
                    len(rs) * (T + args.prompt_len)
            batches = theirs
        if not results or args.warmup_each:
            step(batches[0])  # warm-up (allocator, lazy initialisation), not timed
        tgt = real = padded = 0
        c0, t0 = time.process_time(), time.perf_counter()
        for b in batches[1:]:
            a, r, p = step(b)
            tgt, real, padded = tgt + a, real + r, padded + p
        results[key] = {"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0, "target": tgt,
                        "real": real, "padded": padded, "flops": 4 * (body * real + head * tgt)}
    queue.put({"results": results, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def matmul_peak(threads: int, precision: str, seconds: float = 2.0) -> float:
    import torch

    torch.set_num_threads(threads)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    n = 1024
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    best = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        for _ in range(4):
            a @ b
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t))
    return best


def run_side(side, precision, sets, pad_id, path, args):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_worker, args=(side, precision, sets, pad_id, path, args, q))
    p.start()
    r = q.get()
    p.join()
    return r


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="save_pretrained folder (default: SmolLM2-135M-Instruct, fetched once)")
    ap.add_argument("--tiny", action="store_true", help="a tiny random Llama (smoke test)")
    ap.add_argument("--tasks", nargs="+", default=["dart", "spider", "mtop"])
    ap.add_argument("--layouts", nargs="+", default=["pt", "ipt"], choices=["pt", "ipt"])
    ap.add_argument("--precisions", nargs="+", default=None,
                    help="default: bf16 where the CPU has it, else fp32 (the full run: --precisions bf16 fp32)")
    ap.add_argument("--steps", type=int, default=2, help="timed optimizer steps per task and layout")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=25)
    ap.add_argument("--n-demos", type=int, default=1)
    ap.add_argument("--pool", type=int, default=400, help="training examples per task (400 = one sampler window)")
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup-each", action="store_true", help="a warm-up step before every set, not only the first")
    args = ap.parse_args()

    from iclpt.models.loading import cpu_has_bf16

    precisions = args.precisions or (["bf16"] if cpu_has_bf16() else ["fp32"])
    texts = None
    if args.tiny and not args.model:
        texts = [x for t in args.tasks for r in task_records(t)[0]["train"][:200] for x in (r["input"], r["target"])]
    path = model_folder(args.model, args.tiny, texts)
    sets, pad_id = make_sets(args.tasks, args.layouts, path, args)
    peaks = {p: matmul_peak(args.threads, p) for p in precisions}
    print(f"model {path}, threads {args.threads}, batch {args.batch_size}, prompt {args.prompt_len}, "
          f"{args.steps} timed steps per set; matmul peak "
          + ", ".join(f"{p} {v / 1e9:.0f} GFLOP/s" for p, v in peaks.items()) + f"; {load_line()}")
    for (task, layout), (rows, _ours, _, where, st) in sets.items():
        lens = sorted(len(r[0]) for r in rows)
        e_ours, e_peft = st["epoch_padded"]
        print(f"  {task} {layout} ({where}): {len(rows)} examples, tokens/example median {lens[len(lens) // 2]}, "
              f"max {lens[-1]}; tokens per batch over one epoch: real {st['real']:.0f}, padded iclpt {e_ours:.0f}, "
              f"peft {e_peft:.0f} ({e_peft / e_ours:.2f}x)")
    summary = {}
    for precision in precisions:
        res = {side: run_side(side, precision, sets, pad_id, path, args) for side in ("iclpt", "peft")}
        tot = {s: [0.0, 0, 0.0] for s in res}
        for key in sets:
            a, b = res["iclpt"]["results"][key], res["peft"]["results"][key]
            for s, r in (("iclpt", a), ("peft", b)):
                tot[s][0] += r["seconds"]
                tot[s][1] += r["target"]
                tot[s][2] += r["cpu"]
            ra, rb = a["target"] / a["seconds"], b["target"] / b["seconds"]
            print(f"  {precision} {key[0]:>6} {key[1]}: iclpt {ra:7.1f} target tok/s "
                  f"({100 * a['flops'] / a['seconds'] / peaks[precision]:3.0f}% of peak, {a['padded']} padded), "
                  f"peft {rb:7.1f} ({100 * b['flops'] / b['seconds'] / peaks[precision]:3.0f}%, {b['padded']} "
                  f"padded); {ra / rb:.2f}x")
        ratio = (tot["iclpt"][1] / tot["iclpt"][0]) / (tot["peft"][1] / tot["peft"][0])
        cpu_ratio = (tot["iclpt"][1] / tot["iclpt"][2]) / (tot["peft"][1] / tot["peft"][2])
        summary[precision] = ratio
        print(f"  {precision} all: iclpt {tot['iclpt'][1] / tot['iclpt'][0]:.1f} target tok/s, peak RSS "
              f"{res['iclpt']['rss_mib']:.0f} MiB; peft {tot['peft'][1] / tot['peft'][0]:.1f} target tok/s, peak RSS "
              f"{res['peft']['rss_mib']:.0f} MiB; ratio {ratio:.2f}x (by CPU time {cpu_ratio:.2f}x)")
    print(load_line())
    print("train throughput ratio (iclpt / peft, target tokens/s, equal precision): "
          + ", ".join(f"{p} {r:.2f}x" for p, r in summary.items()) + " (target >= 2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
