"""Prompt training: learns a signal, leaves the base model untouched, resumes exactly, writes the contract files."""

from __future__ import annotations

import json
import random

import pytest
import torch
from tiny_engine import ARCHS, kill_at_checkpoint, load, tiny_model_dir

from iclpt.engine.generation import generate_texts, greedy_generate, stop_token_ids
from iclpt.engine.prompting import IGNORE, Encoder, Template, make_batch
from iclpt.engine.soft_prompt import assemble_inputs, init_prompt
from iclpt.engine.training import (
    TrainConfig,
    TrainingInterrupted,
    batch_loss_sum,
    epoch_batches,
    train_job,
    train_prompt,
)
from iclpt.models.loading import lm_forward

WORDS = "red blue green cat dog bird".split()
TARGET = "the cat sleeps."


def _inputs(n, seed):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))) for _ in range(n)]


def test_learns_a_fixed_target_and_leaves_the_base_untouched():
    model, tok = load("gpt2", hidden=64, init_std=0.3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    enc = Encoder(tok, Template("Input", "Output"))
    train = [enc.encode(x, target=TARGET, n_virtual=8, max_length=128) for x in _inputs(32, 0)]
    dev = [enc.encode(x, target=TARGET, n_virtual=8, max_length=128) for x in _inputs(8, 1)]
    cfg = TrainConfig(lr=0.3, max_steps=60, warmup_steps=2, batch_size=8, eval_every=20, max_length=128)
    res = train_prompt(model, init_prompt(model, 8, "vocab", seed=0), train, dev, cfg, 0, tok.pad_token_id,
                       torch.device("cpu"))
    losses = [r["loss"] for r in res.log]
    assert losses[-1] < 0.25 * losses[0]
    assert res.best_dev_loss < 1.0 and res.best_step in (20, 40, 60)
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k  # bit-identical
    assert all(not p.requires_grad for p in model.parameters())
    rows = [enc.encode(x, n_virtual=8, max_length=128, max_new_tokens=12).ids for x in _inputs(4, 2)]
    assert generate_texts(model, tok, res.best_prompt, rows, 12, batch_size=4) == [TARGET] * 4
    new = greedy_generate(model, res.best_prompt, rows, 12, tok.pad_token_id, stop_token_ids(tok))
    assert all(len(n) < 12 and "\n" in tok.decode(n[-1:]) for n in new)  # stopped at the newline


@pytest.mark.parametrize("arch", ARCHS)
def test_fast_target_loss_equals_full_forward(arch):
    model, tok = load(arch)
    enc = Encoder(tok, Template("Input", "Output"))
    exs = [enc.encode(x, [("a dog", "the dog.")] * (i % 2), target=f"the {x}.", n_virtual=3, max_length=128)
           for i, x in enumerate(_inputs(3, 5))]
    batch = make_batch(exs, tok.pad_token_id)
    prompt = init_prompt(model, 3, "vocab", seed=0)
    loss, n = batch_loss_sum(model, prompt, batch)
    e, a, p = assemble_inputs(model, prompt, batch.input_ids, batch.token_mask)
    labels = torch.cat([torch.full((len(exs), 3), IGNORE), batch.labels], dim=1)
    with torch.no_grad():
        logits = lm_forward(model, e, a, p).logits
    ref = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                            ignore_index=IGNORE, reduction="sum")
    assert n == batch.n_target
    torch.testing.assert_close(loss, ref, atol=1e-4, rtol=1e-6)


def test_bucketed_sampler_is_a_seeded_permutation_with_less_padding():
    rng = random.Random(0)
    lengths = [rng.randint(5, 200) for _ in range(400)]
    b = epoch_batches(lengths, 8, seed=1, epoch=0, bucket=True)
    assert b == epoch_batches(lengths, 8, seed=1, epoch=0, bucket=True)
    assert b != epoch_batches(lengths, 8, seed=1, epoch=1, bucket=True)
    assert sorted(i for x in b for i in x) == list(range(400))
    plain = epoch_batches(lengths, 8, seed=1, epoch=0, bucket=False)

    def padding(batches):
        return sum(len(x) * max(lengths[i] for i in x) - sum(lengths[i] for i in x) for x in batches)

    assert padding(b) < 0.2 * padding(plain)


def test_grad_accumulation_matches_a_big_batch():
    model, tok = load("gpt2")
    enc = Encoder(tok, Template("Input", "Output"))
    train = [enc.encode(x, target="the cat.", n_virtual=2, max_length=64) for x in _inputs(16, 3)]
    init = init_prompt(model, 2, "vocab", seed=0)
    kw = dict(lr=0.01, max_steps=1, warmup_steps=0, eval_every=100, bucket_by_length=False, max_grad_norm=0.0)
    big = train_prompt(model, init, train, train[:2], TrainConfig(batch_size=8, grad_accum=1, **kw), 0,
                       tok.pad_token_id, torch.device("cpu"))
    acc = train_prompt(model, init, train, train[:2], TrainConfig(batch_size=4, grad_accum=2, **kw), 0,
                       tok.pad_token_id, torch.device("cpu"))
    torch.testing.assert_close(big.final_prompt, acc.final_prompt, atol=1e-6, rtol=0)
    assert big.log[0]["target_tokens"] == acc.log[0]["target_tokens"]
    torch.testing.assert_close(big.log[0]["loss"], acc.log[0]["loss"], atol=1e-5, rtol=0)


def test_adafactor_preset_runs_with_a_constant_rate():
    model, tok = load("gpt2")
    enc = Encoder(tok, Template("Input", "Output"))
    train = [enc.encode(x, target="the cat.", n_virtual=2, max_length=64) for x in _inputs(8, 3)]
    cfg = TrainConfig(optimizer="adafactor", lr=0.3, max_steps=4, warmup_steps=0, batch_size=4, eval_every=2)
    res = train_prompt(model, init_prompt(model, 2, "vocab", seed=0), train, train[:2], cfg, 0, tok.pad_token_id,
                       torch.device("cpu"))
    assert [r["lr"] for r in res.log] == [0.3] * 4
    assert not torch.equal(res.final_prompt, init_prompt(model, 2, "vocab", seed=0))


# ---- the whole job: files, resume --------------------------------------------------------------------
def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_job_files(folder):
    """A training job's files in `folder`: train / dev JSONL and their retrieval files (the top demo is the row
    itself, then two seeded random train rows)."""
    train = [{"id": f"tr{i}", "split": "train", "input": x, "target": f"the {x}.", "references": [f"the {x}."],
              "meta": {}} for i, x in enumerate(_inputs(24, 7))]
    dev = [{"id": f"dv{i}", "split": "dev", "input": x, "target": f"the {x}.", "references": [f"the {x}."],
            "meta": {}} for i, x in enumerate(_inputs(6, 8))]
    _write(folder / "train.jsonl", train)
    _write(folder / "dev.jsonl", dev)
    rng = random.Random(0)
    for split, rows in (("train", train), ("dev", dev)):
        _write(folder / f"ret_{split}.jsonl",
               [{"id": r["id"], "demo_ids": [r["id"]] + rng.sample([t["id"] for t in train], 2),
                 "scores": [1.0, 0.5, 0.2], "retriever": "dense", "config": {}} for r in rows])
    return folder


@pytest.fixture()
def job_files(tmp_path):
    return write_job_files(tmp_path)


def _base_params():
    return {"task": "dart", "model": "tiny", "method": "ipt", "length": 3, "demos": "retrieved", "seed": 1,
         "n_demos": 1, "input_label": "Triples", "output_label": "Text",
         "prompt": {"init": "vocab", "init_vocab_size": 100, "init_text": None, "init_file": None},
         "train": {"lr": 0.05, "max_steps": 7, "warmup_steps": 2, "batch_size": 4, "eval_every": 3,
                   "checkpoint_every": 2, "dev_examples": 4, "max_length": 96},
         "device": "cpu", "precision": "fp32"}


def _params(**over):
    return {**_base_params(), **over}


def _run(d, out, ckpt, **kw):
    return train_job(model_path=tiny_model_dir("gpt2"), train_path=str(d / "train.jsonl"),
                     dev_path=str(d / "dev.jsonl"), train_retrieval=str(d / "ret_train.jsonl"),
                     dev_retrieval=str(d / "ret_dev.jsonl"), out_dir=out, params=_params(), checkpoint_root=ckpt,
                     **kw)


def test_train_job_files_and_exact_resume(job_files):
    from peft import PeftModel

    from iclpt.engine.soft_prompt import load_prompt

    d = job_files
    full = _run(d, d / "full", d / "ckpt_full")
    assert sorted(p.name for p in (d / "full").iterdir()) == ["meta.json", "peft", "prompt.safetensors",
                                                               "train_log.jsonl"]
    assert sorted(p.name for p in (d / "full" / "peft").iterdir()) == ["adapter_config.json",
                                                                        "adapter_model.safetensors"]
    assert not any((d / "ckpt_full").iterdir())  # checkpoint removed once the outputs exist
    meta = json.loads((d / "full" / "meta.json").read_text())
    assert meta["steps"] == 7 and meta["best_step"] in (3, 6, 7) and meta["resumed_from_step"] == 0
    assert meta["provenance"]["params"]["train"]["max_steps"] == 7 and "torch" in meta["provenance"]["versions"]
    log = [json.loads(x) for x in (d / "full" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 8))
    assert [r["step"] for r in log if "dev_loss" in r] == [3, 6, 7]
    assert min(r["dev_loss"] for r in log if "dev_loss" in r) == meta["best_dev_loss"]

    # "killed" after step 5: the last checkpoint is step 4; the rerun resumes there and ends identically
    with pytest.raises(TrainingInterrupted):
        _run(d, d / "resumed", d / "ckpt", stop_after=5)
    assert not (d / "resumed" / "prompt.safetensors").exists()
    (state,) = list((d / "ckpt").glob("*/state.pt"))
    assert torch.load(state, weights_only=False)["step"] == 4
    res = _run(d, d / "resumed", d / "ckpt")
    assert res["resumed_from_step"] == 4
    a, _ = load_prompt(d / "full" / "prompt.safetensors")
    b, _ = load_prompt(d / "resumed" / "prompt.safetensors")
    assert torch.equal(a, b)
    log2 = [json.loads(x) for x in (d / "resumed" / "train_log.jsonl").read_text().splitlines()]
    assert log2 == log
    assert res["best_dev_loss"] == full["best_dev_loss"]

    # a different job (other seed) never picks up this job's checkpoint
    with pytest.raises(TrainingInterrupted):
        _run(d, d / "x", d / "ckpt2", stop_after=3)
    other = train_job(model_path=tiny_model_dir("gpt2"), train_path=str(d / "train.jsonl"),
                      dev_path=str(d / "dev.jsonl"), train_retrieval=str(d / "ret_train.jsonl"),
                      dev_retrieval=str(d / "ret_dev.jsonl"), out_dir=d / "y", params=_params(seed=2),
                      checkpoint_root=d / "ckpt2")
    assert other["resumed_from_step"] == 0

    # the PEFT export is the saved prompt and loads in PEFT
    model, tok = load("gpt2")
    pm = PeftModel.from_pretrained(model, str(d / "full" / "peft"))
    torch.testing.assert_close(pm.prompt_encoder["default"].embedding.weight.detach(), a)


def test_layout_comes_from_n_demos_and_the_retrieval_files(job_files):
    d = job_files
    kw = dict(model_path=tiny_model_dir("gpt2"), train_path=str(d / "train.jsonl"), dev_path=str(d / "dev.jsonl"),
              out_dir=d / "o")
    ret = dict(train_retrieval=str(d / "ret_train.jsonl"), dev_retrieval=str(d / "ret_dev.jsonl"))
    with pytest.raises(ValueError, match="without demos"):  # n_demos 0: no retrieval files
        train_job(**kw, **ret, params=_params(n_demos=0, demos="none"))
    with pytest.raises(ValueError, match="without demos"):  # n_demos 0 with a demo source
        train_job(**kw, params=_params(n_demos=0))
    with pytest.raises(ValueError, match="retrieval"):  # n_demos > 0 needs both retrieval files
        train_job(**kw, params=_params())
    with pytest.raises(ValueError, match="retrieval"):
        train_job(**kw, train_retrieval=ret["train_retrieval"], params=_params())
    with pytest.raises(ValueError, match="n_demos"):
        train_job(**kw, **ret, params={k: v for k, v in _params().items() if k != "n_demos"})
    # the method is a label only: an unknown name trains the bare-query layout when n_demos is 0
    short = {**_base_params()["train"], "max_steps": 2, "eval_every": 2}
    meta = train_job(**kw, params=_params(method="some_registry_method", n_demos=0, demos="none", train=short))
    assert meta["method"] == "some_registry_method" and meta["n_demos"] == 0 and meta["steps"] == 2
    assert meta["truncation"]["train"]["n"] == 24


def test_checkpoint_key_hashes_params_and_file_contents(tmp_path):
    from iclpt.engine.checkpoint import checkpoint_key, file_fingerprint, load_checkpoint, save_checkpoint

    f = tmp_path / "a.jsonl"
    f.write_text("x\n")
    k = checkpoint_key({"seed": 1}, [f])
    assert k == checkpoint_key({"seed": 1}, [f]) and len(k) == 24
    assert k != checkpoint_key({"seed": 2}, [f])
    f.write_text("y\n")
    assert k != checkpoint_key({"seed": 1}, [f])
    assert file_fingerprint(tmp_path / "missing") == f"absent:{tmp_path / 'missing'}"
    assert load_checkpoint(tmp_path / "ck" / "state.pt") is None
    save_checkpoint(tmp_path / "ck" / "state.pt", {"step": 3})
    assert load_checkpoint(tmp_path / "ck" / "state.pt") == {"step": 3}
    assert [p.name for p in (tmp_path / "ck").iterdir()] == ["state.pt"]  # no temporary file left


_KILL_SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
import iclpt.engine.training as T
import test_training as TT
_orig = T.batch_loss_sum
def slow(*a, **k):
    time.sleep(0.03)  # slow steps so that the parent can kill the job mid-run
    return _orig(*a, **k)
T.batch_loss_sum = slow
TT.tiny_model_dir = lambda *a, **k: {model!r}  # the parent's model folder (same checkpoint key)
TT._params = lambda **o: TT._long_params()
from pathlib import Path
d = Path({d!r})
TT._run(d, d / "killed", d / "ckpt_kill")
"""


def _long_params(**over):
    base = _base_params()
    return {**base, "train": {**base["train"], "max_steps": 40, "checkpoint_every": 5, "eval_every": 10}, **over}


def test_killed_subprocess_resumes_to_the_same_prompt(job_files, monkeypatch):
    """A real SIGKILL mid-run; the rerun continues from the last checkpoint and matches an uninterrupted run."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from iclpt.engine.soft_prompt import load_prompt

    d = job_files
    monkeypatch.setattr(sys.modules[__name__], "_params", _long_params)
    script = _KILL_SCRIPT.format(tests=str(Path(__file__).parent), d=str(d), model=tiny_model_dir("gpt2"))
    proc = subprocess.Popen([sys.executable, "-c", script])
    kill_at_checkpoint(proc, d / "ckpt_kill", min_step=10, timeout=120)
    assert proc.returncode == -signal.SIGKILL, "the child finished before it could be killed"
    assert not (d / "killed" / "prompt.safetensors").exists()
    resumed = _run(d, d / "killed", d / "ckpt_kill")
    assert 10 <= resumed["resumed_from_step"] < 40
    _run(d, d / "straight", d / "ckpt_straight")
    a, _ = load_prompt(d / "killed" / "prompt.safetensors")
    b, _ = load_prompt(d / "straight" / "prompt.safetensors")
    assert torch.equal(a, b)
    assert (d / "killed" / "train_log.jsonl").read_text() == (d / "straight" / "train_log.jsonl").read_text()


def test_bf16_autocast_trains_and_decodes_on_cpu():
    model, tok = load("opt")
    enc = Encoder(tok, Template("Input", "Output"))
    train = [enc.encode(x, target="the cat.", n_virtual=2, max_length=64) for x in _inputs(8, 3)]
    cfg = TrainConfig(lr=0.05, max_steps=2, warmup_steps=0, batch_size=4, eval_every=2)
    res = train_prompt(model, init_prompt(model, 2, "vocab", seed=0), train, train[:2], cfg, 0, tok.pad_token_id,
                       torch.device("cpu"), precision="bf16")
    assert res.final_prompt.dtype == torch.float32 and torch.isfinite(torch.tensor(res.best_dev_loss))
    out = greedy_generate(model, res.final_prompt, [train[0].ids[:-train[0].n_target]], 4, tok.pad_token_id,
                          precision="bf16")
    assert len(out[0]) == 4


def test_demos_exclude_the_query_itself():
    from iclpt.engine.prompting import build_examples

    _, tok = load("gpt2")
    enc = Encoder(tok, Template("Input", "Output"))
    pool = {f"t{i}": {"id": f"t{i}", "input": f"in {i}", "target": f"out {i}"} for i in range(3)}
    ret = {"t0": {"id": "t0", "demo_ids": ["t0", "t2", "t1"], "scores": [1.0, 0.7, 0.3]}}
    (e,), stats = build_examples(enc, [pool["t0"]], ret, pool, n_demos=1, n_virtual=2, max_length=64)
    assert e.meta == {"demo_ids": ["t2"], "demo_scores": [0.7]}
    assert e.text == "Input: in 2\nOutput: out 2\n\nInput: in 0\nOutput:"
    assert stats["n"] == 1
