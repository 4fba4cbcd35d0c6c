"""The real Snakemake DAG on a small demo config: complete run, and exact stale-only reruns.

One complete run of a reduced demo (2 tasks, 1 model, 1 seed) in a copy of the repository, then dry runs
after one change each: the jobs Snakemake plans are exactly the stale ones.
"""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import yaml
from workflow_helpers import ROOT, copy_repo, dry_run, planned_jobs, snakemake, write_config

from iclpt.orchestration.layout import RUN_FIELDS, Layout
from iclpt.orchestration.runs import Run

pytestmark = pytest.mark.slow

UPSTREAM = {"prepare", "download", "build_tiny_model", "embed", "retrieve", "retrieval_summary"}


def is_report(rule: str) -> bool:
    return rule.startswith("report") or rule == "all"


def mini_config() -> dict:
    cfg = yaml.safe_load((ROOT / "config" / "tiny.yaml").read_text())
    cfg["run"] = "mini"
    cfg["tasks"] = {t: cfg["tasks"][t] for t in ("mtop", "spider")}
    cfg["seeds"] = [0]
    cfg["prompt"]["lengths"] = [cfg["prompt"]["length"]]
    cfg["train"]["max_steps"] = 4
    cfg["train"]["eval_every"] = 2
    cfg["train"]["checkpoint_every"] = 2
    cfg["predict"]["max_examples"] = 6
    return cfg


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    work = copy_repo(tmp_path_factory.mktemp("mini"))
    cfg = mini_config()
    cfgfile = write_config(work, cfg)
    snakemake(work, "--cores", "2", "--configfile", str(cfgfile))
    return work, cfg


def changed(mini, mutate) -> list[tuple[str, str]]:
    work, cfg = mini
    new = copy.deepcopy(cfg)
    mutate(new)
    path = write_config(work, new, "changed.yaml")
    _, out = dry_run(work, path)
    return planned_jobs(out)


def test_complete_run_produces_tables(mini):
    work, cfg = mini
    res = work / "results" / "mini"
    main = pd.read_csv(res / "tables" / "main.csv")
    assert set(main["task"]) == {"mtop", "spider"}
    assert set(main["method"]) == {"zeroshot", "icl", "pt", "ipt"}
    assert set(main.columns) >= {"task", "model", "method", "metric", "n_seeds", "mean", "ci_low", "ci_high", "std",
                                 "min", "max"}
    assert (res / "tables" / "comparisons.csv").is_file()
    spider_metrics = set(main.loc[main["task"] == "spider", "metric"])
    assert spider_metrics == {"exact_set_match", "execution_accuracy"}
    preds = res / "predictions" / "mtop" / "tiny-gpt2" / "ipt" / "L4" / "retrieved" / "s0" / "predictions.jsonl"
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert len(rows) == cfg["predict"]["max_examples"]
    assert all(len(r["demo_ids"]) == cfg["demos"]["n_demos"] for r in rows)


def test_metrics_json_names_its_run_once(mini):
    """Each metrics.json carries its run's identity, one key per field, and sits where the layout puts that run."""
    work, _ = mini
    files = sorted((work / "results" / "mini" / "predictions").rglob("metrics.json"))
    assert files
    for f in files:
        doc = json.loads(f.read_text())
        assert set(RUN_FIELDS) <= set(doc) and not {"prompt_length", "demo_source"} & set(doc), f
        run = Run(*(doc[k] for k in RUN_FIELDS))
        assert work / Layout("results/mini").metrics(run) == f


def test_second_run_has_nothing_to_do(mini):
    work, _ = mini
    counts, out = dry_run(work, work / "config" / "test.yaml")
    assert "Nothing to be done" in out, out[-3000:]
    assert not counts


def test_learning_rate_reruns_training_and_downstream_only(mini):
    jobs = changed(mini, lambda c: c["train"].__setitem__("lr", 0.02))
    rules = {r for r, _ in jobs}
    assert "train_prompt" in rules and "predict" in rules and "score" in rules
    assert not rules & UPSTREAM, rules
    for rule, out in jobs:
        if rule in ("predict", "score"):
            assert "/icl/" not in out, f"ICL does not depend on the learning rate: {out}"
    n_train = sum(r == "train_prompt" for r, _ in jobs)
    assert n_train == len(list((mini[0] / "results" / "mini" / "prompts").rglob("prompt.safetensors")))


def test_retriever_change_reruns_only_the_affected_task(mini):
    jobs = changed(mini, lambda c: c["tasks"]["mtop"].__setitem__("demo_retriever", "bm25"))
    assert jobs
    for rule, out in jobs:
        if not is_report(rule):
            assert "/mtop/" in out, f"{rule} {out} is not downstream of mtop's retriever"
    rules = {r for r, _ in jobs}
    assert {"train_prompt", "predict", "score"} <= rules
    assert not rules & {"prepare", "embed", "build_tiny_model"}


def test_adding_a_seed_adds_only_that_seeds_jobs(mini):
    jobs = changed(mini, lambda c: c.__setitem__("seeds", [0, 1]))
    assert jobs
    for rule, out in jobs:
        if not is_report(rule):
            assert "/s1/" in out or "random_s1" in out, f"{rule} {out} does not belong to seed 1"
    assert {"train_prompt", "predict", "score", "retrieve"} <= {r for r, _ in jobs}


def test_editing_a_report_script_reruns_only_reporting(mini):
    work, cfg = mini
    scripts = sorted((work / "workflow" / "scripts").glob("report*.py"))
    assert scripts, "no report script found"
    original = scripts[0].read_text()
    scripts[0].write_text(original + "\n# edited\n")
    try:
        _, out = dry_run(work, work / "config" / "test.yaml")
        rules = {r for r, _ in planned_jobs(out)}
        assert rules and all(is_report(r) for r in rules), rules
    finally:
        scripts[0].write_text(original)


def _edit_library(mini, rel: str):
    """Dry-run jobs after appending a comment to one library file of the copy (restored afterwards)."""
    work, _ = mini
    path = work / "src" / rel
    original = path.read_text()
    path.write_text(original + "\n# edited\n")
    try:
        _, out = dry_run(work, work / "config" / "test.yaml")
        return planned_jobs(out)
    finally:
        path.write_text(original)


def test_editing_a_task_adapter_reruns_that_task_onward(mini):
    jobs = _edit_library(mini, "iclpt/data/tasks/mtop.py")
    rules = {r for r, _ in jobs}
    assert {"prepare", "embed", "retrieve", "train_prompt", "predict", "score"} <= rules, rules
    for rule, out in jobs:
        if rule in ("prepare", "embed", "retrieve", "retrieval_summary"):
            assert "/mtop/" in out, f"{rule} {out} does not depend on the MTOP adapter"
    # Spider's data stage stays; its soft-prompt jobs rerun only because the demo's tiny model is built from
    # every task's train text (build_tiny_model is downstream of MTOP's prepared data).
    assert "build_tiny_model" in rules
    assert any(rule == "predict" and "/mtop/" in out for rule, out in jobs)


def test_editing_metrics_reruns_scoring_and_reports_only(mini):
    rules = {r for r, _ in _edit_library(mini, "iclpt/evaluation/metrics.py")}
    assert "score" in rules
    assert all(r == "score" or is_report(r) for r in rules), rules


def test_editing_the_decoder_reruns_decoding_onward_only(mini):
    jobs = _edit_library(mini, "iclpt/engine/generation.py")
    rules = {r for r, _ in jobs}
    assert {"predict", "score"} <= rules
    assert all(r in ("predict", "score") or is_report(r) for r in rules), rules
    n_pred = len(list((mini[0] / "results" / "mini" / "predictions").rglob("predictions.jsonl")))
    assert sum(r == "predict" for r, _ in jobs) == n_pred


def test_editing_training_reruns_training_onward_only(mini):
    rules = {r for r, _ in _edit_library(mini, "iclpt/engine/training.py")}
    assert "train_prompt" in rules
    assert not rules & UPSTREAM, rules


def test_editing_a_report_module_reruns_only_reports(mini):
    jobs = _edit_library(mini, "iclpt/reporting/tables.py")
    rules = {r for r, _ in jobs}
    assert "report_main" in rules
    assert all(is_report(r) for r in rules), rules


def test_editing_a_spider_database_reruns_only_its_scoring(mini):
    """Execution accuracy reads the SQLite files: an edited database reruns Spider's scoring, nothing upstream.
    (Snakemake compares small inputs by checksum, so the edit must change bytes: a bare touch reruns nothing.)"""
    import os
    import sqlite3

    work, _ = mini
    dbs = sorted((work / "resources" / "demo_data" / "spider" / "database").glob("*/*.sqlite"))
    assert dbs, "the demo's Spider databases are missing"
    original, st = dbs[0].read_bytes(), dbs[0].stat()
    con = sqlite3.connect(dbs[0])
    con.execute("PRAGMA user_version = 7")  # a header byte changes; the tables stay as they were
    con.commit()
    con.close()
    assert dbs[0].read_bytes() != original
    try:
        _, out = dry_run(work, work / "config" / "test.yaml")
        jobs = planned_jobs(out)
    finally:
        dbs[0].write_bytes(original)
        os.utime(dbs[0], (st.st_atime, st.st_mtime))
    scored = [o for r, o in jobs if r == "score"]
    assert scored and all("/spider/" in o for o in scored), jobs
    n_spider = len(list((work / "results" / "mini" / "predictions" / "spider").rglob("predictions.jsonl")))
    assert len(scored) == n_spider
    assert all(r == "score" or is_report(r) for r, _ in jobs), jobs


def test_zeroshot_runs_once_without_prompt_or_demos(mini):
    work, cfg = mini
    res = work / "results" / "mini"
    runs = sorted(p.relative_to(res / "predictions").as_posix()
                  for p in (res / "predictions").rglob("zeroshot/*/*/*/predictions.jsonl"))
    assert runs == [f"{t}/tiny-gpt2/zeroshot/L0/none/s0/predictions.jsonl" for t in ("mtop", "spider")]
    rows = [json.loads(line) for line in (res / "predictions" / runs[0]).read_text().splitlines()]
    assert rows and all(r["demo_ids"] == [] and r["prompt_length"] == 0 and r["method"] == "zeroshot" for r in rows)
    main = pd.read_csv(res / "tables" / "main.csv")
    assert (main["method"] == "zeroshot").sum() == len(main[["task", "model", "metric"]].drop_duplicates())
