"""Faults: a failing job under --keep-going keeps every other result; a killed run resumes its training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from workflow_helpers import ROOT, copy_repo, env, snakemake, write_config

pytestmark = pytest.mark.slow


def small_config(run: str, tasks: tuple[str, ...]) -> dict:
    cfg = yaml.safe_load((ROOT / "config" / "tiny.yaml").read_text())
    cfg["run"] = run
    cfg["tasks"] = {t: cfg["tasks"][t] for t in tasks}
    cfg["seeds"] = [0]
    cfg["prompt"]["lengths"] = [cfg["prompt"]["length"]]
    return cfg


def test_keep_going_keeps_the_other_tasks_results(tmp_path):
    work = copy_repo(tmp_path / "w")
    broken = work / "resources" / "demo_data" / "mtop" / "dev.json"
    lines = broken.read_text().splitlines()
    lines[3] = lines[3][:-5]  # truncate one JSON line
    broken.write_text("\n".join(lines) + "\n")
    cfg = small_config("kg", ("mtop", "dart"))
    path = write_config(work, cfg)
    res = work / "results" / "kg"
    targets = [f"results/kg/retrieval/{t}/dense/summary.json" for t in ("mtop", "dart")]
    proc = snakemake(work, "--cores", "2", "--keep-going", *targets, "--configfile", str(path), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "dev.json:4" in out, "the error names the broken file and line"
    # the broken task wrote nothing that looks complete; the other task finished
    assert not list((res / "data").glob("mtop/*.jsonl"))
    summary = json.loads((res / "retrieval" / "dart" / "dense" / "summary.json").read_text())
    assert summary
    assert len((res / "retrieval" / "dart" / "dense" / "test.jsonl").read_text().splitlines()) == 20


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=,ppid=,args=", "-e"], capture_output=True, text=True).stdout
    rows = [line.split(None, 2) for line in out.splitlines() if line.strip()]
    kids, frontier = [], {pid}
    while frontier:
        nxt = {int(p) for p, pp, *_ in rows if int(pp) in frontier}
        kids += sorted(nxt)
        frontier = nxt
    return kids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_killed_training_resumes_from_its_checkpoint(tmp_path):
    """SIGKILL the training job and SIGTERM Snakemake mid-training; --rerun-incomplete resumes and matches an
    uninterrupted run exactly."""
    cfg = small_config("resume", ("mtop",))
    cfg["train"].update(max_steps=400, checkpoint_every=20, eval_every=100, batch_size=4)
    target_rel = "results/resume/prompts/mtop/tiny-gpt2/pt/L4/none/s0/prompt.safetensors"

    ref = copy_repo(tmp_path / "ref")
    snakemake(ref, "--cores", "2", target_rel, "--configfile", str(write_config(ref, cfg)))

    work = copy_repo(tmp_path / "w")
    path = write_config(work, cfg)
    # everything before training first, so the kill lands inside train_prompt
    snakemake(work, "--cores", "2", "--until", "train_prompt", "--omit-from", "train_prompt", target_rel,
              "--configfile", str(path))
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "1", target_rel, "--configfile", str(path)],
                            cwd=work, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ckpt_root = work / "results" / "resume" / ".checkpoints"
    deadline = time.time() + 300
    killed = False
    while time.time() < deadline and proc.poll() is None:
        states = list(ckpt_root.rglob("*")) if ckpt_root.exists() else []
        if any(p.is_file() for p in states):
            for kid in _children(proc.pid):
                if "train_prompt" in _cmdline(kid):
                    os.kill(kid, signal.SIGKILL)
                    killed = True
            if killed:
                break
        time.sleep(0.2)
    assert killed, "training finished before a checkpoint could be observed"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    assert not (work / target_rel).exists(), "a killed job must not leave a complete-looking prompt"

    snakemake(work, "--cores", "2", "--rerun-incomplete", target_rel, "--configfile", str(path))
    meta = json.loads((work / target_rel).with_name("meta.json").read_text())
    assert meta.get("resumed_from_step", 0) > 0, meta
    assert (work / target_rel).read_bytes() == (ref / target_rel).read_bytes()
