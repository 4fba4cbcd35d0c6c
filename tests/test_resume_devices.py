"""Resume across devices: a checkpoint key hashes the device and precision a job resolved to (a CPU checkpoint is
never resumed by a CUDA run, tested with a fake CUDA device), and the RNG state survives another visible-GPU
count."""

from __future__ import annotations

import json
import random

import pytest
import torch
from tiny_engine import tiny_model_dir

from iclpt.engine import training
from iclpt.engine.checkpoint import checkpoint_key, resolved_key_params, rng_state, set_rng_state
from iclpt.engine.training import load_train_inputs, train_job

WORDS = "red blue green cat dog bird tree house river city".split()


@pytest.fixture()
def files(tmp_path):
    rng = random.Random(3)
    for split, n in (("train", 16), ("dev", 4)):
        rows = []
        for i in range(n):
            x = " ".join(rng.choice(WORDS) for _ in range(4))
            rows.append({"id": f"{split}{i}", "split": split, "input": x, "target": f"the {x}.",
                         "references": [f"the {x}."], "meta": {}})
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def params(**over):
    p = {"task": "dart", "model": "tiny", "method": "pt", "length": 2, "demos": "none", "seed": 0, "n_demos": 0,
         "input_label": "Triples", "output_label": "Text",
         "prompt": {"init": "vocab", "init_vocab_size": 50, "init_text": None, "init_file": None},
         "train": {"lr": 0.05, "max_steps": 6, "warmup_steps": 1, "batch_size": 4, "eval_every": 3,
                   "checkpoint_every": 2, "dev_examples": 4, "max_length": 64},
         "device": "cpu", "precision": "auto"}
    return {**p, **over}


def job_kw(d, **over):
    return dict(model_path=tiny_model_dir("gpt2"), train_path=str(d / "train.jsonl"), dev_path=str(d / "dev.jsonl"),
                params=params(**over), checkpoint_root=str(d / "ckpt"))


def test_key_hashes_the_resolved_device_type_and_precision():
    base = params(device="auto", precision="auto")
    key = {(dev, prec): checkpoint_key(resolved_key_params(base, dev, prec), [])
           for dev in ("cpu", "cuda", "cuda:1") for prec in ("fp32", "bf16", "fp16")}
    assert key["cuda", "bf16"] == key["cuda:1", "bf16"], "another GPU of the job's kind resumes"
    assert len({key[d, p] for d in ("cpu", "cuda") for p in ("fp32", "bf16", "fp16")}) == 6
    # "auto" never reaches the key: an explicit cpu/fp32 job and an auto one that resolved to cpu/fp32 share it
    explicit = params(device="cpu", precision="fp32")
    assert checkpoint_key(resolved_key_params(explicit, "cpu", "fp32"), []) == key["cpu", "fp32"]


def _fake_cuda(monkeypatch, precision="bf16"):
    """load_job as it is, then the job claims CUDA: enough for the key, which is all load_train_inputs derives."""
    real = training.load_job

    def fake(*a, **kw):
        job = real(*a, **kw)
        job.device, job.precision = torch.device("cuda"), precision
        return job

    monkeypatch.setattr(training, "load_job", fake)


def test_a_cpu_checkpoint_is_never_resumed_by_a_cuda_run_and_the_reverse(files, monkeypatch):
    d = files
    with pytest.raises(training.TrainingInterrupted):
        train_job(out_dir=d / "cpu", stop_after=3, **job_kw(d))
    cpu_dir = load_train_inputs(**job_kw(d)).checkpoint_dir
    assert (cpu_dir / "state.pt").is_file()

    with monkeypatch.context() as m:
        _fake_cuda(m)
        cuda_dir = load_train_inputs(**job_kw(d)).checkpoint_dir
    assert cuda_dir != cpu_dir and not cuda_dir.exists(), "a CUDA run would have resumed the CPU checkpoint"

    # the reverse: a checkpoint that a CUDA run left is not resumed on the CPU
    cuda_dir.mkdir(parents=True)
    (cpu_dir / "state.pt").rename(cuda_dir / "state.pt")
    meta = train_job(out_dir=d / "cpu", **job_kw(d))
    assert meta["resumed_from_step"] == 0 and meta["ran_on"]["device"] == "cpu"
    assert meta["checkpoint_key"] == cpu_dir.name
    assert (cuda_dir / "state.pt").is_file()


def test_the_same_device_resumes(files):
    d = files
    with pytest.raises(training.TrainingInterrupted):
        train_job(out_dir=d / "a", stop_after=3, **job_kw(d))
    meta = train_job(out_dir=d / "a", **job_kw(d))
    assert meta["resumed_from_step"] == 2


def test_rng_state_holds_the_jobs_gpu_only_and_restores_with_another_gpu_count(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": torch.tensor([7], dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: pytest.fail("a state per visible GPU"))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, device="cuda": calls.append((s.tolist(), device)))
    state = rng_state(torch.device("cuda"))
    assert state["cuda"].tolist() == [7]
    set_rng_state(state, torch.device("cuda"))
    assert calls == [([7], torch.device("cuda"))]
    # written where 4 GPUs were visible (an older checkpoint: one state per GPU), resumed where 1 is
    calls.clear()
    old = {**rng_state(), "cuda": [torch.tensor([i], dtype=torch.uint8) for i in range(4)]}
    set_rng_state(old, torch.device("cuda"))
    assert calls == [([0], torch.device("cuda"))]
    calls.clear()
    set_rng_state(old, torch.device("cpu"))  # a CPU job leaves CUDA alone
    set_rng_state(old)
    assert calls == []
    assert "cuda" not in rng_state(torch.device("cpu"))
