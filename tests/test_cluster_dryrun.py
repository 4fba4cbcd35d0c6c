"""The paper config on a cluster, planned without one: `snakemake --profile profiles/slurm -n` submits no rule that
needs the internet to a compute node, and every GPU job reads local model folders only (its inputs and, through
Snakemake's API, its params)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_slurm import env_without_slurm

from iclpt.orchestration.calibrate.rules import script_imports

ROOT = Path(__file__).resolve().parents[1]
#: library entry points that reach the network: a rule whose script calls one must run on the submit host
INTERNET = {"iclpt.data.download.download_task", "iclpt.models.hub.fetch_hub_model",
            "iclpt.models.packaged.fetch_packaged_model"}
GPU_RULES = {"train_prompt", "predict", "embed"}
LIGHT_LOCAL = {"prepare", "score", "retrieval_summary"}
RUN = "results/paper"


def _rule_scripts() -> dict[str, Path]:
    out = {}
    for smk in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        for name, script in re.findall(r"^rule (\w+):\n(?:(?:    .*)?\n)*?    script:\n        \"([^\"]+)\"",
                                       smk.read_text(), flags=re.M):
            out[name] = (smk.parent / script).resolve()
    return out


def internet_rules() -> set[str]:
    return {rule for rule, script in _rule_scripts().items() if script_imports(script) & INTERNET}


@pytest.fixture(scope="module")
def slurm_dry_run(tmp_path_factory) -> str:
    env = env_without_slurm(tmp_path_factory.mktemp("nosl"))
    r = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", "-n", "--forceall",
                        "--configfile", "config/config.yaml"], cwd=ROOT, env=env, text=True, capture_output=True,
                       timeout=900)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-5000:]
    return out


def test_internet_rules_are_known():
    assert internet_rules() == {"download", "fetch_hub_model", "fetch_encoder", "fetch_model"}


@pytest.fixture(scope="module")
def paper_dag() -> list[dict]:
    """Every job of the paper config's DAG (Snakemake's API, dry run): rule, whether it is a localrule (runs on the
    submit host under a cluster executor), inputs, outputs, the model / encoder folder it loads, its GPUs."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, Quietness, ResourceSettings

    cwd = os.getcwd()
    try:
        with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
            wf_api = api.workflow(resource_settings=ResourceSettings(cores=1),
                                  config_settings=ConfigSettings(configfiles=[ROOT / "config" / "config.yaml"]),
                                  snakefile=ROOT / "Snakefile", workdir=ROOT)
            wf_api.dag(dag_settings=DAGSettings(forceall=True)).execute_workflow(executor="dryrun")
            wf = wf_api._workflow
            # a dry run executes everything locally (workflow.local_exec), so ask what a cluster executor asks:
            # is the rule a localrule (outside any group)?
            return [{"rule": j.rule.name, "local": j.rule.group is None and j.rule.name in wf._localrules,
                     "input": list(map(str, j.input)), "output": list(map(str, j.output)),
                     "loads": {k: j.params.get(k) for k in ("model_path", "encoder_path")
                               if k in j.rule.params.keys() and j.params.get(k)},
                     "gpu": j.resources.get("gpu", 0)} for j in wf.dag.jobs]
    finally:
        os.chdir(cwd)


def test_no_internet_rule_is_submitted_to_a_compute_node(paper_dag):
    by_rule: dict[str, set[bool]] = {}
    for j in paper_dag:
        by_rule.setdefault(j["rule"], set()).add(j["local"])
    assert {"download", "fetch_hub_model", "fetch_encoder"} <= set(by_rule), sorted(by_rule)
    for rule in internet_rules() | LIGHT_LOCAL:
        assert by_rule.get(rule, {True}) == {True}, f"{rule} would be submitted to a compute node"
    for rule in GPU_RULES | {"retrieve"}:
        assert by_rule[rule] == {False}, f"{rule} would run on the submit host"
    assert {j["gpu"] for j in paper_dag if j["rule"] in GPU_RULES} == {1}


def test_the_profile_dry_run_plans_gpu_jobs_on_local_folders(slurm_dry_run):
    assert "profiles/slurm" in slurm_dry_run and "slurm_partition=EDIT_ME_partition" in slurm_dry_run
    blocks = re.findall(r"^rule (train_prompt|predict|embed):\n((?:    .*\n)+)", slurm_dry_run, flags=re.M)
    assert len(blocks) > 1000
    for rule, body in blocks:
        assert re.search(r"^    resources: .*gpu=1", body, flags=re.M), (rule, body)
        inputs = re.search(r"^    input: (.*)$", body, flags=re.M).group(1).split(", ")
        assert all(p.startswith(f"{RUN}/") for p in inputs), (rule, inputs)
        wanted = f"{RUN}/encoders/minilm/modules.json" if rule == "embed" else f"{RUN}/models/"
        assert any(p.startswith(wanted) for p in inputs), (rule, inputs)


def test_gpu_job_params_name_local_folders_made_by_local_rules(paper_dag):
    """Every job's model_path / encoder_path param (what it loads) is a folder that a localrule of the same DAG
    fetches; none is a hub id."""
    made = {os.path.dirname(f): j["rule"] for j in paper_dag if j["local"] and j["rule"].startswith("fetch")
            for f in j["output"]}
    read: dict[str, set[str]] = {}
    for j in paper_dag:
        for folder in j["loads"].values():
            read.setdefault(j["rule"], set()).add(folder)
    assert set(read) == {"train_prompt", "predict", "embed", "retrieve"}, read
    for rule in GPU_RULES:
        assert read[rule] <= set(made), (rule, read[rule] - set(made))
    assert read["retrieve"] == {"sentence-transformers/all-MiniLM-L6-v2"}  # a label in its output, never loaded
    assert sorted(made) == [f"{RUN}/encoders/minilm", f"{RUN}/models/bloom-1b1", f"{RUN}/models/gpt2-xl",
                            f"{RUN}/models/opt-1.3b"]
