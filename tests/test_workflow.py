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

pytestmark = pytest.mark.slow

UPSTREAM = {"prepare", "download", "build_tiny_model", "embed", "retrieve", "retrieval_summary"}


def is_report(rule: str) -> bool:
    return rule.startswith("report") or rule == "all"


def mini_config() -> dict:
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
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
    assert set(main["method"]) == {"icl", "pt", "ipt"}
    assert set(main.columns) >= {"task", "model", "method", "metric", "n_seeds", "mean", "std", "min", "max"}
    spider_metrics = set(main.loc[main["task"] == "spider", "metric"])
    assert spider_metrics == {"exact_match", "execution_accuracy"}
    preds = res / "predictions" / "mtop" / "tiny-gpt2" / "ipt" / "L4" / "retrieved" / "s0" / "predictions.jsonl"
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert len(rows) == cfg["predict"]["max_examples"]
    assert all(len(r["demo_ids"]) == cfg["demos"]["n_demos"] for r in rows)


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
