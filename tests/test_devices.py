"""Devices without a GPU: the GPU lease on fake device lists (concurrent jobs, a killed holder, SLURM's
assignment), no silent CPU fallback, the precision `auto` resolves to, what outputs record of the device."""

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

from iclpt import devices
from iclpt.devices import DeviceError, Lease, gpu_candidates, job_device, lease_gpus
from iclpt.models.loading import resolve_precision

ROOT = Path(__file__).resolve().parents[1]
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def no_gpus() -> list[str]:
    return []


# ---- which GPUs a job may lease ------------------------------------------------------------------------------
@pytest.mark.parametrize("env, expected", [
    ({"ICLPT_GPUS": "4"}, ["0", "1", "2", "3"]),
    ({"ICLPT_GPUS": "0,2"}, ["0", "2"]),
    ({"ICLPT_GPUS": "0"}, []),
    ({"CUDA_VISIBLE_DEVICES": "1,3"}, ["1", "3"]),
    ({"CUDA_VISIBLE_DEVICES": ""}, []),
    ({"ICLPT_GPUS": "2", "CUDA_VISIBLE_DEVICES": "5"}, ["0", "1"]),  # the config's count wins
    ({"SLURM_JOB_ID": "7", "CUDA_VISIBLE_DEVICES": "2", "ICLPT_GPUS": "8"}, ["2"]),  # SLURM's assignment wins
    ({"SLURM_JOB_ID": "7", "SLURM_JOB_GPUS": "0-1"}, ["0", "1"]),
    ({"SLURM_JOB_ID": "7"}, []),
    ({}, ["0", "1", "2"]),  # the machine's
])
def test_gpu_candidates(env, expected):
    ids, source = gpu_candidates(env, detect=lambda: ["0", "1", "2"])
    assert ids == expected and source


def test_no_gpu_job_is_masked_from_every_gpu(tmp_path):
    env = {"ICLPT_GPU_LOCK_DIR": str(tmp_path)}
    lease = lease_gpus(0, env=env)
    assert lease.gpus == [] and env["CUDA_VISIBLE_DEVICES"] == ""
    assert not list(tmp_path.iterdir())


def test_lease_takes_free_gpus_in_order_and_sets_the_mask(tmp_path):
    env = {"ICLPT_GPUS": "3", "ICLPT_GPU_LOCK_DIR": str(tmp_path)}
    a = lease_gpus(1, env=env, wait_s=0)
    assert a.gpus == ["0"] and env["CUDA_VISIBLE_DEVICES"] == "0" and env["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    b = lease_gpus(2, env=env, wait_s=0)  # GPU 0 is held (flocks of two open files conflict, even in one process)
    assert b.gpus == ["1", "2"] and env["CUDA_VISIBLE_DEVICES"] == "1,2"
    with pytest.raises(DeviceError, match=rf"no 1 free GPU\(s\) of 3 .*pid {os.getpid()}"):
        lease_gpus(1, env=env, wait_s=0.2, detect=no_gpus)
    a.release()
    assert lease_gpus(1, env=env, wait_s=0).gpus == ["0"]
    b.release()


def test_slurm_assignment_is_used_as_it_is(tmp_path):
    env = {"SLURM_JOB_ID": "42", "CUDA_VISIBLE_DEVICES": "3", "ICLPT_GPU_LOCK_DIR": str(tmp_path)}
    lease = lease_gpus(1, env=env)
    assert lease.how == "slurm" and lease.gpus == ["3"] and env["CUDA_VISIBLE_DEVICES"] == "3"
    assert not list(tmp_path.iterdir()), "a scheduler-assigned GPU needs no lock"
    # an allocation with more GPUs than the job asks for (snakemake run locally inside salloc): leased within it
    env = {"SLURM_JOB_ID": "43", "CUDA_VISIBLE_DEVICES": "4,5"}
    assert devices.lock_dir(env).name.endswith("-slurm43")
    env["ICLPT_GPU_LOCK_DIR"] = str(tmp_path)
    lease = lease_gpus(1, env=env, wait_s=0)
    assert lease.how == "lease" and lease.gpus == ["4"] and env["CUDA_VISIBLE_DEVICES"] == "4"
    lease.release()


def test_too_few_gpus_fails_at_once_naming_what_was_found():
    t0 = time.monotonic()
    with pytest.raises(DeviceError, match=r"asks for 1 GPU\(s\).*offers 0: none.*will not run on the CPU"):
        lease_gpus(1, env={}, detect=no_gpus)
    with pytest.raises(DeviceError, match=r"asks for 2 GPU\(s\).*SLURM allocation.*offers 1"):
        lease_gpus(2, env={"SLURM_JOB_ID": "1", "CUDA_VISIBLE_DEVICES": "0"})
    assert time.monotonic() - t0 < 1


_HOLDER = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, {src!r})
    from iclpt.devices import lease_gpus
    env = {{"ICLPT_GPUS": "{gpus}", "ICLPT_GPU_LOCK_DIR": {locks!r}}}
    lease = lease_gpus(1, env=env, wait_s=60, poll_s=0.05)
    t0 = time.time()
    print("leased", flush=True)
    time.sleep({hold})
    print(json.dumps({{"gpu": lease.gpus[0], "mask": env["CUDA_VISIBLE_DEVICES"], "start": t0, "end": time.time()}}))
""")


def _holder(tmp_path, gpus="2", hold=0.6):
    code = _HOLDER.format(src=str(ROOT / "src"), gpus=gpus, locks=str(tmp_path / "locks"), hold=hold)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def test_concurrent_jobs_never_share_a_gpu(tmp_path):
    """Five jobs, two fake GPUs: at most one job per GPU at any time, both GPUs used, every job ran."""
    procs = [_holder(tmp_path) for _ in range(5)]
    spans = [json.loads(p.communicate(timeout=60)[0].splitlines()[-1]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert {s["gpu"] for s in spans} == {"0", "1"}
    assert all(s["mask"] == s["gpu"] for s in spans)
    for gpu in ("0", "1"):
        on = sorted((s["start"], s["end"]) for s in spans if s["gpu"] == gpu)
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(on, on[1:])), (gpu, on)


def test_a_killed_holder_frees_its_gpu(tmp_path):
    proc = _holder(tmp_path, gpus="1", hold=600)
    try:
        assert proc.stdout.readline().strip() == "leased"
        env = {"ICLPT_GPUS": "1", "ICLPT_GPU_LOCK_DIR": str(tmp_path / "locks")}
        with pytest.raises(DeviceError, match=f"pid {proc.pid}"):
            lease_gpus(1, env=env, wait_s=0.2, poll_s=0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        lease = lease_gpus(1, env=env, wait_s=5, poll_s=0.05)
        assert lease.gpus == ["0"]
        lease.release()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()


# ---- no silent fallback ------------------------------------------------------------------------------------------
def test_job_device_follows_the_gpu_request():
    none = Lease([], "none")
    assert job_device("auto", none) == "cpu"
    assert job_device("cpu", Lease(["0"], "lease")) == "cpu"
    with pytest.raises(DeviceError, match="device: cuda, but this job asks for no GPU"):
        job_device("cuda", none)
    with pytest.raises(ValueError, match="unknown device"):
        job_device("gpu", none)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the failure where no CUDA device exists")
def test_a_gpu_job_without_cuda_fails_instead_of_running_on_the_cpu():
    with pytest.raises(DeviceError, match=r"asks for 1 GPU\(s\) but torch sees 0 CUDA device.*rather than run on"):
        job_device("auto", Lease(["0"], "lease", "ICLPT_GPUS=1"))
    from iclpt.models.loading import resolve_device

    with pytest.raises(DeviceError, match="torch sees 0 CUDA device"):
        resolve_device("cuda")
    assert resolve_device("auto") == CPU


def test_lease_refuses_after_cuda_started(monkeypatch):
    monkeypatch.setattr(devices, "_cuda_started", lambda: True)
    with pytest.raises(RuntimeError, match="before CUDA initialises"):
        lease_gpus(1)


# ---- precision ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("capability, expected", [((7, 0), "fp16"), ((7, 5), "fp16"), ((8, 0), "bf16"),
                                                  ((8, 9), "bf16"), ((9, 0), "bf16")])
def test_auto_precision_uses_bf16_only_where_the_gpu_has_it(capability, expected):
    assert resolve_precision("auto", CUDA, capability=capability) == expected
    for p in ("fp32", "bf16", "fp16"):
        assert resolve_precision(p, CUDA, capability=capability) == p


def test_cpu_precisions():
    assert resolve_precision("auto", CPU) in ("bf16", "fp32")
    assert resolve_precision("fp32", CPU) == "fp32"
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", CPU)
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("fp8", CPU)


def test_config_check_rejects_fp16_on_the_cpu():
    from iclpt.orchestration.config_checks import device_settings

    assert device_settings({"device": "cpu", "precision": "fp16"})
    assert not device_settings({"device": "auto", "precision": "fp16"})


def test_fp16_training_scales_the_loss_and_skips_an_overflowing_step():
    """fp16 autocast (the CPU runs it too, slowly): the prompt and its optimizer state stay float32, the loss is
    scaled, and a step whose scaled gradient overflows leaves the prompt alone and halves the scale."""
    from tiny_engine import load

    from iclpt.engine.prompting import Encoder, Template
    from iclpt.engine.soft_prompt import init_prompt
    from iclpt.engine.training import TrainConfig, TrainRun, start_training, train_step

    model, tok = load("gpt2")
    enc = Encoder(tok, Template("Input", "Output"))
    rows = [enc.encode(f"red cat {i}", target="the dog.", n_virtual=2, max_length=64) for i in range(8)]
    run = TrainRun(model, rows, rows[:2], TrainConfig(max_steps=4, warmup_steps=0, batch_size=4, lr=0.05),
                   int(tok.pad_token_id), CPU, "fp16")
    st = start_training(run, init_prompt(model, 2, init="random", seed=0), seed=0)
    assert st.scaler is not None and st.prompt.dtype == torch.float32
    st.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)  # scaled fp16 gradients overflow
    before = st.prompt.detach().clone()
    row = train_step(run, st)
    assert row["loss_scale"] == 2.0**127 and torch.equal(st.prompt.detach(), before)
    assert st.scaler.get_scale() < 2.0**127
    st.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    row = train_step(run, st)
    assert not torch.equal(st.prompt.detach(), before) and row["loss_scale"] == 1024.0
    assert all(v.dtype == torch.float32 for s in st.opt.state.values() for v in s.values() if v.is_floating_point())


# ---- a Snakemake run that asks for GPUs on a machine without any -------------------------------------------------
@pytest.mark.skipif(devices.machine_gpus() != [], reason="checks a machine without GPUs")
def test_gpu_run_without_gpus_fails_clearly(tmp_path):
    """`--resources gpu=2` with GPU rules on a machine without GPUs: the GPU job fails at once, naming why,
    before it loads anything; nothing runs on the CPU."""
    import yaml
    from workflow_helpers import copy_repo, env, write_config

    work = copy_repo(tmp_path / "w")
    cfg = yaml.safe_load((ROOT / "config" / "tiny.yaml").read_text())
    cfg.update(run="gpu", device="auto", precision="auto", tasks={"mtop": cfg["tasks"]["mtop"]},
               models={"tiny-gpt2": cfg["models"]["tiny-gpt2"]})
    cfg["resources"] = {"default": {"mem_mb": 1000, "runtime": 10, "threads": 1},
                        "predict": {"gpu": 1}, "train_prompt": {"gpu": 1}}
    conf = write_config(work, cfg)
    e = env()
    for k in ("CUDA_VISIBLE_DEVICES", "ICLPT_GPUS", "SLURM_JOB_ID"):
        e.pop(k, None)
    target = "results/gpu/predictions/mtop/tiny-gpt2/zeroshot/L0/none/s0/predictions.jsonl"
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "snakemake", target, "--cores", "2", "--resources", "gpu=2",
                        "--configfile", str(conf)], cwd=work, env=e, text=True, capture_output=True,
                       timeout=900)
    assert r.returncode != 0, r.stdout[-3000:] + r.stderr[-3000:]
    log = (work / "results/gpu/logs/predict/mtop/tiny-gpt2/zeroshot/L0/none/s0.log").read_text()
    assert "asks for 1 GPU(s)" in log and "will not run on the CPU" in log, log
    assert "test examples" not in log, "the job loaded its model before failing"
    assert not (work / target).exists()
    print(f"failed in {time.monotonic() - t0:.1f} s")


def test_config_check_rejects_a_revision_on_a_model_that_is_no_hub_id(tmp_path):
    from tiny_engine import tiny_model_dir

    from iclpt.orchestration.config_checks import model_sources

    found = model_sources({"models": {"local": {"path": tiny_model_dir("gpt2"), "revision": "abc"},
                                      "tiny": {"build": {"architecture": "gpt2"}, "revision": "abc"},
                                      "hub": {"path": "org/name", "revision": "abc"}}})
    assert len(found) == 2 and "local folder" in found[0] and "build / gguf" in found[1]


def test_a_cpu_job_leases_nothing_even_where_its_rule_asks_for_a_gpu(monkeypatch):
    """device: cpu with resources gpu: 1 (the SLURM profile gives train_prompt a GPU; config/tiny.yaml runs on the
    CPU): no lease, no GPU visible, even in a SLURM job that was assigned none."""
    monkeypatch.setenv("SLURM_JOB_ID", "9")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    device, lease = devices.job_setup("cpu", 1)
    assert device == "cpu" and lease.gpus == [] and os.environ["CUDA_VISIBLE_DEVICES"] == ""
