"""Bad configs and bad inputs stop early, named, and never turn into results that look right (docs/errors.md).

One section per class of mistake: (1) the config, checked at parse time; (2) what a result depends on is in its
DAG; (3) exact data readers; (4) artefacts validated where they are read; (5) a failed stage leaves no output.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate
from test_config import SHIPPED
from workflow_helpers import ROOT, copy_repo, dry_run, snakemake, write_config

from iclpt import artifacts
from iclpt.data.prepare import prepare_task
from iclpt.data.tasks import get_task
from iclpt.io import DataError, read_json, read_jsonl
from iclpt.orchestration import config_checks

SCHEMA_FILE = ROOT / "workflow" / "schemas" / "config.schema.yaml"
SCHEMA = yaml.safe_load(SCHEMA_FILE.read_text())
RULES = config_checks.workflow_rules(ROOT)
DEMO = ROOT / "resources" / "demo_data"


def tiny(**changes) -> dict:
    """config/tiny.yaml with dotted-key changes, validated (defaults filled) with absolute data paths."""
    cfg = yaml.safe_load((ROOT / "config" / "tiny.yaml").read_text())
    cfg["data_root"] = str(DEMO)
    for key, value in changes.items():
        *parents, last = key.split("__")
        node = cfg
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    validate(cfg, str(SCHEMA_FILE))
    return cfg


def problems(cfg: dict, models_dir: Path | None = None) -> list[str]:
    return config_checks.config_problems(cfg, SCHEMA, RULES, models_dir)


def only(cfg: dict, models_dir: Path | None = None) -> str:
    found = problems(cfg, models_dir)
    assert len(found) == 1, found
    return found[0]


# ==== 1. the config: every mistake found at parse time, naming key, value and expectation =====================
def _merged(*names: str) -> dict:
    """Config files merged as `--configfile a b` merges them (nested mappings key by key)."""
    def merge(a: dict, b: dict) -> dict:
        return {**a, **{k: merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
                        for k, v in b.items()}}
    cfg: dict = {}
    for name in names:
        cfg = merge(cfg, yaml.safe_load((ROOT / "config" / name).read_text()))
    return cfg


@pytest.mark.parametrize("names", [(n,) for n in sorted(SHIPPED)] + [("mini.yaml", "mini_samples.yaml")],
                         ids=lambda n: "+".join(n))
def test_shipped_configs_pass_the_checks(names):
    if not all((ROOT / "config" / n).is_file() for n in names):
        pytest.skip(f"{names} not in this checkout")
    cfg = _merged(*names)
    if not os.path.isabs(cfg.get("data_root", "../shared/data")):
        cfg["data_root"] = str(ROOT / cfg.get("data_root", "../shared/data"))
    validate(cfg, str(SCHEMA_FILE))
    local = [t for t in cfg["tasks"].values() if t["source"] == "local"]
    if local and not Path(cfg["data_root"]).is_dir():
        pytest.skip(f"{'+'.join(names)} reads {cfg['data_root']}, absent here")
    assert problems(cfg, ROOT / "results" / cfg["run"] / "models") == []


def test_more_demos_than_stored_candidates():
    msg = only(tiny(demos__n_demos=5))
    assert msg.startswith("demos.n_demos = 5 is more than retrieval.k = 4, the candidates stored per query")
    assert problems(tiny(demos__n_demos=4)) == []
    # a config whose runs take no demos is not held to it (transfer runs take demos: off here)
    assert problems(tiny(demos__n_demos=5, methods=["zeroshot", "pt"], experiments__transfer=False)) == []


def test_a_methods_own_demo_count_is_held_to_the_stored_candidates(monkeypatch):
    from iclpt.orchestration import methods

    ipt = methods.METHODS["ipt"]
    monkeypatch.setitem(methods.METHODS, "ipt", dataclasses.replace(ipt, demo_count=6))
    msg = only(tiny(demos__n_demos=1))
    assert msg == ("method ipt takes 6 demos, more than retrieval.k = 4, the candidates stored per query; "
                   "expected retrieval.k >= 6")
    monkeypatch.setitem(methods.METHODS, "ipt", dataclasses.replace(ipt, demo_count=4))
    assert problems(tiny(demos__n_demos=1)) == []


def test_k_needs_more_train_examples_than_a_max_examples_limit_leaves():
    cfg = tiny(tasks__mtop__max_examples={"train": 4})
    assert only(cfg).startswith("retrieval.k = 4 needs more than tasks.mtop.max_examples.train = 4 train examples")


@pytest.mark.parametrize("key,value,first", [
    ("train__max_steps", 6.0, "train.max_steps = 6.0: expected an integer, got a float (write 6)"),
    ("tasks__mtop__max_examples", {"train": 12.0}, "tasks.mtop.max_examples.train = 12.0: expected an integer"),
    ("seeds", [0, 1.0], "seeds[1] = 1.0: expected an integer"),
    ("resources__train_prompt", {"mem_mb": 2000.0}, "resources.train_prompt.mem_mb = 2000.0: expected an integer"),
])
def test_integer_keys_that_get_floats(key, value, first):
    assert only(tiny(**{key: value})).startswith(first)


def test_float_in_a_model_build_block_and_numbers_elsewhere_are_fine():
    cfg = tiny()
    cfg["models"]["tiny-gpt2"]["build"]["hidden_size"] = 32.0
    assert only(cfg).startswith("models.tiny-gpt2.build.hidden_size = 32.0: expected an integer")
    assert problems(tiny(train__lr=1.0, score__exec_timeout_s=5)) == []  # number keys take either


def test_resources_rule_names_are_the_workflows_rules():
    msg = only(tiny(resources__train_promt={"mem_mb": 100}))
    assert msg.startswith("resources.train_promt: no rule is called 'train_promt'; expected 'default' or a rule")
    assert msg.endswith("did you mean 'train_prompt'?")
    assert problems(tiny(resources__predict={"gpu": 1}, resources__default={"threads": 1})) == []


def test_rule_names_are_those_snakemake_lists(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--list-rules", "--configfile", "config/tiny.yaml"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    listed = {line.split()[0] for line in proc.stdout.splitlines() if line.strip() and not line[0].isspace()}
    assert RULES == listed
    # the parser sees a new rule as soon as it is written
    (tmp_path / "workflow" / "rules").mkdir(parents=True)
    (tmp_path / "Snakefile").write_text("rule all:\n    input: []\n")
    (tmp_path / "workflow" / "rules" / "x.smk").write_text("rule new_one:\n    output: 'x'\ncheckpoint cp:\n")
    assert config_checks.workflow_rules(tmp_path) == {"all", "new_one", "cp"}


@pytest.mark.parametrize("key,value,expected", [
    ("tasks.mtop.filez", {}, "'filez' was unexpected"),
    ("models.tiny-gpt2.build.hiden_size", 32, "'hiden_size' was unexpected"),
    ("resources.predict.memory", 10, "'memory' was unexpected"),
    ("retrieval.top_k", 3, "'top_k' was unexpected"),
])
def test_unknown_keys_at_every_level(key, value, expected):
    cfg = yaml.safe_load((ROOT / "config" / "tiny.yaml").read_text())
    node = cfg
    *parents, last = key.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    with pytest.raises(Exception) as exc:
        validate(cfg, str(SCHEMA_FILE))
    assert expected in str(exc.value)


@pytest.mark.parametrize("path,start", [
    ("./models/gpt2", "models.hub.path = './models/gpt2': no such folder ("),
    ("/nonexistent/opt-1.3b", "models.hub.path = '/nonexistent/opt-1.3b': no such folder ("),
    ("org/name with space", "models.hub.path = 'org/name with space': is not a hub id"),
    ("a//b", "models.hub.path = 'a//b': no such folder"),
    ("org/-bad-", "models.hub.path = 'org/-bad-': is not a hub id"),
])
def test_model_paths_that_do_not_exist_and_malformed_hub_ids(path, start):
    cfg = tiny()
    cfg["models"]["hub"] = {"path": path}
    assert only(cfg).startswith(start)


def test_well_formed_hub_ids_pass():
    cfg = tiny()
    for i, hub in enumerate(("gpt2-xl", "facebook/opt-1.3b", "bigscience/bloom-1b1", "HuggingFaceTB/SmolLM2-135M")):
        cfg["models"][f"m{i}"] = {"path": hub}
    assert problems(cfg) == []


def _model_folder(d: Path, n_positions: int = 64) -> Path:
    """A folder with what a model folder holds: config.json, a valid safetensors file, a tokenizer."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_positions": n_positions}))
    header = json.dumps({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}).encode()
    (d / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    (d / "tokenizer.json").write_text("{}")
    return d


def test_local_model_folder_is_checked_at_parse_time(tmp_path):
    folder = _model_folder(tmp_path / "m", n_positions=1024)
    cfg = tiny(methods=["zeroshot"])
    cfg["models"] = {"local": {"path": str(folder)}}
    assert problems(cfg) == []
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:-5])  # a copy that stopped early
    msg = only(cfg)
    assert msg.startswith(f"models.local.path = '{folder}': model 'local': {folder}/model.safetensors is truncated")


def test_a_local_model_folder_is_an_input_of_its_jobs(tmp_path):
    folder = _model_folder(tmp_path / "m")
    assert artifacts.model_files(str(folder)) == [str(folder / "config.json"), str(folder / "model.safetensors")]
    assert artifacts.model_files("facebook/opt-1.3b") == []
    work = copy_repo(tmp_path / "w")
    cfg = yaml.safe_load((work / "config" / "tiny.yaml").read_text())
    cfg["models"] = {"local": {"path": str(_model_folder(tmp_path / "m", n_positions=1024))}}
    cfg["tasks"] = {"mtop": cfg["tasks"]["mtop"]}
    cfg["methods"] = ["zeroshot"]
    _, out = dry_run(work, write_config(work, cfg), "-p", "--until", "predict")
    assert f"input: {folder}/config.json, {folder}/model.safetensors, results/tiny/data/mtop/test.jsonl" in out, out


def test_token_budget_against_max_length_and_the_models_context(tmp_path):
    mtop = dict(tiny()["tasks"]["mtop"], max_new_tokens=16)
    msg = only(tiny(tasks={"mtop": mtop}, predict__max_length=100, prompt__lengths=[1, 90]))
    assert msg.startswith("predict: soft prompt 90 (prompt.length / prompt.lengths) + 16 new tokens "
                          "(tasks.mtop.max_new_tokens, or the task's default) + at least 3 template and input "
                          "tokens = 109 tokens do not fit predict.max_length = 100")
    assert problems(tiny(tasks={"mtop": mtop}, predict__max_length=100, prompt__lengths=[1, 80])) == []
    # training: the soft prompt must leave room for a query and a target within the tiny build's context
    cfg = tiny(prompt__lengths=[4], train__max_length=512, predict__max_length=512, methods=["pt"])
    cfg["models"]["tiny-gpt2"]["build"]["max_positions"] = 64
    cfg["prompt"]["length"] = 62
    found = problems(cfg)
    assert any(p.startswith("train: soft prompt 62 (prompt.length / prompt.lengths) + a 1-token target + at least "
                            "3 template and input tokens = 66 tokens do not fit model tiny-gpt2's context "
                            "(64 positions; train.max_length = 512)") for p in found), found


def test_context_of_a_local_folder_and_of_a_fetched_gguf_folder(tmp_path):
    cfg = tiny(methods=["zeroshot"], tasks={"mtop": tiny()["tasks"]["mtop"]})
    cfg["models"] = {"local": {"path": str(_model_folder(tmp_path / "m", n_positions=64))}}
    assert only(cfg).startswith("predict: soft prompt 0 (prompt.length / prompt.lengths) + 96 new tokens")
    demo = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg["models"] = {"smollm2-135m": demo["models"]["smollm2-135m"]}
    validate(cfg, str(SCHEMA_FILE))
    assert problems(cfg, tmp_path / "models") == []  # not fetched yet: context unknown, nothing to check
    _model_folder(tmp_path / "models" / "smollm2-135m", n_positions=64)
    assert "model smollm2-135m's context (64 positions" in only(cfg, tmp_path / "models")


def test_tiny_build_and_training_settings():
    cfg = tiny()
    cfg["models"]["tiny-gpt2"]["build"]["num_heads"] = 3
    assert only(cfg) == ("models.tiny-gpt2.build.hidden_size = 32 is not a multiple of "
                         "models.tiny-gpt2.build.num_heads = 3")
    assert only(tiny(train__warmup_steps=6)).startswith("train.warmup_steps = 6 is not below train.max_steps = 6")
    assert problems(tiny(train__warmup_steps=6, methods=["zeroshot", "icl"], experiments__transfer=False)) == []


@pytest.mark.parametrize("changes,first", [
    ({"prompt__init": "text"}, "prompt.init = 'text' needs prompt.init_text"),
    ({"prompt__init_text": "summarize"}, "prompt.init_text is set but prompt.init = 'vocab' ignores it"),
    ({"prompt__init": "file", "prompt__init_file": "no/such/prompt.safetensors"},
     "prompt.init_file = 'no/such/prompt.safetensors': file not found"),
])
def test_prompt_init_settings(changes, first):
    assert only(tiny(**changes)).startswith(first)


def test_data_files_that_do_not_exist(tmp_path):
    msg = only(tiny(tasks__mtop__files={"train": "mtop/trian.json", "dev": "mtop/dev.json", "test": "mtop/test.json"}))
    assert msg.startswith(f"tasks.mtop.files.train = 'mtop/trian.json': file not found: {DEMO}/mtop/trian.json "
                          "(did you mean train.json")
    # a file the reader needs beside the split file (Spider's tables.json)
    shutil.copytree(DEMO, tmp_path / "d")
    (tmp_path / "d" / "spider" / "tables.json").unlink()
    (tmp_path / "d" / "logic2text" / "train.sql").unlink()
    found = problems(tiny(data_root=str(tmp_path / "d")))
    assert f"tasks.spider.files.train = 'spider/train_spider.json': the spider reader also needs " \
           f"{tmp_path}/d/spider/tables.json, not found" in found
    assert f"tasks.logic2text.files.train = 'logic2text/train_lm.json': the logic2text reader also needs " \
           f"{tmp_path}/d/logic2text/train.sql, not found" in found
    assert only(tiny(data_root=str(tmp_path / "nowhere"), tasks={"mtop": tiny()["tasks"]["mtop"]})) == \
        f"tasks.mtop: data_root folder {tmp_path}/nowhere does not exist"


def test_download_tasks_are_checked_once_downloaded(tmp_path):
    cfg = tiny(tasks={"mtop": {"source": "download", "files": {"train": "a.txt", "dev": "b.txt", "test": "c.txt"}}},
               download_dir=str(tmp_path))
    assert problems(cfg) == []  # not downloaded yet: the download rule makes the files
    (tmp_path / "mtop").mkdir()
    (tmp_path / "mtop" / "manifest.json").write_text("{}")
    for name in ("a.txt", "b.txt"):
        (tmp_path / "mtop" / name).write_text("")
    assert only(cfg).startswith("tasks.mtop.files.test = 'c.txt': file not found")


def test_every_problem_is_reported_at_once():
    cfg = tiny(demos__n_demos=5, resources__embedd={"threads": 1})
    with pytest.raises(config_checks.ConfigError) as exc:
        config_checks.check_config(cfg, SCHEMA, RULES)
    lines = str(exc.value).splitlines()
    assert lines[0] == "2 problems in the config (nothing was run):"
    assert lines[1].startswith("config: resources.embedd: no rule is called 'embedd'")
    assert lines[2].startswith("config: demos.n_demos = 5 is more than retrieval.k = 4")


@pytest.mark.parametrize("change,first", [
    ({"demos": {"n_demos": 6}}, "config: demos.n_demos = 6 is more than retrieval.k = 4"),
    ({"resources": {"predcit": {"threads": 2}}}, "config: resources.predcit: no rule is called 'predcit'"),
    ({"train": {"max_steps": 6.0}}, "config: train.max_steps = 6.0: expected an integer"),
])
def test_snakemake_stops_before_any_job(tmp_path, change, first):
    """The real workflow: non-zero exit, the message's first line names the key, no results folder."""
    work = copy_repo(tmp_path / "w")
    cfg = yaml.safe_load((work / "config" / "tiny.yaml").read_text())
    cfg["run"] = "bad"
    for key, value in change.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    path = write_config(work, cfg)
    proc = snakemake(work, "--cores", "1", "--configfile", str(path), check=False, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "ConfigError" in out and first in out, out[-3000:]
    assert not (work / "results" / "bad").exists()


# ==== 2. what a result depends on is in its DAG ===================================================================
@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A copy of the repository with mtop and spider prepared (tiny config, two tasks)."""
    work = copy_repo(tmp_path_factory.mktemp("dag"))
    shutil.copytree(work / "resources/demo_data/mtop", work / "resources/demo_data/mtop_v2")
    cfg = yaml.safe_load((work / "config" / "tiny.yaml").read_text())
    cfg["tasks"] = {t: cfg["tasks"][t] for t in ("mtop", "spider")}
    path = write_config(work, cfg)
    snakemake(work, "--cores", "1", "--configfile", str(path), "--until", "prepare", timeout=600)
    return work, cfg


def _prepare_jobs(work: Path, cfg: dict) -> dict:
    counts, _ = dry_run(work, write_config(work, cfg, "changed.yaml"), "--until", "prepare")
    return dict(counts)


def test_nothing_changed_nothing_to_do(prepared):
    work, cfg = prepared
    assert _prepare_jobs(work, cfg) == {}


def test_a_changed_files_entry_reruns_that_tasks_prepare(prepared):
    work, cfg = prepared
    changed = copy.deepcopy(cfg)
    changed["tasks"]["mtop"]["files"]["train"] = "mtop_v2/train.json"
    assert _prepare_jobs(work, changed) == {"prepare": 1}


def test_new_content_with_an_old_mtime_reruns_prepare(prepared):
    work, cfg = prepared
    f = work / "resources/demo_data/mtop/dev.json"
    original, st = f.read_bytes(), f.stat()
    try:
        lines = original.decode().splitlines(keepends=True)
        f.write_bytes("".join(lines[1:] + lines[:1]).encode())  # same size, other content
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # restored from an old copy: mtime says nothing
        assert _prepare_jobs(work, cfg) == {"prepare": 1}
    finally:
        f.write_bytes(original)
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _prepare_jobs(work, cfg) == {}


def test_a_spider_test_database_that_disappears_reruns_prepare(prepared):
    work, cfg = prepared
    db = work / "resources/demo_data/spider/database/school_library"
    moved = db.with_name("school_library.away")
    db.rename(moved)
    try:
        assert _prepare_jobs(work, cfg) == {"prepare": 1}
    finally:
        moved.rename(db)


# ==== 3. data readers are exact ===================================================================================
_TSV = "1\tIN:CREATE_CALL\t5:8:SL:CONTACT\tcall Tom\tcalling\ten_XX\t[IN:CREATE_CALL [SL:CONTACT Tom ] ]\t{}\n"


@pytest.mark.parametrize("line,message", [
    (_TSV.replace("\ten_XX", ""), r"train.txt:2: expected 8 tab-separated MTOP columns \(id, intent, slots, "
                                  r"utterance, domain, locale, decoupled logical form, tokens JSON\), got 7"),
    (_TSV.replace("\t{}", "\t{}\textra"), r"train.txt:2: expected 8 tab-separated MTOP columns .*, got 9"),
    (_TSV.replace("1\tIN:CREATE_CALL\t", "1\t"), r"train.txt:2: expected 8 .*got 7"),
    ("\t".join(_TSV.split("\t")[:1] + ["calling"] + _TSV.split("\t")[2:]),
     r"train.txt:2: column 2 \(intent\) must start with 'IN:', got 'calling'"),
])
def test_mtop_tsv_column_count_and_places(tmp_path, line, message):
    p = tmp_path / "train.txt"
    p.write_text(_TSV + line)
    with pytest.raises(DataError, match=message):
        get_task("mtop").load("train", p)


@pytest.mark.parametrize("reader", ["jsonl", "json", "tsv", "lines"])
def test_invalid_utf8_names_file_and_line(tmp_path, reader):
    bad = "caf\xe9".encode("latin-1")
    if reader == "jsonl":
        p = tmp_path / "dev.json"
        line = b'{"question": "' + bad + b'", "logical_form": "x"}\n'
        p.write_bytes(b'{"question": "a", "logical_form": "[IN:A ]"}\n' + line)
        call = lambda: get_task("mtop").load("dev", p)  # noqa: E731
        where = f"{p}:2: not valid UTF-8 (byte 0xe9 at column {line.index(0xe9) + 1})"
    elif reader == "json":
        p = tmp_path / "dev.json"
        line = b' {"question": "q", "query": "SELECT 1", "db_id": "' + bad + b'"}\n'
        p.write_bytes(b'[\n' + line + b']\n')
        shutil.copy(DEMO / "spider/tables.json", tmp_path / "tables.json")
        call = lambda: get_task("spider").load("dev", p)  # noqa: E731
        where = f"{p}:2: not valid UTF-8 (byte 0xe9 at column {line.index(0xe9) + 1})"
    elif reader == "tsv":
        p = tmp_path / "test.txt"
        line = _TSV.replace("Tom", "T\udcffm").encode("utf-8", "surrogateescape")
        p.write_bytes(_TSV.encode() + line)
        call = lambda: get_task("mtop").load("test", p)  # noqa: E731
        where = f"{p}:2: not valid UTF-8 (byte 0xff at column {line.index(0xff) + 1})"
    else:
        for name in ("train_lm.json", "train.sql"):
            shutil.copy(DEMO / "logic2text" / name, tmp_path / name)
        p = tmp_path / "train.en"
        p.write_bytes((DEMO / "logic2text/train.en").read_bytes() + bad + b"\n")
        call = lambda: get_task("logic2text").load("train", tmp_path / "train_lm.json")  # noqa: E731
        n = len((DEMO / "logic2text/train.en").read_text().splitlines()) + 1
        where = f"{p}:{n}: not valid UTF-8 (byte 0xe9 at column 4)"
    with pytest.raises(DataError) as exc:
        call()
    assert str(exc.value).startswith(where), str(exc.value)
    assert "the file must be UTF-8 encoded" in str(exc.value)


def test_a_utf8_byte_order_mark_is_stripped_with_a_warning_naming_the_file(tmp_path, caplog):
    p = tmp_path / "dev.json"
    p.write_bytes(b"\xef\xbb\xbf" + (DEMO / "mtop/dev.json").read_bytes())
    with caplog.at_level(logging.WARNING, logger="iclpt.io"):
        assert read_jsonl(p) == read_jsonl(DEMO / "mtop/dev.json")
    assert [r.getMessage() for r in caplog.records if "byte-order mark" in r.getMessage()] == [
        f"{p}: a UTF-8 byte-order mark at the start of the file was removed (read as UTF-8 without it)"]
    q = tmp_path / "tables.json"
    q.write_bytes(b"\xef\xbb\xbf" + (DEMO / "spider/tables.json").read_bytes())
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="iclpt.io"):
        assert read_json(q) == read_json(DEMO / "spider/tables.json")
    assert any(str(q) in r.getMessage() and "byte-order mark" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="iclpt.io"):  # a file without one: no word
        read_json(DEMO / "spider/tables.json")
    assert not caplog.records


@pytest.mark.parametrize("task,name,content,message", [
    ("mtop", "dev.json", '{"question": "q", "logical_form": ["[IN:A ]"]}\n',
     r"dev.json: row 1: field 'logical_form' must be a string, got list"),
    ("mtop", "dev.json", '{"question": 42, "logical_form": "[IN:A ]"}\n',
     r"dev.json: row 1: field 'question' must be a string, got int"),
    ("spider", "dev.json", '[{"question": "q", "query": 7, "db_id": "school_library"}]',
     r"dev.json: row 0: field 'query' must be a string, got int"),
    ("dart", "dev.json", '[{"tripleset": [["a", "p", 3]], "annotations": [{"source": "s", "text": "t"}]}]',
     r"dev.json: entry 0: `tripleset` must be a list of \[subject, predicate, object\] strings"),
    ("dart", "dev.json", '[{"tripleset": [["a", "p", "b"]], "annotations": [{"source": "s", "text": 5}]}]',
     r"dev.json: entry 0: dart dev example dart-dev-00000: a reference must be a string, got int"),
    ("logic2text", "dev.json", '[{"topic": "t", "logic_str": {"f": 1}, "sent": "s"}]',
     r"dev.json: record 0: field 'logic_str' must be a string, got dict"),
    ("totto", "dev.jsonl", '{"table": [], "highlighted_cells": [], "example_id": 1, "sentence_annotations": "x"}\n',
     r"dev.jsonl:1: `sentence_annotations` must be a list of objects"),
])
def test_field_types(tmp_path, task, name, content, message):
    shutil.copy(DEMO / "spider/tables.json", tmp_path / "tables.json")
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=message):
        get_task(task).load("dev", tmp_path / name)


def _spider_with_missing_databases(tmp_path: Path, rows_without: tuple[int, ...] = (3, 5)) -> dict:
    """The demo Spider files; the test rows `rows_without` point at city_zoo (in tables.json, no database file)."""
    s = tmp_path / "spider"
    shutil.copytree(DEMO / "spider", s)
    rows = json.loads((s / "dev.json").read_text())
    for i in rows_without:
        rows[i]["db_id"] = "city_zoo"
    (s / "dev.json").write_text(json.dumps(rows))
    return {"train": s / "train_spider.json", "dev": s / "dev.json", "test": s / "dev.json"}


def test_spider_test_example_without_database_is_an_error_by_default(tmp_path):
    files = _spider_with_missing_databases(tmp_path)
    with pytest.raises(DataError) as exc:
        prepare_task("spider", files)
    assert str(exc.value).startswith(
        f"{files['test']}: row 3: the database of db_id 'city_zoo' is missing "
        f"({tmp_path}/spider/database/city_zoo/city_zoo.sqlite)")
    assert "tasks.spider.missing_database: exclude" in str(exc.value)


def test_spider_exclusion_is_counted_and_logged(tmp_path, caplog):
    files = _spider_with_missing_databases(tmp_path)
    excluded: dict = {}
    with caplog.at_level(logging.INFO):
        out = prepare_task("spider", files, missing_database="exclude", excluded=excluded)
    assert [e["id"] for e in excluded["test"]] == ["spider-test-00003", "spider-test-00005"]
    assert excluded["test"][0]["reason"].startswith("database missing: ")
    assert len(out["test"]) == 18 and all(r["meta"]["db_path"] for r in out["test"])
    # train and dev rows are never executed: the train rows of city_zoo are kept (and counted in the log)
    assert excluded["train"] == [] and len(out["train"]) == 32 and len(out["dev"]) == 20
    messages = [r.getMessage() for r in caplog.records]
    assert any("spider test: 2 example(s) left out of" in m for m in messages), messages
    assert any("train example(s) have no database" in m for m in messages), messages


def _prepare_script(repo_root: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("prepare_script", repo_root / "workflow/scripts/prepare.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_spider_exclusion_reaches_prepare_json_and_an_emptied_split_writes_nothing(tmp_path, repo_root):
    files = _spider_with_missing_databases(tmp_path)
    outs = {s: str(tmp_path / "out" / f"{s}.jsonl") for s in ("train", "dev", "test")}
    outs["summary"] = str(tmp_path / "out" / "prepare.json")
    params = {"task": "spider", "files": {k: str(v) for k, v in files.items()}, "max_examples": {}, "data_seed": 0,
              "source": "local", "missing_database": "exclude"}
    summary = _prepare_script(repo_root).run(params, outs)
    assert summary["excluded"] == json.loads(Path(outs["summary"]).read_text())["excluded"]
    assert summary["excluded"]["test"]["n"] == 2 and len(read_jsonl(outs["test"])) == 18
    shutil.rmtree(tmp_path / "out")
    files = _spider_with_missing_databases(tmp_path / "all", rows_without=tuple(range(20)))
    params["files"] = {k: str(v) for k, v in files.items()}
    with pytest.raises(DataError, match="spider test: no examples in"):  # every test row excluded: empty split
        _prepare_script(repo_root).run(params, outs)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_dart_train_entry_without_text_is_listed(tmp_path):
    entries = [{"tripleset": [["A", "p", "B"]], "annotations": [{"source": "s", "text": "A p B."}]},
               {"tripleset": [["C", "p", "D"]], "annotations": [{"source": "s", "text": " "}]}]
    (tmp_path / "t.json").write_text(json.dumps(entries))
    excluded: list = []
    recs = get_task("dart").load("train", tmp_path / "t.json", excluded=excluded)
    assert len(recs) == 1 and excluded == [{"id": "dart-train-00001", "reason": f"{tmp_path}/t.json: entry 1: "
                                                                           "no annotation text"}]


# ==== 4. artefacts validated where they are read ====================================================================
def test_model_folder_names_the_missing_or_truncated_file(tmp_path):
    d = _model_folder(tmp_path / "m")
    assert artifacts.check_model_dir(d, "m") == d
    (d / "tokenizer.json").unlink()
    with pytest.raises(DataError, match=r"model 'm': folder .*/m has no tokenizer \(expected one of tokenizer.json"):
        artifacts.check_model_dir(d, "m")
    d = _model_folder(tmp_path / "m2")
    (d / "config.json").write_text('{"model_type": "gp')
    with pytest.raises(DataError, match=r"m2/config.json is not valid JSON \(truncated or corrupt\?\)"):
        artifacts.check_model_dir(d)
    d = _model_folder(tmp_path / "m3")
    (d / "model.safetensors").rename(d / "model-00001-of-00002.safetensors")
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(DataError,
                       match=r"m3 is missing model-00002-of-00002.safetensors \(listed in model.safetensors"):
        artifacts.check_model_dir(d)
    with pytest.raises(DataError, match=r"model folder .*/absent does not exist"):
        artifacts.check_model_dir(tmp_path / "absent")


@pytest.mark.parametrize("cut", [3, 20, 1])
def test_truncated_safetensors(tmp_path, cut):
    d = _model_folder(tmp_path / "m")
    w = d / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[:cut] if cut < 8 else data[:-cut])
    with pytest.raises(DataError, match=r"model.safetensors is truncated"):
        artifacts.check_safetensors(w)


def test_load_model_on_a_truncated_real_model(tmp_path):
    from tiny_engine import tiny_model_dir

    from iclpt.models.loading import load_model

    d = tmp_path / "tiny"
    shutil.copytree(tiny_model_dir("gpt2"), d)
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-1000])
    with pytest.raises(DataError, match=rf"{w} is truncated: \d+ bytes, expected \d+"):
        load_model(str(d))
    with pytest.raises(DataError, match=r"model folder ./no/such/model does not exist"):
        load_model("./no/such/model")


def _split(n: int, split: str) -> list[dict]:
    return [{"id": f"mtop-{split}-{i:05d}", "input": f"in {i}", "target": f"out {i}", "references": [f"out {i}"]}
            for i in range(n)]


def _retrieval(path: Path, queries: list[dict], demos: list[list[str]]) -> str:
    path.write_text("".join(json.dumps({"id": q["id"], "demo_ids": d, "scores": [0.5] * len(d)}) + "\n"
                            for q, d in zip(queries, demos)))
    return str(path)


def test_retrieval_file_is_checked_against_its_split(tmp_path):
    from iclpt.engine.prompting import load_retrieval

    train, test = _split(4, "train"), _split(3, "test")
    pool = {r["id"]: r for r in train}
    ok = [["mtop-train-00001", "mtop-train-00002"]] * 3
    assert len(load_retrieval(_retrieval(tmp_path / "r.jsonl", test, ok), test, pool, 2, "test.jsonl")) == 3
    other_run = _split(4, "test")  # a file left from a run with more test examples
    path = _retrieval(tmp_path / "r.jsonl", other_run, ok + ok[:1])
    with pytest.raises(DataError, match=r"r.jsonl: id 'mtop-test-00003' is not an example of test.jsonl \(a "
                                        r"retrieval file from another run, task or data version\?\)"):
        load_retrieval(path, test, pool, 1, "test.jsonl")
    path = _retrieval(tmp_path / "r.jsonl", test[:2], ok)
    with pytest.raises(DataError, match=r"r.jsonl: no line for example 'mtop-test-00002' of test.jsonl"):
        load_retrieval(path, test, pool, 1, "test.jsonl")
    path = _retrieval(tmp_path / "r.jsonl", test, [["mtop-train-00001"], ["dart-train-00007"], ["mtop-train-00001"]])
    with pytest.raises(DataError, match=r"line of 'mtop-test-00001': demo id 'dart-train-00007' is not in train.jsonl"):
        load_retrieval(path, test, pool, 1, "test.jsonl", "train.jsonl")
    path = _retrieval(tmp_path / "r.jsonl", test, [["mtop-train-00001"]] * 3)
    with pytest.raises(DataError, match=r"line of 'mtop-test-00000' lists 1 usable demo\(s\), fewer than n_demos = 2"):
        load_retrieval(path, test, pool, 2, "test.jsonl")
    # a train query's own id does not count as a demo
    path = _retrieval(tmp_path / "r.jsonl", train, [[r["id"], "mtop-train-00003"] for r in train])
    with pytest.raises(DataError, match=r"line of 'mtop-train-00000' lists 1 usable demo"):
        load_retrieval(path, train, pool, 2, "train.jsonl")


def test_predict_job_stops_on_a_foreign_retrieval_file_and_writes_nothing(tmp_path):
    from tiny_engine import tiny_model_dir

    from iclpt.engine.generation import predict_job

    train, test = _split(4, "train"), _split(3, "test")
    for name, rows in (("train.jsonl", train), ("test.jsonl", test)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    ret = _retrieval(tmp_path / "r.jsonl", _split(3, "dev"), [["mtop-train-00001"]] * 3)
    params = {"task": "mtop", "model": "tiny", "method": "icl", "length": 0, "demos": "retrieved", "seed": 0,
              "n_demos": 1, "input_label": "Utterance", "output_label": "Parse", "max_new_tokens": 4,
              "batch_size": 2, "max_length": 128, "max_examples": None, "device": "cpu", "precision": "fp32"}
    out = tmp_path / "pred" / "predictions.jsonl"
    with pytest.raises(DataError, match=r"r.jsonl: id 'mtop-dev-00000' is not an example of .*test.jsonl"):
        predict_job(model_path=tiny_model_dir("gpt2"), test_path=str(tmp_path / "test.jsonl"), out_path=out,
                    params=params, train_path=str(tmp_path / "train.jsonl"), retrieval_path=ret)
    assert not out.exists()


def test_prompt_shape_against_the_model(tmp_path):
    import torch

    from iclpt.engine.soft_prompt import load_prompt, save_prompt

    p = tmp_path / "prompt.safetensors"
    save_prompt(p, torch.zeros(4, 32))
    assert load_prompt(p, hidden_size=32, length=4)[0].shape == (4, 32)
    with pytest.raises(ValueError, match=r"prompt.safetensors: prompt shape \(4, 32\) does not match the model: "
                                         r"width 32, the model's hidden size is 64"):
        load_prompt(p, hidden_size=64)
    with pytest.raises(ValueError, match=r"does not match the prompt length: 4 vectors, expected 8"):
        load_prompt(p, length=8)
    save_prompt(p, torch.zeros(2, 4, 32))
    with pytest.raises(ValueError, match=r"a soft prompt is \[n_virtual_tokens, hidden\]; got a tensor of shape"):
        load_prompt(p)
    save_prompt(p, torch.zeros(4, 32))
    p.write_bytes(p.read_bytes()[:-7])
    with pytest.raises(DataError, match=r"soft prompt: .*prompt.safetensors is truncated"):
        load_prompt(p)


def test_a_prompt_that_cannot_fit_names_the_example():
    from tiny_engine import load

    from iclpt.engine.prompting import Encoder, Template, build_examples

    _, tok = load("gpt2")
    enc = Encoder(tok, Template("Input", "Output"))
    recs = [{"id": "x-1", "input": "a b c", "target": "the cat sat on the mat"}]
    with pytest.raises(DataError, match=r"example 'x-1': max_length 12 leaves no room for the target .*raise "
                                        r"train.max_length"):
        build_examples(enc, recs, None, {}, 0, n_virtual=10, max_length=12)
    pool = {"t": {"id": "t", "input": "a long demo input " * 5, "target": "its target " * 5}}
    ret = {"x-1": {"id": "x-1", "demo_ids": ["t"], "scores": [1.0]}}
    with pytest.raises(DataError, match=r"max_length 40 leaves no room for any demo: all 1 examples lost their 1"):
        build_examples(enc, recs, ret, pool, 1, n_virtual=2, max_length=40)


# ==== 5. a failed stage leaves no output, and the run exits non-zero ================================================
def test_a_bad_data_file_fails_prepare_and_leaves_nothing(tmp_path):
    work = copy_repo(tmp_path / "w")
    tsv = work / "resources/demo_data/mtop_tsv"
    tsv.mkdir()
    good = "".join(_TSV.replace("1\t", f"{i}\t", 1).replace("Tom", f"Tom{i}") for i in range(6))
    for name in ("train.txt", "dev.txt"):
        (tsv / name).write_text(good)
    (tsv / "test.txt").write_text(good + _TSV.replace("\ten_XX", ""))  # line 7: one column missing
    cfg = yaml.safe_load((work / "config" / "tiny.yaml").read_text())
    cfg["run"] = "badtsv"
    cfg["tasks"] = {"mtop": {"files": {"train": "mtop_tsv/train.txt", "dev": "mtop_tsv/dev.txt",
                                       "test": "mtop_tsv/test.txt"}}}
    cfg["retrieval"]["k"] = 2
    path = write_config(work, cfg)
    proc = snakemake(work, "--cores", "1", "--configfile", str(path), check=False, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "mtop_tsv/test.txt:7: expected 8 tab-separated MTOP columns" in out, out[-3000:]
    data = work / "results" / "badtsv" / "data"
    assert not list(data.rglob("*.json*")) if data.exists() else True
    assert not (work / "results" / "badtsv" / "tables").exists()
