"""The method and task registries, the run lists they derive, code versions, and extension by registry alone."""

from __future__ import annotations

import textwrap
from collections import Counter

import pytest
import yaml
from snakemake.utils import validate

from iclpt.orchestration import codeversion, methods, runs
from iclpt.orchestration.methods import METHODS, UnknownMethodError, get_method, label, split_name
from iclpt.data.tasks import TASKS
from workflow_helpers import ROOT, copy_repo, dry_run, planned_jobs, write_config

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


def test_check_run_rejects_what_the_registry_forbids():
    with pytest.raises(ValueError, match="takes demos none"):
        runs.check_run(runs.Run("mtop", "m", "pt", 4, "retrieved", 0))
    with pytest.raises(ValueError, match="length must be 0"):
        runs.check_run(runs.Run("mtop", "m", "icl", 4, "retrieved", 0))
    with pytest.raises(ValueError, match="to itself"):
        runs.check_run(runs.Run("mtop", "m", "transfer_mtop", 4, "retrieved", 0))


def test_paper_plan_counts():
    """The paper grid: 5 tasks x 3 models x 5 seeds; PT/IPT at 6 lengths, random IPT/ICL, 20 transfer pairs."""
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
    assert len(plan.train) == per_cell["pt"] + per_cell["ipt"]
    assert all(runs.prompt_source(r) in set(plan.train) for r in plan.predict if get_method(r.method).uses_prompt)


def test_code_version_follows_imports_and_tasks():
    mods = codeversion.module_closure(["iclpt.engine.generation"])
    assert "iclpt.engine.prompting" in mods and "iclpt.reporting.tables" not in mods
    data_mtop = codeversion.module_closure(["iclpt.data.prepare"], task="mtop")
    assert "iclpt.data.tasks.mtop" in data_mtop and "iclpt.data.tasks.base" in data_mtop
    assert "iclpt.data.tasks.spider" not in data_mtop
    assert codeversion.code_version(["iclpt.data.prepare"], task="mtop") != codeversion.code_version(["iclpt.data.prepare"], task="dart")


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


def add_toy_task_and_method(work) -> None:
    """What a contributor writes: a task module + a registry line, a Method line, and the two schema enums."""
    (work / "src/iclpt/data/tasks/toy.py").write_text(textwrap.dedent(TOY_TASK))
    init = work / "src/iclpt/data/tasks/__init__.py"
    text = init.read_text().replace("from iclpt.data.tasks.totto import TASK as _TOTTO",
                                    "from iclpt.data.tasks.totto import TASK as _TOTTO\nfrom iclpt.data.tasks.toy import TASK as _TOY")
    init.write_text(text.replace("_SPIDER, _MTOP)}", "_SPIDER, _MTOP, _TOY)}"))
    mfile = work / "src/iclpt/orchestration/methods.py"
    mfile.write_text(mfile.read_text().replace(
        '        Method("transfer",',
        '        Method("ipt_only", "IPT (retrieved only)", "#17becf", PROMPT_OWN, ("retrieved",)),\n'
        '        Method("transfer",'))
    sch = work / "workflow/schemas/config.schema.yaml"
    s = sch.read_text()
    s = s.replace("enum: [totto, dart, logic2text, spider, mtop]", "enum: [totto, dart, logic2text, spider, mtop, toy]")
    s = s.replace("enum: [zeroshot, icl, pt, ipt]", "enum: [zeroshot, icl, pt, ipt, ipt_only]")
    sch.write_text(s)


@pytest.mark.slow
def test_a_new_task_and_method_through_the_registries_alone(tmp_path):
    work = copy_repo(tmp_path / "repo")
    add_toy_task_and_method(work)
    cfg = yaml.safe_load((ROOT / "config" / "tiny.yaml").read_text())
    cfg["run"] = "toy"
    cfg["tasks"] = {"mtop": cfg["tasks"]["mtop"], "toy": dict(cfg["tasks"]["mtop"])}
    cfg["methods"] = ["zeroshot", "icl", "pt", "ipt", "ipt_only"]
    cfg["seeds"] = [0]
    counts, out = dry_run(work, write_config(work, cfg))
    jobs = planned_jobs(out)
    outs = [o for _, o in jobs]
    assert counts["prepare"] == 2 and any("/data/toy/" in o for r, o in jobs if r == "prepare")
    assert any("/prompts/toy/tiny-gpt2/ipt_only/L4/retrieved/s0/" in o for o in outs)
    assert any("/predictions/toy/tiny-gpt2/ipt_only/L4/retrieved/s0/" in o for o in outs)
    assert any("/predictions/toy/tiny-gpt2/transfer_mtop/" in o for o in outs)
    assert any("/predictions/mtop/tiny-gpt2/transfer_toy/" in o for o in outs)
    assert not any("/ipt_only/" in o and "/random/" in o for o in outs)  # it takes retrieved demos only
