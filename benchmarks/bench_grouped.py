"""Grouped decoding (issue 28 item 2) on SmolLM2-135M: many runs of one (task, model) decoded together against
decoding each run on its own, as the predict rule does today.

The runs: ``--runs`` kinds of one task, ``--rows`` real dev rows each (the same rows for every run), rendered by
the jobs' builder (``iclpt.engine.prompting.build_examples``, BM25 demos from the train records): zero-shot,
ICL (``--n-demos`` demos), PT at two prompt lengths, IPT (prompt + demos) at the same two lengths (the default 6
runs; the prompts are ``init_prompt(vocab)`` draws: real-scale vectors, not trained ones), each with the task's
``max_new_tokens`` and the jobs' stop rule.

- per run: ``iclpt.engine.generation.Decoder.texts`` of each run at batch 16 (today's ``predict.batch_size``),
  one Decoder per run as ``run_prediction`` builds it (its stop-id scan included, as each job pays it);
- grouped: ``iclpt.engine.grouped.decode_runs`` of all runs at each of ``--batch-sizes`` (rows of every run
  mixed, longest prefix first; one stop-id scan).

Both sides run in one process on one model object, alternating, best of ``--repeats``. Printed: new tokens/s and
wall per side (and per CPU-second of the process: steadier than wall time on a shared machine), the ratio per
grouped batch size, and how many rows' new ids differ from the per-run decode (fp32: a near-tie flipped by
another batch composition; see ``iclpt.engine.grouped``). Start-up: a fresh
process's wall time to import the library and load the model (what every per-run job pays before decoding; the
grouped job pays it once; each job's stop-id scan is inside the decode times above), best of
``--startup-repeats``; the saving is (runs - 1) x that.
The last line prints the grouped / per-run throughput ratio at the best batch size, with start-up and without.

    .venv/bin/python benchmarks/bench_grouped.py [--model PATH] [--task mtop] [--rows 32] [--batch-sizes 32]
    .venv/bin/python benchmarks/bench_grouped.py --batch-sizes 16 32 64 128 --repeats 2       # the README table
    .venv/bin/python benchmarks/bench_grouped.py --tiny --rows 8 --repeats 1                    # smoke test
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from realdata import ROOT, encode_rows, load_line, model_folder, sample, task_records  # noqa: E402

STARTUP = """
import time, sys
t0 = time.perf_counter()
import torch
torch.set_num_threads({threads})
import iclpt.engine.generation
from iclpt.models.loading import load_model
t1 = time.perf_counter()
model, tok = load_model(sys.argv[1], device="cpu", precision=sys.argv[2])
print(f"{{t1 - t0:.3f}} {{time.perf_counter() - t1:.3f}}")
"""


def startup_seconds(path: str, precision: str, threads: int, repeats: int) -> tuple[float, list[float]]:
    """Best wall time of a fresh interpreter importing the library and loading the model; and that run's
    (import, load) split."""
    best, parts = float("inf"), []
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", STARTUP.format(threads=threads), path, precision], env=env,
                             capture_output=True, text=True, check=True).stdout.split()
        dt = time.perf_counter() - t0
        if dt < best:
            best, parts = dt, [float(x) for x in out[-2:]]
    return best, parts


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="save_pretrained folder (default: SmolLM2-135M-Instruct, fetched once)")
    ap.add_argument("--tiny", action="store_true", help="a tiny random Llama (smoke test)")
    ap.add_argument("--task", default="mtop")
    ap.add_argument("--rows", type=int, default=32, help="dev rows per run")
    ap.add_argument("--n-demos", type=int, default=2)
    ap.add_argument("--prompt-lens", type=int, nargs=2, default=[8, 25])
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default: the task's budget")
    ap.add_argument("--per-run-batch", type=int, default=16, help="today's predict.batch_size")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[32], help="grouped batch sizes to time")
    ap.add_argument("--precision", default="fp32", choices=["auto", "bf16", "fp32"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--startup-repeats", type=int, default=2)
    args = ap.parse_args()

    import torch

    from iclpt.data.tasks import get_task
    from iclpt.engine.generation import Decoder, stop_token_ids
    from iclpt.engine.grouped import DecodeRun, decode_runs_ids
    from iclpt.engine.prompting import Encoder, Template
    from iclpt.engine.soft_prompt import init_prompt
    from iclpt.models.loading import load_model, resolve_precision

    torch.set_num_threads(args.threads)
    dev = torch.device("cpu")
    precision = resolve_precision(args.precision, dev)
    recs, where = task_records(args.task)
    texts = [x for r in recs["train"] for x in (r["input"], r["target"])]
    path = model_folder(args.model, args.tiny, texts)
    model, tok = load_model(path, device=dev, precision=precision)
    t = get_task(args.task)
    enc = Encoder(tok, Template(t.input_label, t.output_label))
    max_new = args.max_new_tokens or t.max_new_tokens
    queries = sample(recs["dev"], args.rows)
    la, lb = args.prompt_lens

    def rows(n_demos: int, n_virtual: int) -> list[list[int]]:
        return [e.ids for e in encode_rows(enc, queries, recs["train"], n_demos, n_virtual, 1024, False, max_new)]

    pa, pb = init_prompt(model, la, "vocab", seed=0), init_prompt(model, lb, "vocab", seed=1)
    runs = [DecodeRun(rows(0, 0), max_new, None, "zeroshot"), DecodeRun(rows(args.n_demos, 0), max_new, None, "icl"),
            DecodeRun(rows(0, la), max_new, pa, f"pt-L{la}"), DecodeRun(rows(0, lb), max_new, pb, f"pt-L{lb}"),
            DecodeRun(rows(args.n_demos, la), max_new, pa, f"ipt-L{la}"),
            DecodeRun(rows(args.n_demos, lb), max_new, pb, f"ipt-L{lb}")]
    n_rows = sum(len(r.rows) for r in runs)
    lens = sorted(r.prompt_length + len(x) for r in runs for x in r.rows)
    print(f"model {path} ({model.config.model_type}), precision {precision}, threads {args.threads}; task "
          f"{args.task} ({where}); {len(runs)} runs x {args.rows} rows = {n_rows} rows, prefix (prompt + tokens) "
          f"median {lens[len(lens) // 2]} max {lens[-1]}, max_new {max_new}; {load_line()}")

    def per_run() -> list[list[list[int]]]:
        out = []
        for r in runs:  # what each job does: its own Decoder (stop-id scan), Decoder.texts' length-sorted batches
            d = Decoder(model, tok, r.prompt, dev, precision)
            order = sorted(range(len(r.rows)), key=lambda i: (-len(r.rows[i]), i))
            ids: list[list[int]] = [[] for _ in r.rows]
            for s in range(0, len(order), args.per_run_batch):
                idx = order[s:s + args.per_run_batch]
                for i, n in zip(idx, d.new_ids([r.rows[i] for i in idx], max_new)):
                    ids[i] = n
            out.append(ids)
        return out

    def grouped(bs: int) -> list[list[list[int]]]:
        return decode_runs_ids(model, runs, tok.pad_token_id, stop_token_ids(tok), bs, dev, precision)

    warm = [DecodeRun(r.rows[:2], 2, r.prompt) for r in runs]
    decode_runs_ids(model, warm, tok.pad_token_id, [], 4, dev, precision)  # packs the linears, warms the kernels
    sides = ["per-run"] + [f"grouped@{bs}" for bs in args.batch_sizes]
    best = {s: float("inf") for s in sides}
    cpu = {s: float("inf") for s in sides}
    outs: dict[str, list[list[list[int]]]] = {}
    for rep in range(args.repeats):
        for side in (sides if rep % 2 == 0 else sides[::-1]):
            t0, c0 = time.perf_counter(), time.process_time()
            outs[side] = per_run() if side == "per-run" else grouped(int(side.split("@")[1]))
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            best[side], cpu[side] = min(best[side], dt), min(cpu[side], dc)
            print(f"  rep {rep}: {side} {dt:.2f}s wall, {dc:.2f}s CPU; {load_line()}", flush=True)
    ref = outs["per-run"]
    n_new = sum(len(x) for run in ref for x in run)
    print(f"per-run (batch {args.per_run_batch}, one Decoder per run): {n_new} new tokens, "
          f"{n_new / best['per-run']:.1f} new tok/s ({best['per-run']:.2f}s), {n_new / cpu['per-run']:.1f} new tok per "
          f"CPU-s ({cpu['per-run']:.2f}s)")
    ratios = {}
    for bs in args.batch_sizes:
        side = f"grouped@{bs}"
        got = outs[side]
        diff = sum(a != b for g, w in zip(got, ref) for a, b in zip(g, w))
        n = sum(len(x) for run in got for x in run)
        ratios[bs] = (n / best[side]) / (n_new / best["per-run"])
        cpu_ratio = (n / cpu[side]) / (n_new / cpu["per-run"])
        print(f"grouped batch {bs}: {n} new tokens, {n / best[side]:.1f} new tok/s ({best[side]:.2f}s), "
              f"{ratios[bs]:.2f}x per-run; per CPU-s {n / cpu[side]:.1f} ({cpu[side]:.2f}s), {cpu_ratio:.2f}x; "
              f"rows differing from per-run {diff}/{n_rows}")
    up, parts = startup_seconds(path, precision, args.threads, args.startup_repeats)
    print(f"per-job start-up (fresh process: imports {parts[0]:.2f}s, model load {parts[1]:.2f}s; wall {up:.2f}s "
          f"with the interpreter; the stop-id scan is in the decode times): {len(runs)} per-run jobs pay "
          f"{len(runs) * up:.1f}s, the grouped job {up:.1f}s; saved {(len(runs) - 1) * up:.1f}s")
    bs = max(ratios, key=ratios.get)
    with_up = (best["per-run"] + len(runs) * up) / (best[f"grouped@{bs}"] + up)
    print(f"{load_line()}")
    print(f"grouped / per-run decoding throughput ({len(runs)} runs x {args.rows} rows, best batch {bs}): "
          f"{ratios[bs]:.2f}x new tok/s; wall with per-job start-up {with_up:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
