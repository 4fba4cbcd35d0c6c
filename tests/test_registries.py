"""The method, task and metric registries, the run lists they derive, code versions, no registered name outside
its registry, and extension by registry alone (a toy task and an IPT with 2 demos, built and run end to end)."""

from __future__ import annotations

import ast
import filecmp
import json
import re
import textwrap
from collections import Counter
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate
from workflow_helpers import ROOT, copy_repo, dry_run, planned_jobs, snakemake, write_config

from iclpt.data.tasks import TASKS
from iclpt.orchestration import codeversion, methods, runs
from iclpt.orchestration.methods import (
    METHODS,
    ROLES,
    UnknownMethodError,
    get_method,
    label,
    method_with_role,
    split_name,
)

SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


def schema() -> dict:
    return yaml.safe_load(SCHEMA.read_text())


def load(name: str) -> dict:
    cfg = yaml.safe_load((ROOT / "config" / name).read_text())
    validate(cfg, str(SCHEMA))
    return cfg


def test_schema_task_enum_equals_registry():
    assert schema()["properties"]["tasks"]["propertyNames"]["enum"] == list(TASKS)


def test_schema_method_enum_equals_registry():
    assert schema()["properties"]["methods"]["items"]["enum"] == list(methods.CONFIG_METHODS)


def test_every_task_module_carries_its_parts():
    for name, task in TASKS.items():
        assert task.download is not None and task.download.task == name
        assert task.metrics and task.version
        assert task.normalize_answer("  x  ") == "x"  # every task's exact match ignores surrounding whitespace


def test_method_names_resolve_and_unknown_is_an_error():
    assert split_name("transfer_dart") == (METHODS["transfer"], "dart")
    assert get_method("zeroshot").baseline and not get_method("zeroshot").uses_prompt
    assert label("transfer_mtop") == "Transfer mtop" and label("ipt") == "IPT"
    for bad in ("prefix", "transfer", "transfer_", "ICL"):
        with pytest.raises(UnknownMethodError, match=repr(bad)):
            get_method(bad)


def test_every_role_belongs_to_one_method_and_the_family_says_where_its_prompt_comes_from():
    assert {method_with_role(r) for r in ROLES} == {"icl", "pt", "ipt", "transfer", "untrained"}
    fam = METHODS["transfer"]
    assert fam.prompt_from == "pt" and METHODS[fam.prompt_from].trains
    assert fam.experiment in schema()["properties"]["experiments"]["properties"]
    source = runs.prompt_source(runs.Run("dart", "m", "transfer_mtop", 4, "retrieved", 1))
    assert source == runs.Run("mtop", "m", "pt", 4, "none", 1)
    with pytest.raises(LookupError, match="'nobody'"):
        method_with_role("nobody")
    with pytest.raises(ValueError, match="unknown role"):
        methods.Method("x", "X", "#000000", methods.PROMPT_NONE, ("none",), role="nobody")
    with pytest.raises(ValueError, match="family"):
        methods.Method("x", "X", "#000000", methods.PROMPT_SOURCE, ("retrieved",), family=True)


def test_the_transfer_control_is_an_untrained_prompt_that_runs_with_its_experiment():
    ctl = METHODS["untrained"]
    assert ctl.control and ctl.train_steps == 0 and ctl.trains and ctl.experiment == "transfer"
    assert "untrained" not in methods.CONFIG_METHODS  # never listed in a config's methods
    cfg = {"tasks": {"dart": {}, "mtop": {}}, "models": {"m": {}}, "seeds": [0, 1], "methods": ["pt", "ipt"],
           "prompt": {"length": 4, "lengths": [2, 4]}, "demos": {"sources": ["retrieved"]},
           "experiments": {"main": True, "similarity": False, "stability": True, "transfer": True}}
    p = runs.plan(cfg)
    ctl_runs = [r for r in p.predict if r.method == "untrained"]
    # every target task and seed, main length and demos only (not E3's other lengths)
    assert sorted(ctl_runs) == [runs.Run(t, "m", "untrained", 4, "retrieved", s) for t in ("dart", "mtop")
                                for s in (0, 1)]
    assert set(ctl_runs) <= set(p.train)  # its "train" job: the initialised prompt, 0 steps
    one_task = runs.plan({**cfg, "tasks": {"dart": {}}})
    assert not [r for r in one_task.predict if r.method == "untrained"]  # no transfer runs, no control
    off = runs.plan({**cfg, "experiments": {**cfg["experiments"], "transfer": False}})
    assert not [r for r in off.predict if r.method == "untrained"]
    with pytest.raises(ValueError, match="train_steps"):
        methods.Method("x", "X", "#000000", methods.PROMPT_NONE, ("none",), train_steps=0)


def test_a_method_may_fix_its_own_demo_count():
    ipt2 = methods.Method("ipt2", "IPT-2", "#000000", methods.PROMPT_OWN, ("retrieved",), demo_count=2)
    assert ipt2.n_demos("retrieved", 1) == 2 and ipt2.n_demos("none", 1) == 0
    assert METHODS["ipt"].n_demos("retrieved", 3) == 3 and METHODS["pt"].n_demos("none", 3) == 0


def test_check_run_rejects_what_the_registry_forbids():
    with pytest.raises(ValueError, match="takes demos none"):
        runs.check_run(runs.Run("mtop", "m", "pt", 4, "retrieved", 0))
    with pytest.raises(ValueError, match="length must be 0"):
        runs.check_run(runs.Run("mtop", "m", "icl", 4, "retrieved", 0))
    with pytest.raises(ValueError, match="to itself"):
        runs.check_run(runs.Run("mtop", "m", "transfer_mtop", 4, "retrieved", 0))


def test_paper_plan_counts():
    """The paper grid: 5 tasks x 3 models x 5 seeds; PT/IPT at 6 lengths, random IPT/ICL, 20 transfer pairs and
    their untrained-prompt control."""
    cfg = load("config.yaml")
    plan = runs.plan(cfg)
    per_cell = Counter((r.method if not r.method.startswith("transfer_") else "transfer") for r in plan.predict)
    cells = 5 * 3
    n_len = len(set(cfg["prompt"]["lengths"]) | {cfg["prompt"]["length"]})
    assert per_cell["zeroshot"] == cells
    assert per_cell["icl"] == cells * (1 + 5)
    assert per_cell["pt"] == cells * 5 * n_len
    assert per_cell["ipt"] == cells * 5 * (n_len + 1)
    assert per_cell["transfer"] == 20 * 3 * 5
    assert per_cell["untrained"] == cells * 5  # finding 3's control: every target, main setting, every seed
    assert len(plan.train) == per_cell["pt"] + per_cell["ipt"] + per_cell["untrained"]
    assert all(runs.prompt_source(r) in set(plan.train) for r in plan.predict if get_method(r.method).uses_prompt)


def test_code_version_follows_imports_and_tasks():
    mods = codeversion.module_closure(["iclpt.engine.generation"])
    assert "iclpt.engine.prompting" in mods and "iclpt.reporting.tables" not in mods
    data_mtop = codeversion.module_closure(["iclpt.data.prepare"], task="mtop")
    assert "iclpt.data.tasks.mtop" in data_mtop and "iclpt.data.tasks.base" in data_mtop
    assert "iclpt.data.tasks.spider" not in data_mtop
    assert (codeversion.code_version(["iclpt.data.prepare"], task="mtop")
            != codeversion.code_version(["iclpt.data.prepare"], task="dart"))


def test_code_version_changes_when_a_module_changes(tmp_path):
    pkg = tmp_path / "iclpt"
    (pkg / "tasks").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from iclpt import b\n")
    (pkg / "b.py").write_text("X = 1\n")
    (pkg / "c.py").write_text("Y = 1\n")
    before = codeversion.code_version(["iclpt.a"], root=pkg)
    (pkg / "c.py").write_text("Y = 2\n")  # not imported by a
    assert codeversion._code_version.cache_clear() is None
    assert codeversion.code_version(["iclpt.a"], root=pkg) == before
    (pkg / "b.py").write_text("X = 2\n")  # imported inside a function
    codeversion._code_version.cache_clear()
    assert codeversion.code_version(["iclpt.a"], root=pkg) != before


# ---- no registered name outside its registry ------------------------------------------------------------------
#: where each registry's names may be written as strings
REGISTRY_HOMES = {"method": ("src/iclpt/orchestration/methods.py",), "task": ("src/iclpt/data/tasks/",)}
#: strings equal to a registered name that mean something else, with how many a file may hold at most:
#: safetensors' framework tag for torch ("pt"), and the E4 experiment switch `experiments.transfer`, its table and
#: its log (not the transfer method family)
HOMONYMS = {
    ("src/iclpt/engine/soft_prompt.py", "pt"): 2,
    ("workflow/rules/common.smk", "transfer"): 2,
    ("workflow/rules/report.smk", "transfer"): 2,
    ("workflow/scripts/report_findings.py", "transfer"): 2,
}
_QUOTED = re.compile(r"""(["'])([^"'\n]*)\1""")


def _scanned_files() -> list[str]:
    files = [*(ROOT / "src/iclpt").rglob("*.py"), *(ROOT / "workflow/scripts").rglob("*.py"),
             *(ROOT / "workflow/rules").glob("*.smk"), ROOT / "Snakefile"]
    return sorted(p.relative_to(ROOT).as_posix() for p in files if "__pycache__" not in p.parts)


def string_literals(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string constant of a Python file (ast), or quoted string of a Snakemake file."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".py":
        return [(n.lineno, n.value) for n in ast.walk(ast.parse(text))
                if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    return [(i, m.group(2)) for i, line in enumerate(text.splitlines(), 1) for m in _QUOTED.finditer(line)]


def misplaced_names(rel: str) -> list[str]:
    """'<line>: <kind> <name>' of each registered name this file writes as a string outside the name's registry."""
    registered = {"method": set(METHODS), "task": set(TASKS)}
    found = []
    for line, value in string_literals(ROOT / rel):
        for kind, names in registered.items():
            if value in names and not rel.startswith(REGISTRY_HOMES[kind]):
                found.append((line, kind, value))
    counts = Counter(v for _, _, v in found)
    return [f"{line}: {kind} {value!r}" for line, kind, value in found
            if counts[value] > HOMONYMS.get((rel, value), 0)]


@pytest.mark.parametrize("rel", _scanned_files())
def test_no_method_or_task_name_outside_its_registry(rel):
    assert misplaced_names(rel) == [], f"{rel} names a registered method or task: ask its registry instead"


def test_the_name_scan_sees_python_and_snakemake_strings(tmp_path):
    py = tmp_path / "x.py"
    py.write_text('A = ("icl", "pt")\nB = f"{A}_vs_pt"\n"""pt"""\n')
    smk = tmp_path / "x.smk"
    smk.write_text("    if r.method in ('ipt', \"pt\"):\n        x = 'ipt_vs_pt'\n")
    assert sorted(v for _, v in string_literals(py) if v in METHODS) == ["icl", "pt", "pt"]
    assert [v for _, v in string_literals(smk) if v in METHODS] == ["ipt", "pt"]


# ---- extension by registry alone -----------------------------------------------------------------------------
TOY_TASK = '''
"""A toy task for the extension test: MTOP's files under another name."""
from iclpt.data.tasks.base import DownloadSpec, RemoteFile
from iclpt.data.tasks.mtop import MTOP


class Toy(MTOP):
    name = "toy"
    version = "1"
    download = DownloadSpec("toy", (RemoteFile("https://example.org/toy.zip", "toy.zip", archive="zip"),))


TASK = Toy()
'''


NEW_METHOD = 'Method("ipt2", "IPT (2 demos)", "#17becf", PROMPT_OWN, ("retrieved",), demo_count=2)'


def add_toy_task_and_method(work: Path) -> None:
    """What a contributor writes: a task module + a registry line, a Method line, and the two schema enums."""
    (work / "src/iclpt/data/tasks/toy.py").write_text(textwrap.dedent(TOY_TASK))
    init = work / "src/iclpt/data/tasks/__init__.py"
    line = "from iclpt.data.tasks.totto import TASK as _TOTTO"
    text = init.read_text().replace(line, f"{line}\nfrom iclpt.data.tasks.toy import TASK as _TOY")
    init.write_text(text.replace("_SPIDER, _MTOP)}", "_SPIDER, _MTOP, _TOY)}"))
    mfile = work / "src/iclpt/orchestration/methods.py"
    anchor = '        Method("transfer",'
    mfile.write_text(mfile.read_text().replace(anchor, f"        {NEW_METHOD},\n{anchor}"))
    sch = work / "workflow/schemas/config.schema.yaml"
    s = sch.read_text()
    s = s.replace("enum: [totto, dart, logic2text, spider, mtop]", "enum: [totto, dart, logic2text, spider, mtop, toy]")
    s = s.replace("enum: [zeroshot, icl, pt, ipt]", "enum: [zeroshot, icl, pt, ipt, ipt2]")
    sch.write_text(s)


def changed_files(work: Path) -> list[str]:
    """The files of the copy that differ from the repository's or are new (src/ and workflow/)."""
    out = []
    for top in ("src", "workflow"):
        for p in sorted((work / top).rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts:
                rel = p.relative_to(work)
                if not (ROOT / rel).is_file() or not filecmp.cmp(p, ROOT / rel, shallow=False):
                    out.append(rel.as_posix())
    return out


def toy_config() -> dict:
    """tiny-gpt2 on MTOP and the toy task, one seed, a few rows, BM25 demos (no encoder), PT and IPT-2 (+ E4)."""
    cfg = yaml.safe_load((ROOT / "config" / "tiny.yaml").read_text())
    mtop = cfg["tasks"]["mtop"]
    cfg.update(run="toy", seeds=[0], methods=["pt", "ipt2"], tasks={"mtop": mtop, "toy": dict(mtop)})
    cfg["demos"].update(retriever="bm25", sources=["retrieved"])
    cfg["retrieval"]["retrievers"] = ["bm25"]
    cfg["prompt"]["lengths"] = [cfg["prompt"]["length"]]
    cfg["train"].update(max_steps=2, eval_every=2, checkpoint_every=2)
    cfg["predict"]["max_examples"] = 4
    cfg["experiments"] = {"similarity": False, "stability": False, "transfer": True}
    return cfg


@pytest.mark.slow
def test_a_new_task_and_method_through_the_registries_alone(tmp_path):
    """The toy task (a module + one line) and IPT with 2 demos (one Method line) need no other change: the DAG
    has their jobs, and a run gives the IPT-2 predictions 2 demos (the config says 1) and the toy task its
    metrics.json. Measured: a method touches 2 files, a task 3 (docs/architecture.md's checklists)."""
    work = copy_repo(tmp_path / "repo")
    add_toy_task_and_method(work)
    assert changed_files(work) == ["src/iclpt/data/tasks/__init__.py", "src/iclpt/data/tasks/toy.py",
                                   "src/iclpt/orchestration/methods.py", "workflow/schemas/config.schema.yaml"]
    cfg = toy_config()
    cfgfile = write_config(work, cfg)
    counts, out = dry_run(work, cfgfile)
    outs = [o for _, o in planned_jobs(out)]
    assert counts["prepare"] == 2 and any("/data/toy/" in o for o in outs)
    assert any("/prompts/toy/tiny-gpt2/ipt2/L4/retrieved/s0/" in o for o in outs)
    assert any("/predictions/mtop/tiny-gpt2/transfer_toy/" in o for o in outs)
    assert not any("/ipt2/" in o and "/random/" in o for o in outs)  # it takes retrieved demos only

    snakemake(work, "--cores", "2", "--configfile", str(cfgfile))
    res = work / "results" / "toy"
    for task in ("mtop", "toy"):
        preds = res / "predictions" / task / "tiny-gpt2" / "ipt2" / "L4" / "retrieved" / "s0" / "predictions.jsonl"
        rows = [json.loads(line) for line in preds.read_text().splitlines()]
        assert len(rows) == 4 and all(len(r["demo_ids"]) == 2 for r in rows), task
    doc = json.loads((res / "predictions/toy/tiny-gpt2/pt/L4/none/s0/metrics.json").read_text())
    assert doc["primary_metric"] == "exact_match" and set(doc["metrics"]) == {"exact_match"}
    assert (res / "predictions/toy/tiny-gpt2/transfer_mtop/L4/retrieved/s0/metrics.json").is_file()
    assert cfg["demos"]["n_demos"] == 1
