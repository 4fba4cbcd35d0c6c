"""Reruns are exact: editing or adding a method reruns its own jobs and the reports, nothing else.

The method registry (``iclpt.orchestration.methods``) is read at parse time (run lists, wildcards) and by the
report scripts. No train / predict / score job runs code that imports it, so a method's label or colour is in no
such job's code digest (``iclpt.orchestration.codeversion``), and a new method adds jobs without rerunning any.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from workflow_helpers import ROOT, copy_repo, dry_run, planned_jobs, snakemake, write_config

from iclpt.orchestration import codeversion

METHODS_PY = Path("src/iclpt/orchestration/methods.py")
SCHEMA = Path("workflow/schemas/config.schema.yaml")
ICL_HEAD = 'Method("icl", "ICL", "#7f7f7f",'  # name, label, colour: the start of ICL's line in the registry
NEW_METHOD = 'Method("ipt_only", "IPT (retrieved only)", "#17becf", PROMPT_OWN, ("retrieved",))'
METHOD_ENUM = "enum: [zeroshot, icl, pt, ipt]"
JOB_RULES = {"train_prompt", "predict", "score"}


def is_report(rule: str) -> bool:
    return rule.startswith("report") or rule == "all"


def _replace_once(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{path}: expected exactly one {old!r}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def relabel_icl(work: Path) -> None:
    """A report-only edit: ICL's label and colour."""
    _replace_once(work / METHODS_PY, ICL_HEAD, 'Method("icl", "In-context", "#000000",')


def add_method(work: Path) -> None:
    """What a contributor writes for a new method: one Method(...) line and the schema's methods enum."""
    anchor = '        Method("transfer",'
    _replace_once(work / METHODS_PY, anchor, f"        {NEW_METHOD},\n{anchor}")
    _replace_once(work / SCHEMA, METHOD_ENUM, METHOD_ENUM.replace("ipt]", "ipt, ipt_only]"))


# ---- code digests ---------------------------------------------------------------------------------------------
def rule_scripts(work: Path) -> dict[str, str]:
    """script -> rule of every `code("<script>"...)` param in the rule files."""
    out = {}
    for smk in sorted((work / "workflow" / "rules").glob("*.smk")):
        text = smk.read_text(encoding="utf-8")
        for rule, body in re.findall(r"^(?:rule|checkpoint) (\w+):\n((?:[ \t]+.*\n|\n)*)", text, re.M):
            out.update((s, rule) for s in re.findall(r'code\("([\w.]+)"', body))
    return out


def digests(work: Path, tasks: list[str]) -> dict[tuple[str, str | None], str]:
    """(script, task or None) -> code digest of every workflow script of the copy `work`."""
    root = work / "src" / "iclpt"
    return {(s.name, t): codeversion.script_version(s, task=t, root=root)
            for s in sorted((work / "workflow" / "scripts").glob("*.py")) for t in [None, *tasks]}


def test_relabelling_a_method_changes_only_the_report_digests(tmp_path):
    tasks = list(yaml.safe_load((ROOT / "config" / "tiny.yaml").read_text())["tasks"])
    before, after = copy_repo(tmp_path / "before"), copy_repo(tmp_path / "after")
    relabel_icl(after)
    old, new = digests(before, tasks), digests(after, tasks)
    rules = rule_scripts(before)
    assert {"train_prompt.py", "predict.py", "score.py", "prepare.py", "embed.py", "retrieve.py"} <= set(rules)
    changed = {rules[script] for (script, task), d in old.items() if new[(script, task)] != d and script in rules}
    assert changed, "the edit changed no digest at all: the report scripts import the registry"
    assert all(is_report(r) for r in changed), f"non-report rules whose code digest changed: {sorted(changed)}"


def test_job_scripts_do_not_reach_the_registries():
    root, scripts = ROOT / "src" / "iclpt", ROOT / "workflow" / "scripts"
    banned = {"iclpt.orchestration.methods", "iclpt.orchestration.runs", "iclpt.orchestration.config_checks"}
    for name in ("train_prompt.py", "predict.py", "score.py", "prepare.py", "retrieve.py", "embed.py"):
        closure = set(codeversion.module_closure(codeversion.script_modules(scripts / name, root), root=root))
        assert "iclpt.io" in closure, f"{name}: no library module found (wrong root?): {sorted(closure)}"
        assert not banned & closure, f"{name} runs code that imports {sorted(banned & closure)}"


# ---- a completed run, then dry runs after each edit ---------------------------------------------------------------
def small_config() -> dict:
    """The tiny config cut to one task, one seed, one prompt length, ICL and IPT."""
    cfg = yaml.safe_load((ROOT / "config" / "tiny.yaml").read_text())
    cfg["run"] = "rerun"
    cfg["tasks"] = {"mtop": cfg["tasks"]["mtop"]}
    cfg["methods"] = ["icl", "ipt"]
    cfg["seeds"] = [0]
    cfg["prompt"]["lengths"] = [cfg["prompt"]["length"]]
    cfg["train"].update(max_steps=2, eval_every=2, checkpoint_every=2)
    cfg["predict"]["max_examples"] = 4
    return cfg


@pytest.fixture(scope="module")
def completed(tmp_path_factory):
    """A completed small run in a copy of the repository (and its config)."""
    work = copy_repo(tmp_path_factory.mktemp("rerun") / "repo")
    cfg = small_config()
    cfgfile = write_config(work, cfg)
    snakemake(work, "--cores", "2", "--configfile", str(cfgfile))
    counts, out = dry_run(work, cfgfile)
    assert not counts and "Nothing to be done" in out, out[-3000:]
    return work, cfg


def jobs_after(completed, edit: Callable[[Path], None], cfg_edit: Callable[[dict], None] = lambda c: None):
    """(rule, first output) of the jobs a dry run plans after `edit` of the completed run's copy (undone after)."""
    work, cfg = completed
    saved = {p: (work / p).read_bytes() for p in (METHODS_PY, SCHEMA)}
    new = copy.deepcopy(cfg)  # same key order: a reordered build block would change its params
    cfg_edit(new)
    try:
        edit(work)
        _, out = dry_run(work, write_config(work, new, "changed.yaml"))
    finally:
        for p, data in saved.items():
            (work / p).write_bytes(data)
    return planned_jobs(out)


@pytest.mark.slow
def test_relabelling_a_method_reruns_only_reports(completed):
    jobs = jobs_after(completed, relabel_icl)
    rules = {r for r, _ in jobs}
    assert rules and rules != {"all"}, "the report rules import the registry: they must rerun"
    assert all(is_report(r) for r in rules), f"a relabelled method reran {sorted(rules)}"


@pytest.mark.slow
def test_adding_a_method_plans_only_its_own_jobs_and_reports(completed):
    jobs = jobs_after(completed, add_method, lambda c: c["methods"].append("ipt_only"))
    own = [(r, o) for r, o in jobs if r in JOB_RULES]
    assert {r for r, _ in own} == JOB_RULES, jobs
    rerun = [(r, o) for r, o in own if "/ipt_only/" not in o]
    assert not rerun, f"existing jobs rerun: {rerun}"
    assert all(r in JOB_RULES or is_report(r) for r, _ in jobs), f"upstream jobs rerun: {sorted({r for r, _ in jobs})}"
