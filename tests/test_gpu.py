"""`make test-gpu`: the engine's guarantees on a CUDA device, and one paper-size training step, timed.

Run it the day a GPU is available (`make test-gpu`; about 2-4 minutes on one GPU, budget 8): every test here skips,
saying why, where torch sees no CUDA device (so `make test` on a CPU machine passes through it). What it checks, each
the CUDA version of a CPU test:

- the soft prompt's logits equal PEFT prompt tuning's on tiny GPT-2 / OPT / BLOOM / Llama / Gemma 3 (fp32; rows left
  padded in a batch against each row alone through PEFT; tests/test_architectures.py on the CPU);
- greedy decoding equals `generate()`: PEFT's `generate()` with the prompt, and the model's own `generate()` with its
  KV cache on left-padded ICL rows (tests/test_real_model.py, benchmarks/bench_decode.py on the CPU);
- kill and resume gives the identical prompt, bit for bit, in the precision `auto` picks on this GPU (bf16 at compute
  capability >= 8.0, else fp16 with its loss scale): every family interrupted in process, GPT-2 also by a real
  SIGKILL of a training job (tests/test_training.py on the CPU);
- the GPU lease with 2 concurrent jobs (iclpt.devices on the machine's own GPU list): each sees exactly one GPU as
  cuda:0; with 2+ GPUs they run on different ones at once, with one they take turns;
- a paper-size step: an OPT-1.3B-shaped random model (24 layers, width 2048, vocabulary 50,272) loaded in the job's
  precision, batch 8 of 512-token IPT rows, a 25-token prompt: prints seconds per step, target tokens per second
  and peak GPU memory (the numbers the calibrated plan's GPU estimate wants).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from tiny_engine import ARCHS, kill_at_checkpoint, left_pad, load, tiny_model_dir

ROOT = Path(__file__).resolve().parents[1]
NO_CUDA = (f"no CUDA device: torch {torch.__version__} (CUDA build: {torch.version.cuda}) sees none. "
           "make test-gpu checks the engine on a GPU; nothing of it ran here")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)]
CUDA = torch.device("cuda")
TEXTS = ["a cat", "the old dog sleeps in the big house with a red bird", "fish", "the tree is new and green"]


def _on_cuda(arch: str, init_std: float | None = None):
    model, tok = load(arch, init_std=init_std)
    return model.to(CUDA), tok


def _left_pad(rows, pad_id):
    ids, mask = left_pad(rows, pad_id)
    return ids.to(CUDA), mask.to(CUDA)


@pytest.mark.parametrize("arch", ARCHS)
def test_cuda_logits_equal_peft_prompt_tuning(arch):
    from peft import PromptTuningConfig, TaskType, get_peft_model

    from iclpt.engine.soft_prompt import assemble_inputs, init_prompt
    from iclpt.models.loading import lm_forward

    model, tok = _on_cuda(arch)
    prompt = init_prompt(model, 5, "vocab", seed=1, init_vocab_size=100).to(CUDA)
    rows = [tok(t)["input_ids"] for t in TEXTS]
    ids, mask = _left_pad(rows, tok.pad_token_id)
    with torch.no_grad():
        batched = lm_forward(model, *assemble_inputs(model, prompt, ids, mask)).logits
    pm = get_peft_model(model, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=5))
    with torch.no_grad():
        pm.prompt_encoder["default"].embedding.weight.copy_(prompt)
        for i, r in enumerate(rows):
            one = torch.tensor([r], device=CUDA)
            ref = pm(input_ids=one, attention_mask=torch.ones_like(one)).logits[0]
            torch.testing.assert_close(batched[i, ids.shape[1] - len(r):], ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_cuda_greedy_equals_generate(arch):
    from peft import PromptTuningConfig, TaskType, get_peft_model
    from transformers import GenerationConfig

    from iclpt.engine.generation import greedy_generate, stop_token_ids
    from iclpt.engine.soft_prompt import init_prompt

    model, tok = _on_cuda(arch, init_std=0.3)  # peaked logits: no near-ties for the argmax
    stops = stop_token_ids(tok)
    pad = tok.pad_token_id

    def cut(rows, start):
        out = []
        for r in rows[:, start:].tolist():
            n = next((i + 1 for i, t in enumerate(r) if t in set(stops)), len(r))
            out.append(r[:n])
        return out

    # ICL rows (no prompt), left padded: the model's own generate() with its KV cache
    rows = [tok(t)["input_ids"] for t in TEXTS]
    ids, mask = _left_pad(rows, pad)
    gc = GenerationConfig(do_sample=False, max_new_tokens=12, eos_token_id=stops, pad_token_id=pad, use_cache=True)
    with torch.no_grad():
        ref = model.generate(input_ids=ids, attention_mask=mask, generation_config=gc)
    ours = greedy_generate(model, None, rows, 12, pad, stops, device=CUDA)
    assert ours == cut(ref, ids.shape[1])
    # with a soft prompt: PEFT's generate() (PEFT puts its prompt before padding: rows of one length)
    same = [tok(t)["input_ids"] for t in ("the red cat", "a big dog", "old green tree")]
    same = [r[: min(map(len, same))] for r in same]
    prompt = init_prompt(model, 4, "random", seed=0).to(CUDA)
    ours = greedy_generate(model, prompt, same, 12, pad, stops, device=CUDA)
    pm = get_peft_model(model, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=4))
    with torch.no_grad():
        pm.prompt_encoder["default"].embedding.weight.copy_(prompt)
        one = torch.tensor(same, device=CUDA)
        out = pm.generate(input_ids=one, attention_mask=torch.ones_like(one),
                          generation_config=GenerationConfig(**{**gc.to_dict(), "use_cache": False}))
    assert ours == cut(out, one.shape[1])


def _auto_precision() -> str:
    from iclpt.models.loading import resolve_precision

    return resolve_precision("auto", CUDA)


@pytest.mark.parametrize("arch", ARCHS)
def test_cuda_interrupted_training_resumes_bit_identically(arch, tmp_path):
    from iclpt.engine.prompting import Encoder, Template
    from iclpt.engine.soft_prompt import init_prompt
    from iclpt.engine.training import TrainConfig, TrainingInterrupted, train_prompt
    from iclpt.models.loading import load_model, seed_everything

    precision = _auto_precision()
    model, tok = load_model(tiny_model_dir(arch), device=CUDA, precision=precision)
    seed_everything(0, device=CUDA)
    enc = Encoder(tok, Template("Input", "Output"))
    xs = ["red cat", "a big dog", "the fish", TEXTS[1], "green bird", "old tree"]
    train = [enc.encode(x, [("red cat", "the red cat.")], target=f"the {x}.", n_virtual=3, max_length=96)
             for x in xs]
    init = init_prompt(model, 3, "vocab", seed=0, init_vocab_size=100)
    cfg = TrainConfig(lr=0.05, max_steps=6, warmup_steps=1, batch_size=3, eval_every=2, checkpoint_every=2,
                      max_length=96)
    kw = dict(seed=0, pad_id=tok.pad_token_id, device=CUDA, precision=precision)
    full = train_prompt(model, init, train, train[:2], cfg, **kw)
    again = train_prompt(model, init, train, train[:2], cfg, **kw)
    assert torch.equal(again.final_prompt, full.final_prompt), "two uninterrupted CUDA runs differ"
    with pytest.raises(TrainingInterrupted):
        train_prompt(model, init, train, train[:2], cfg, checkpoint_dir=tmp_path, stop_after=3, **kw)
    resumed = train_prompt(model, init, train, train[:2], cfg, checkpoint_dir=tmp_path, **kw)
    assert resumed.resumed_from == 2
    assert torch.equal(resumed.final_prompt, full.final_prompt) and resumed.log == full.log
    print(f"{arch}: {precision} on {torch.cuda.get_device_name(0)}, resumed bit-identically")


_KILLED_JOB = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {src!r})
    import iclpt.engine.training as T
    _orig = T.batch_loss_sum
    def slow(*a, **k):
        time.sleep(0.05)  # slow steps, so that the parent can kill the job mid-run
        return _orig(*a, **k)
    T.batch_loss_sum = slow
    import json
    kw = json.loads(sys.argv[1])
    T.train_job(**kw)
""")


def _job_files(d: Path) -> dict:
    rows = {"train": 24, "dev": 4}
    words = "red blue green cat dog bird tree house river city".split()
    for split, n in rows.items():
        with open(d / f"{split}.jsonl", "w") as fh:
            for i in range(n):
                x = " ".join(words[(i * 3 + j) % len(words)] for j in range(4))
                fh.write(json.dumps({"id": f"{split}{i}", "split": split, "input": x, "target": f"the {x}.",
                                     "references": [f"the {x}."], "meta": {}}) + "\n")
    params = {"task": "dart", "model": "tiny", "method": "pt", "length": 3, "demos": "none", "seed": 0,
              "n_demos": 0, "input_label": "Triples", "output_label": "Text",
              "prompt": {"init": "vocab", "init_vocab_size": 50, "init_text": None, "init_file": None},
              "train": {"lr": 0.05, "max_steps": 40, "warmup_steps": 2, "batch_size": 4, "eval_every": 10,
                        "checkpoint_every": 5, "dev_examples": 4, "max_length": 64},
              "device": "cuda", "precision": "auto"}
    return dict(model_path=tiny_model_dir("gpt2"), train_path=str(d / "train.jsonl"), dev_path=str(d / "dev.jsonl"),
                params=params, checkpoint_root=str(d / "ckpt"))


def test_cuda_sigkilled_training_job_resumes_to_the_same_prompt(tmp_path):
    from iclpt.engine.soft_prompt import load_prompt
    from iclpt.engine.training import train_job

    kw = _job_files(tmp_path)
    killed = {**kw, "out_dir": str(tmp_path / "killed")}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_JOB.format(src=str(ROOT / "src")), json.dumps(killed)])
    kill_at_checkpoint(proc, tmp_path / "ckpt", min_step=10, timeout=240)
    assert proc.returncode == -signal.SIGKILL, "the job finished before it could be killed"
    resumed = train_job(**killed)
    assert 10 <= resumed["resumed_from_step"] < 40 and resumed["ran_on"]["device"] == "cuda"
    train_job(**{**kw, "out_dir": str(tmp_path / "straight"), "checkpoint_root": str(tmp_path / "c2")})
    a, _ = load_prompt(tmp_path / "killed" / "prompt.safetensors")
    b, _ = load_prompt(tmp_path / "straight" / "prompt.safetensors")
    assert torch.equal(a, b)
    print(f"SIGKILL at step >= 10, resumed at {resumed['resumed_from_step']}: identical prompt "
          f"({resumed['ran_on']['precision']} on {resumed['ran_on']['gpu_name']})")


_LEASED_JOB = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, {src!r})
    from iclpt.devices import job_setup
    device, lease = job_setup("auto", 1, note="make test-gpu")
    import torch
    x = torch.ones(1024, 1024, device="cuda")  # CUDA starts under the lease's mask
    t0 = time.time()
    (x @ x).sum().item()
    time.sleep(2.0)
    print(json.dumps({{"visible": lease.visible, "count": torch.cuda.device_count(), "device": device,
                       "uuid": str(torch.cuda.get_device_properties(0).uuid), "start": t0, "end": time.time()}}))
""")


def test_gpu_lease_with_two_jobs(tmp_path):
    from iclpt.devices import machine_gpus

    gpus = machine_gpus()
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "ICLPT_GPUS", "SLURM_JOB_ID")}
    env["ICLPT_GPU_LOCK_DIR"] = str(tmp_path / "locks")
    code = _LEASED_JOB.format(src=str(ROOT / "src"))
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    runs = [json.loads(p.communicate(timeout=300)[0].splitlines()[-1]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert all(r["count"] == 1 and r["device"] == "cuda" for r in runs), runs
    (a, b) = sorted(runs, key=lambda r: r["start"])
    if len(gpus) >= 2:
        assert a["visible"] != b["visible"] and a["uuid"] != b["uuid"], runs
    else:
        assert a["end"] <= b["start"], f"one GPU: the second job must wait for the first ({runs})"
    print(f"{len(gpus)} GPU(s): leases {[r['visible'] for r in runs]}")


def test_paper_size_training_step_timed():
    """An OPT-1.3B-shaped random model, the job's precision, batch 8 x 512 tokens (IPT: prompt + demo + input),
    25 virtual tokens; 3 warm-up steps, then 10 timed."""
    from transformers import AutoModelForCausalLM, OPTConfig

    from iclpt.devices import describe_device
    from iclpt.engine.prompting import Encoded
    from iclpt.engine.soft_prompt import freeze
    from iclpt.engine.training import TrainConfig, TrainRun, start_training, train_step
    from iclpt.models.loading import compute_dtype, precast_for_autocast, seed_everything

    precision = _auto_precision()
    seed_everything(0, device=CUDA)
    cfg = OPTConfig(hidden_size=2048, num_hidden_layers=24, ffn_dim=8192, num_attention_heads=32, vocab_size=50272,
                    max_position_embeddings=2048, word_embed_proj_dim=2048, dropout=0.0, attention_dropout=0.0)
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with torch.device(CUDA):
        model = AutoModelForCausalLM.from_config(cfg)
    freeze(model)
    precast_for_autocast(model, compute_dtype(precision))
    torch.cuda.synchronize()
    build = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(0)
    seq, target, batch, n_virtual = 512 - 25, 32, 8, 25
    rows = []
    for _ in range(64):
        ids = torch.randint(10, 50000, (seq,), generator=g).tolist()
        rows.append(Encoded(ids=ids, n_target=target, text="", n_demos=1))
    run = TrainRun(model, rows, rows[:8], TrainConfig(max_steps=100, warmup_steps=0, batch_size=batch, lr=0.01),
                   pad_id=1, device=CUDA, precision=precision)
    st = start_training(run, torch.randn(n_virtual, cfg.hidden_size) * 0.02, seed=0)
    for _ in range(3):
        train_step(run, st)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    steps = 10
    for _ in range(steps):
        row = train_step(run, st)
    torch.cuda.synchronize()
    per_step = (time.perf_counter() - t0) / steps
    peak = torch.cuda.max_memory_allocated() / 2**30
    where = describe_device(CUDA)
    print(f"\npaper-size step: {n_params / 1e9:.2f}B parameters ({precision}), batch {batch} x {seq + n_virtual} "
          f"tokens ({target} target tokens a row): {per_step:.3f} s/step, {batch * target / per_step:,.0f} target "
          f"tokens/s, {batch * (seq + n_virtual) / per_step:,.0f} tokens/s; peak GPU memory {peak:.1f} GiB; "
          f"model built in {build:.1f} s; {where['gpu_name']} (compute capability {where['compute_capability']})")
    assert torch.isfinite(torch.tensor(row["loss"])) and st.prompt.dtype == torch.float32
    assert peak < torch.cuda.get_device_properties(0).total_memory / 2**30
