"""Data stage: prepare_task on the real samples (acceptance counts), subsampling, bad inputs, the rule."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import uuid

import pytest
import yaml

from iclpt.data.prepare import prepare_task, subsample
from iclpt.data.tasks import UnknownTaskError
from iclpt.io import DataError, read_jsonl


def _files(root, train, dev, test):
    return {"train": root / train, "dev": root / dev, "test": root / test}


def _refs(records):
    return sum(len(r["references"]) for r in records)


# ---- acceptance counts on ../shared/data (unsampled) ------------------------------------------------------
def test_counts_mtop(shared_data):
    out = prepare_task("mtop", _files(shared_data, "mtop/train.json", "mtop/dev.json", "mtop/test.json"))
    assert {s: len(r) for s, r in out.items()} == {"train": 2000, "dev": 500, "test": 500}


def test_counts_spider(shared_data):
    files = _files(shared_data, "spider/train_spider.json", "spider/dev.json", "spider/dev.json")
    with pytest.raises(DataError, match=r"dev.json: row 0: the database of db_id 'concert_singer' is missing"):
        prepare_task("spider", files)  # dev.json as the test split: most of its databases are not shipped
    excluded = {}
    out = prepare_task("spider", files, missing_database="exclude", excluded=excluded)
    assert len(out["train"]) == 2000 and len(out["dev"]) == 500
    assert len(out["test"]) == 83 and len(excluded["test"]) == 417  # the 83 dev rows whose database is shipped
    assert all(r["meta"]["db_path"] for r in out["test"])


def test_counts_dart(shared_data):
    out = prepare_task("dart", _files(shared_data, "dart/train_pool_from_dev.json", "dart/dev.json", "dart/test.xml"))
    assert len(out["dev"]) == 500 and _refs(out["dev"]) == 1248
    # test.xml: 500 entries, 1,269 <lex>; one is an empty `<lex ... />` and is not a reference
    assert len(out["test"]) == 500
    assert _refs(out["test"]) + sum(r["meta"].get("empty_references", 0) for r in out["test"]) == 1269
    assert _refs(out["test"]) == 1268
    assert len(out["train"]) == 5076  # one record per annotation of the 2,000 pool entries
    assert len({r["meta"]["group"] for r in out["train"]}) <= 2000


def test_counts_logic2text(shared_data):
    out = prepare_task("logic2text", _files(shared_data, "logic2text/train_lm.json", "logic2text/valid.json",
                                            "logic2text/test.json"))
    assert len(out["dev"]) == 500 and len(out["test"]) == 500 and len(out["train"]) == 1999


def test_counts_totto(shared_data):
    out = prepare_task("totto", _files(shared_data, "totto/train_sample.jsonl", "totto/dev_sample.jsonl",
                                       "totto/dev_sample.jsonl"))
    assert len(out["dev"]) == 5 and _refs(out["dev"]) == 15 and len(out["train"]) == 3
    ids = [r["id"] for s in out.values() for r in s]
    assert len(ids) == len(set(ids))  # the same file as dev and test still gives task-unique ids


# ---- subsampling and groups -----------------------------------------------------------------------------
def test_subsample_is_seeded_uniform_and_ordered():
    rows = [{"id": str(i)} for i in range(100)]
    a, b, c = subsample(rows, 10, 0), subsample(rows, 10, 0), subsample(rows, 10, 1)
    assert a == b and a != c and len(a) == 10
    idx = [int(r["id"]) for r in a]
    assert idx == sorted(__import__("random").Random(0).sample(range(100), 10))
    assert subsample(rows, None, 0) == rows and subsample(rows, 500, 0) == rows


def test_prepare_max_examples_and_groups(demo_data):
    files = _files(demo_data, "mtop/train.json", "mtop/dev.json", "mtop/test.json")
    full = prepare_task("mtop", files)
    dup = {}
    for r in full["train"]:
        dup.setdefault(r["input"], set()).add(r["meta"]["group"])
    assert all(len(g) == 1 for g in dup.values())  # same utterance -> same group
    assert len({r["meta"]["group"] for r in full["train"]}) < len(full["train"])
    out = prepare_task("mtop", files, {"train": 7, "dev": None, "test": 3}, seed=3)
    assert len(out["train"]) == 7 and len(out["dev"]) == len(full["dev"]) and len(out["test"]) == 3
    pos = {r["id"]: i for i, r in enumerate(full["train"])}
    assert [pos[r["id"]] for r in out["train"]] == sorted(pos[r["id"]] for r in out["train"])
    assert out == prepare_task("mtop", files, {"train": 7, "dev": None, "test": 3}, seed=3)


# ---- bad inputs -----------------------------------------------------------------------------------------
@pytest.fixture()
def mtop_copy(tmp_path, demo_data):
    d = tmp_path / "data"
    shutil.copytree(demo_data / "mtop", d / "mtop")
    return d


def test_missing_file_is_named(mtop_copy):
    files = _files(mtop_copy, "mtop/train.json", "mtop/nope.json", "mtop/test.json")
    with pytest.raises(DataError, match=r"mtop/nope.json: mtop dev file not found"):
        prepare_task("mtop", files)


def test_malformed_json_line_names_file_and_line(mtop_copy):
    p = mtop_copy / "mtop/dev.json"
    lines = p.read_text().splitlines(keepends=True)
    lines[3] = '{"question": "broken", \n'
    p.write_text("".join(lines))
    with pytest.raises(DataError, match=r"mtop/dev.json:4: malformed JSON"):
        prepare_task("mtop", _files(mtop_copy, "mtop/train.json", "mtop/dev.json", "mtop/test.json"))


def test_empty_split_names_task_split_file(mtop_copy):
    (mtop_copy / "mtop/test.json").write_text("\n")
    with pytest.raises(DataError, match=r"mtop test: no examples in .*mtop/test.json"):
        prepare_task("mtop", _files(mtop_copy, "mtop/train.json", "mtop/dev.json", "mtop/test.json"))


def test_unknown_task(mtop_copy):
    with pytest.raises(UnknownTaskError, match="known tasks: dart, logic2text, mtop, spider, totto"):
        prepare_task("geoquery", _files(mtop_copy, "mtop/train.json", "mtop/dev.json", "mtop/test.json"))


def test_spider_missing_tables_json(tmp_path, demo_data):
    shutil.copytree(demo_data / "spider", tmp_path / "spider")
    (tmp_path / "spider/tables.json").unlink()
    with pytest.raises(DataError, match=r"spider/tables.json: spider train needs this file"):
        prepare_task("spider", _files(tmp_path, "spider/train_spider.json", "spider/dev.json", "spider/dev.json"))


# ---- the script (what the rule runs): nothing written on error ----------------------------------------
def _script(repo_root):
    spec = importlib.util.spec_from_file_location("prepare_script", repo_root / "workflow/scripts/prepare.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _outputs(d):
    return {s: str(d / f"{s}.jsonl") for s in ("train", "dev", "test")} | {"summary": str(d / "prepare.json")}


def test_script_writes_splits_and_summary(repo_root, demo_data, tmp_path):
    params = {"task": "dart", "files": {k: str(v) for k, v in _files(demo_data, "dart/train.json", "dart/dev.json",
                                                                      "dart/test.xml").items()},
              "max_examples": {"train": 10, "dev": None, "test": None}, "data_seed": 0, "source": "local"}
    _script(repo_root).run(params, _outputs(tmp_path / "out"))
    train = read_jsonl(tmp_path / "out/train.jsonl", required=("id", "split", "input", "target", "references", "meta"))
    assert len(train) == 10
    summary = json.loads((tmp_path / "out/prepare.json").read_text())
    assert summary["counts"]["train"]["records"] == 10 and summary["provenance"]["params"]["task"] == "dart"


@pytest.mark.parametrize("breakage", ["spider_db_id", "malformed", "empty"])
def test_script_leaves_no_output_on_error(repo_root, demo_data, tmp_path, breakage):
    shutil.copytree(demo_data / "spider", tmp_path / "spider")
    dev = tmp_path / "spider/dev.json"
    if breakage == "spider_db_id":
        rows = json.loads(dev.read_text())
        rows[2]["db_id"] = "atlantis"
        dev.write_text(json.dumps(rows))
        match = r"dev.json: row 2: db_id 'atlantis' is not in"
    elif breakage == "malformed":
        dev.write_text(dev.read_text()[:-20])
        match = r"dev.json:\d+: malformed JSON"
    else:
        dev.write_text("[]")
        match = r"spider dev: no examples in"
    params = {"task": "spider", "files": {k: str(v) for k, v in _files(
        tmp_path, "spider/train_spider.json", "spider/dev.json", "spider/dev.json").items()},
        "max_examples": {}, "data_seed": 0, "source": "local"}
    with pytest.raises(DataError, match=match):
        _script(repo_root).run(params, _outputs(tmp_path / "out"))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ---- the Snakemake rule, for real (data targets only) ---------------------------------------------------
def _snakemake(repo_root, tmp_path, data_root, run):
    # a whole config (not an overlay of tiny.yaml): every task a config names must have its files (parse-time check)
    cfg = yaml.safe_load((repo_root / "config/tiny.yaml").read_text())
    cfg.update({"run": run, "data_root": str(data_root),
                "tasks": {"mtop": {"source": "local", "files": {"train": "mtop/train.json", "dev": "mtop/dev.json",
                                                                "test": "mtop/test.json"},
                                   "max_examples": {"train": 12}}}})
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    targets = [f"results/{run}/data/mtop/{s}.jsonl" for s in ("train", "dev", "test")]
    cmd = [str(repo_root / ".venv/bin/snakemake") if (repo_root / ".venv/bin/snakemake").exists() else "snakemake",
           *targets, "--cores", "1", "--nolock", "--configfile", str(tmp_path / "cfg.yaml")]
    return subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=300), targets


def test_rule_prepare_runs_and_fails_cleanly(repo_root, demo_data, tmp_path):
    run = f"pytest-data-{uuid.uuid4().hex[:8]}"
    try:
        d = tmp_path / "data"
        shutil.copytree(demo_data / "mtop", d / "mtop")
        proc, targets = _snakemake(repo_root, tmp_path, d, run)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert len(read_jsonl(repo_root / targets[0])) == 12
        # a malformed line: the job fails naming file and line, and leaves no split file behind
        p = d / "mtop/dev.json"
        p.write_text(p.read_text() + '{"question": \n')
        proc, targets = _snakemake(repo_root, tmp_path, d, run)
        assert proc.returncode != 0
        log = (repo_root / f"results/{run}/logs/prepare/mtop.log").read_text()
        assert "mtop/dev.json:" in log and "malformed JSON" in log
        assert not any((repo_root / t).exists() for t in targets)
    finally:
        shutil.rmtree(repo_root / "results" / run, ignore_errors=True)
