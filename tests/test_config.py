"""Config validation: every shipped config is valid; bad configs stop at parse time naming the key."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / "config" / name).read_text())


ALL_TASKS = {"totto", "dart", "logic2text", "spider", "mtop"}
SHIPPED = {"config.yaml": ("paper", ALL_TASKS), "tiny.yaml": ("tiny", ALL_TASKS), "sample.yaml": ("sample", ALL_TASKS),
           "demo.yaml": ("demo", {"mtop", "dart"}), "gemma.yaml": ("gemma", {"mtop", "dart"}),
           "mini.yaml": ("mini", {"mtop", "dart"})}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_configs_validate(name):
    cfg = load(name)
    validate(cfg, str(SCHEMA))
    run, tasks = SHIPPED[name]
    assert cfg["run"] == run and set(cfg["tasks"]) == tasks


def test_defaults_are_filled_in():
    cfg = {"run": "x", "tasks": {"mtop": {"files": {"train": "a", "dev": "b", "test": "c"}}},
           "models": {"m": {"path": "gpt2"}}}
    validate(cfg, str(SCHEMA))
    assert cfg["seeds"] == [0, 1, 2, 3, 4]
    assert cfg["methods"] == ["zeroshot", "icl", "pt", "ipt"]
    assert cfg["train"]["optimizer"] == "adamw" and cfg["train"]["lr"] == 0.01
    assert cfg["prompt"]["length"] == 25 and cfg["prompt"]["lengths"] == [1, 5, 10, 25, 50, 100]
    assert cfg["retrieval"]["k"] == 8 and cfg["demos"]["n_demos"] == 1
    assert cfg["tasks"]["mtop"]["source"] == "local"
    assert cfg["tasks"]["mtop"]["missing_database"] == "error"


def test_paper_config_matches_protocol():
    cfg = load("config.yaml")
    validate(cfg, str(SCHEMA))
    assert sorted(cfg["methods"]) == ["icl", "ipt", "pt", "zeroshot"]
    assert len(cfg["seeds"]) == 5
    assert cfg["prompt"]["length"] == 25
    assert cfg["prompt"]["lengths"] == [1, 5, 10, 25, 50, 100]
    paths = {m["path"] for m in cfg["models"].values()}
    assert paths == {"bigscience/bloom-1b1", "facebook/opt-1.3b", "openai-community/gpt2-xl"}  # gpt2-xl's home now
    # every hub model and the hub encoder is pinned to a commit
    assert all(re.fullmatch(r"[0-9a-f]{40}", m["revision"]) for m in cfg["models"].values())
    assert re.fullmatch(r"[0-9a-f]{40}", cfg["retrieval"]["encoder_revision"])
    assert all(e for e in cfg["experiments"].values())


def _set(cfg: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    node = cfg
    for p in parents:
        node = node.setdefault(p, {})
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value


_DELETE = object()

# (change, text the error must contain: the offending key or value)
BAD = [
    ("run", _DELETE, "'run' is a required property"),
    ("tasks", _DELETE, "'tasks' is a required property"),
    ("models", _DELETE, "'models' is a required property"),
    ("tasks.wikisql", {"files": {"train": "a", "dev": "b", "test": "c"}}, "'wikisql' is not one of"),
    ("methods", ["icl", "lora"], "'lora' is not one of"),
    ("train.max_steps", -5, "-5 is less than the minimum"),
    ("train.lr", "fast", "'fast' is not of type 'number'"),
    ("seeds", "0,1", "'0,1' is not of type 'array'"),
    ("retrieval.k", 0, "0 is less than the minimum of 1"),
    ("retrieval.retrievers", ["dense", "splade"], "'splade' is not one of"),
    ("device", "tpu", "'tpu' is not one of"),
    ("precision", "fp8", "'fp8' is not one of"),
    ("trian", {"lr": 0.1}, "'trian' was unexpected"),
    ("tasks.mtop.files", {"train": "a", "dev": "b"}, "'test' is a required property"),
    ("tasks.mtop.max_examples", {"train": -1}, "-1 is less than the minimum of 1"),
    ("demos.n_demos", 0, "0 is less than the minimum of 1"),
    ("prompt.lengths", [5, -1], "-1 is less than the minimum of 1"),
    ("run", "a/b", "does not match"),
    ("models.tiny-gpt2", {"path": "gpt2", "build": {"architecture": "gpt2"}}, "is valid under each of"),
    ("models.tiny-gpt2", {"build": {"architecture": "mamba"}}, "'mamba' is not one of"),
    ("predict.batch_size", 0, "0 is less than the minimum of 1"),
    ("experiments.transfer", "yes", "'yes' is not of type 'boolean'"),
    ("tasks.spider.missing_database", "skip", "'skip' is not one of ['error', 'exclude']"),
    ("tasks.mtop.filez", {"train": "a"}, "'filez' was unexpected"),
    ("resources.predict.memory", 100, "'memory' was unexpected"),
    ("models.tiny-gpt2.build.hiden_size", 32, "'hiden_size' was unexpected"),
    ("train.lr", "1e-3", "'1e-3' is not of type 'number'"),  # YAML 1.1 reads 1e-3 as a string
]


@pytest.mark.parametrize("key,value,expected", BAD, ids=[b[0] + "=" + repr(b[1])[:20] for b in BAD])
def test_bad_config_is_rejected_naming_the_key(key, value, expected):
    cfg = load("tiny.yaml")
    _set(cfg, key, value)
    with pytest.raises(Exception) as exc:
        validate(copy.deepcopy(cfg), str(SCHEMA))
    msg = str(exc.value)
    assert expected in msg, msg
    # the message locates the offending value in the config
    leaf = key.split(".")[0]
    assert leaf in msg or "instance" in msg


@pytest.mark.parametrize(
    "key,value,expected",
    [("tasks.wikisql", {"files": {"train": "a", "dev": "b", "test": "c"}}, "'wikisql' is not one of"),
     ("train.max_steps", -5, "-5 is less than the minimum")],
)
def test_snakemake_stops_at_parse_time(tmp_path, key, value, expected):
    """The real Snakefile refuses the config before building any job (non-zero exit, message names the key)."""
    cfg = load("tiny.yaml")
    cfg["run"] = f"bad-config-{tmp_path.name}"
    _set(cfg, key, value)
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", str(cfg_file)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Error validating config file" in out
    assert expected in out, out[-3000:]
    assert not (ROOT / "results" / cfg["run"]).exists()  # parse-time: nothing scheduled, nothing written
    assert "Job stats" not in out
