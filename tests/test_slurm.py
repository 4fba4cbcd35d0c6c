"""profiles/slurm on a real one-node SLURM cluster on localhost (tests/slurm_cluster.py).

- test_slurm_profile_dry_run*: `snakemake --profile profiles/slurm -n` parses without any cluster (no marker).
- test_mini_workflow_through_slurm: the mini workflow (tests/data/slurm_mini) through sbatch: every non-local job
  is a SLURM job (ids in the plugin's log lines, in .snakemake/slurm_logs/, in the jobs' own outputs and in
  `scontrol show job`), GPU requests reach sbatch and the job, the localrule stays on the submit host, results
  equal a local run's, and a job that fails once for lack of memory succeeds on a NEW sbatch with doubled --mem.
- test_demo_pipeline_through_slurm: a bounded subset of the demo pipeline (one task, one seed, one prompt length;
  targets settable) through SLURM, compared with a local run. Skips until the pipeline's rules exist.

The SLURM tests run the committed profiles/slurm/config.yaml with only the site keys replaced (LOCAL_OVERRIDES).
Env: ICLPT_SLURM_DIR (cluster folder), ICLPT_SLURM_DEMO_TASKS (comma list, default: first demo task),
ICLPT_SLURM_DEMO_TARGETS (space-separated targets; 'all' = the subset's whole DAG; default: one IPT run's
metrics.json and the dense retrieval summary, see demo_targets).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MINI = ROOT / "tests" / "data" / "slurm_mini"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
sys.path.insert(0, str(Path(__file__).parent))
import slurm_cluster  # noqa: E402

# Site-specific keys of profiles/slurm replaced for the local cluster; everything else is the committed profile.
LOCAL_OVERRIDES = {
    "jobs": 4,
    "latency-wait": 5,
    "slurm-no-account": True,
    "slurm-status-command": "squeue",  # accounting disabled here: sacct fails
    "slurm-init-seconds-before-status-checks": 2,
    "max-status-checks-per-second": 10,
    "max-threads": 2,  # a 2-CPU node: a larger --cpus-per-task would pend forever
}
LOCAL_DEFAULT_RESOURCES = {"slurm_partition": slurm_cluster.PARTITION}  # and slurm_account removed

PIPELINE_RULES = {"prepare", "retrieve", "train_prompt", "predict", "score"}


def committed_profile() -> dict:
    return yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())


def write_local_profile(dest: Path) -> Path:
    prof = committed_profile()
    prof.update(LOCAL_OVERRIDES)
    dr = dict(prof.get("default-resources", {}))
    dr.pop("slurm_account", None)
    dr.update(LOCAL_DEFAULT_RESOURCES)
    prof["default-resources"] = dr
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(prof, sort_keys=False))
    return dest


def run_snakemake(args, cwd, env=None, log: Path | None = None, timeout=900):
    t0 = time.time()
    r = subprocess.run(SNAKEMAKE + list(args), cwd=cwd, env=env, text=True, capture_output=True, timeout=timeout)
    out = r.stdout + r.stderr
    if log is not None:
        log.write_text(out)
    return r.returncode, out, time.time() - t0


def submissions(out: str) -> dict[int, str]:
    """Snakemake job id -> SLURM job id, from the plugin's 'has been submitted with SLURM jobid' lines."""
    return {int(a): b for a, b in re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", out)}


def executed_jobs(out: str) -> dict[int, tuple[str, bool]]:
    """Snakemake job id -> (rule, is_local) for every job the run executed (the 'rule X:'/'localrule X:' blocks)."""
    jobs = {}
    for m in re.finditer(r"^(localrule|rule) (\w+):\n((?:    .*\n)+)", out, flags=re.M):
        jid = re.search(r"^    jobid: (\d+)$", m.group(3), flags=re.M)
        if jid:
            jobs[int(jid.group(1))] = (m.group(2), m.group(1) == "localrule")
    return jobs


def sbatch_calls(out: str) -> list[str]:
    return [line for line in out.splitlines() if "sbatch call:" in line]


def scontrol_job(cluster, jobid: str) -> dict:
    txt = cluster.cmd("scontrol", "show", "job", "-o", str(jobid))
    return dict(kv.split("=", 1) for kv in txt.split() if "=" in kv)


def check_every_remote_job_went_through_sbatch(out: str, workdir: Path, cluster) -> dict[int, str]:
    """The generic check: each non-local job executed has exactly one successful SLURM job (retries aside)."""
    jobs = executed_jobs(out)
    subs = submissions(out)
    remote = {j for j, (_, local) in jobs.items() if not local}
    local = {j for j, (_, is_local) in jobs.items() if is_local}
    assert remote, "no SLURM job was executed"
    assert remote <= set(subs), f"jobs without sbatch submission: {sorted(remote - set(subs))}"
    assert not (local & set(subs)), f"localrules were submitted: {sorted(local & set(subs))}"
    queued = set(cluster.cmd("squeue", "-h", "-t", "all", "-o", "%i").split())
    for j in remote:
        rule = jobs[j][0]
        sid = subs[j]
        assert sid in queued, f"SLURM job {sid} ({rule}) unknown to squeue"
        info = scontrol_job(cluster, sid)
        assert info["JobState"] == "COMPLETED", (rule, sid, info.get("JobState"))
        logs = list((workdir / ".snakemake" / "slurm_logs" / f"rule_{rule}").rglob(f"{sid}.log"))
        assert logs, f"no .snakemake/slurm_logs/rule_{rule}/**/{sid}.log"
    return {j: subs[j] for j in remote}


def tree_files(base: Path) -> dict[str, bytes]:
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = slurm_cluster.unavailable_reason()
    if reason:
        pytest.skip(f"SLURM test skipped: {reason}")
    c = slurm_cluster.LocalSlurm(os.environ.get("ICLPT_SLURM_DIR", tmp_path_factory.mktemp("slurm")))
    c.up()
    print(f"cluster timings: {c.timings}")
    try:
        yield c
    finally:
        c.down()


def env_without_slurm(tmp_path: Path) -> dict:
    """An environment with no SLURM client on PATH and no SLURM_CONF: a laptop without any cluster."""
    bindir = tmp_path / "bin_no_slurm"
    bindir.mkdir(exist_ok=True)
    for tool in ("which", "bash", "sh", "git", "uname", "env"):
        found = shutil.which(tool)
        if found and not (bindir / tool).exists():
            (bindir / tool).symlink_to(found)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{bindir}"
    assert shutil.which("sinfo", path=env["PATH"]) is None
    return env


def test_slurm_profile_dry_run_without_cluster(tmp_path):
    """The committed profile parses and plans a DAG with no SLURM daemon, client or SLURM_CONF at all."""
    shutil.copytree(MINI, tmp_path / "w")
    env = env_without_slurm(tmp_path)
    rc, out, _ = run_snakemake(
        ["--profile", str(ROOT / "profiles/slurm"), "--workflow-profile", str(ROOT / "profiles/default"),
         "-n", "all", "flaky"], cwd=tmp_path / "w", env=env)
    assert rc == 0, out
    assert "Using profile" in out and "profiles/slurm" in out
    # the profile's default-resources and set-resources reached the jobs
    assert "slurm_partition=EDIT_ME_partition" in out
    assert re.search(r"rule train_prompt:\n(    .*\n)*    resources: .*gpu=1", out), out
    assert re.search(r"rule prepare:\n(    .*\n)*    resources: (?!.*gpu=)", out)
    assert re.search(r"^total\s+9$", out, flags=re.M), out


def test_default_profile_does_not_override_slurm_keys():
    """profiles/default is applied to every run AND wins per key over --profile: it must not set slurm's keys."""
    default = yaml.safe_load((ROOT / "profiles" / "default" / "config.yaml").read_text())
    clash = set(default) & set(committed_profile())
    assert not clash, f"profiles/default overrides profiles/slurm keys {clash}"
    assert "cores" not in default and "retries" not in default
    prof = committed_profile()
    assert prof["executor"] == "slurm" and prof["retries"] >= 1
    assert prof["set-resources"]["train_prompt"]["gpu"] == 1 and prof["set-resources"]["predict"]["gpu"] == 1
    assert "attempt" in str(prof["default-resources"]["mem_mb"])
    for rule_res in prof["set-resources"].values():
        assert "mem_mb" not in rule_res, "a constant mem_mb in set-resources defeats attempt-scaled retries"


def _pipeline_rules() -> set[str]:
    r = subprocess.run(SNAKEMAKE + ["--list-rules", "--configfile", "config/tiny.yaml"], cwd=ROOT,
                       text=True, capture_output=True)
    return set(r.stdout.split()) if r.returncode == 0 else set()


def test_slurm_profile_dry_run_demo(tmp_path):
    missing = PIPELINE_RULES - _pipeline_rules()
    if missing:
        pytest.skip(f"pipeline rules not written yet: {sorted(missing)}")
    env = env_without_slurm(tmp_path)
    rc, out, dt = run_snakemake(["--profile", "profiles/slurm", "-n", "--forceall", "--configfile", "config/tiny.yaml",
                                 "--quiet", "rules"], cwd=ROOT, env=env)
    assert rc == 0, out[-5000:]
    assert re.search(r"^total\s+\d+$", out, flags=re.M), out[-3000:]
    assert re.search(r"^train_prompt\s+[1-9]\d*$", out, flags=re.M), out[-3000:]


@pytest.mark.slurm
def test_mini_workflow_through_slurm(cluster, tmp_path):
    prof = write_local_profile(tmp_path / "profile")
    wprof = ["--workflow-profile", str(ROOT / "profiles/default")]
    shutil.copytree(MINI, tmp_path / "local")
    shutil.copytree(MINI, tmp_path / "slurm")
    env = cluster.env()

    rc, out_local, t_local = run_snakemake(["--cores", "2", *wprof, "all"], cwd=tmp_path / "local", env=env)
    assert rc == 0, out_local[-5000:]

    # `all` (6 SLURM jobs + the summarize localrule) and `flaky` (fails at 300 MB, must be resubmitted with 600)
    rc, out, t_slurm = run_snakemake(["--profile", str(prof), *wprof, "--verbose", "all", "flaky"],
                                     cwd=tmp_path / "slurm", env=env, log=tmp_path / "slurm.log")
    print(f"mini workflow: local {t_local:.1f}s, SLURM {t_slurm:.1f}s (log {tmp_path / 'slurm.log'})")
    assert rc == 0, out[-8000:]
    w = tmp_path / "slurm"

    # results equal the local run's
    assert tree_files(w / "results" / "data") == tree_files(tmp_path / "local" / "results" / "data")
    for sub in ("prompts", "predictions"):
        assert tree_files(w / "results" / sub) == tree_files(tmp_path / "local" / "results" / sub)
    assert (w / "results/summary.json").read_bytes() == (tmp_path / "local/results/summary.json").read_bytes()

    remote = check_every_remote_job_went_through_sbatch(out, w, cluster)
    jobs = executed_jobs(out)
    rules = sorted(jobs[j][0] for j in remote)
    assert rules == ["flaky", "predict", "predict", "prepare", "prepare", "train_prompt", "train_prompt"], rules
    assert [r for r, local in jobs.values() if local and r != "all"] == ["summarize"]

    # the jobs ran inside SLURM: their own $SLURM_JOB_ID is the submitted id; the localrule ran outside
    ids = {j: s for j, s in remote.items()}
    for item in ("ab", "abc"):
        jid = (w / f"where/prepare_{item}.txt").read_text().split()[0]
        assert jid in ids.values(), jid
        for rule in ("train_prompt", "predict"):
            jid, cuda = (w / f"where/{rule}_{item}.txt").read_text().split()
            assert jid in ids.values() and cuda != "none", (rule, jid, cuda)
            info = scontrol_job(cluster, jid)
            assert "gpu" in info.get("TresPerJob", "") + info.get("TresPerNode", ""), info
    assert (w / "where/summarize.txt").read_text().strip() == "local"

    # GPU requests reached sbatch only for the rules the profile gives a GPU
    calls = sbatch_calls(out)
    n_submitted = len(re.findall(r"has been submitted with SLURM jobid", out))
    assert len(calls) == n_submitted == 8, (len(calls), n_submitted)  # 7 jobs, flaky twice
    for c in calls:
        gpu_rule = re.search(r"--job-name \S+ .*rule_(train_prompt|predict)/", c) is not None
        assert ("--gpus=1" in c) == gpu_rule, c

    # retry: first allocation 300 MB failed, a NEW sbatch with 600 MB succeeded
    lines = [line.split() for line in (w / "where/flaky.txt").read_text().splitlines()]
    assert [m for _, m in lines] == ["300", "600"], lines
    (id1, _), (id2, _) = lines
    assert id1 != id2
    assert scontrol_job(cluster, id1)["JobState"] == "FAILED"
    assert scontrol_job(cluster, id2)["JobState"] == "COMPLETED"
    assert scontrol_job(cluster, id2)["MinMemoryNode"] in ("600M", "600")
    flaky_calls = [c for c in calls if "rule_flaky/" in c]
    assert len(flaky_calls) == 2 and "--mem 300" in flaky_calls[0] and "--mem 600" in flaky_calls[1], flaky_calls


# ---- the demo pipeline -------------------------------------------------------------------------------------
def demo_subset_config(dest: Path) -> Path:
    """config/tiny.yaml bounded to one task, one seed and one prompt length, with resources the node can hold."""
    cfg = yaml.safe_load((ROOT / "config" / "tiny.yaml").read_text())
    tasks = os.environ.get("ICLPT_SLURM_DEMO_TASKS", "").split(",") if os.environ.get("ICLPT_SLURM_DEMO_TASKS") \
        else [next(iter(cfg["tasks"]))]
    cfg["run"] = "slurmtest"
    cfg["tasks"] = {t: cfg["tasks"][t] for t in tasks}
    cfg["seeds"] = cfg["seeds"][:1]
    cfg["prompt"]["lengths"] = [cfg["prompt"]["length"]]
    cfg["resources"] = {"default": {"mem_mb": 1500, "runtime": 10, "threads": 1}}
    dest.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dest


def copy_repo(dest: Path):
    ignore = shutil.ignore_patterns(".git", ".venv", ".snakemake", "results", "__pycache__", ".pytest_cache",
                                    "*.egg-info", "resources/downloads")
    shutil.copytree(ROOT, dest, ignore=ignore)
    (dest / "results").mkdir(exist_ok=True)


def demo_targets(cfg_path: Path) -> list[str]:
    """ICLPT_SLURM_DEMO_TARGETS ('all' for the subset's whole DAG), else one IPT run's metrics.json plus the dense
    retrieval summary: ~11 SLURM jobs covering build_tiny_model, embed, retrieve, retrieval_summary, train_prompt,
    predict and score (prepare is a localrule), which fits the CI budget on 2 CPUs."""
    env = os.environ.get("ICLPT_SLURM_DEMO_TARGETS", "").split()
    if env == ["all"]:
        return []  # the default target
    if env:
        return env
    cfg = yaml.safe_load(cfg_path.read_text())
    task, model, seed, length = next(iter(cfg["tasks"])), next(iter(cfg["models"])), cfg["seeds"][0], \
        cfg["prompt"]["length"]
    res = f"results/{cfg['run']}"
    return [f"{res}/predictions/{task}/{model}/ipt/L{length}/retrieved/s{seed}/metrics.json",
            f"{res}/retrieval/{task}/{cfg['demos']['retriever']}/summary.json"]


def comparable(base: Path) -> dict:
    """What the pipeline produces deterministically: prepared data and retrieval files byte for byte, metric values."""
    out = {}
    for p in sorted(base.rglob("*")):
        rel = str(p.relative_to(base))
        if not p.is_file() or "/.checkpoints/" in f"/{rel}":
            continue
        if rel.startswith(("data/", "retrieval/")) and p.suffix == ".jsonl":
            out[rel] = p.read_bytes()
        elif p.name == "metrics.json":
            out[rel] = json.loads(p.read_text())["metrics"]
        elif p.name == "predictions.jsonl":
            out[rel] = [json.loads(line)["prediction"] for line in p.read_text().splitlines()]
    return out


@pytest.mark.slurm
@pytest.mark.slow
def test_demo_pipeline_through_slurm(cluster, tmp_path):
    missing = PIPELINE_RULES - _pipeline_rules()
    if missing:
        pytest.skip(f"pipeline rules not written yet: {sorted(missing)}")
    prof = write_local_profile(tmp_path / "profile")
    env = cluster.env()
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_DATASETS_OFFLINE="1")
    results = {}
    for mode in ("local", "slurm"):
        d = tmp_path / mode
        copy_repo(d)
        cfg = demo_subset_config(d / "config" / "slurm_subset.yaml")
        targets = demo_targets(cfg)
        # --configfile takes several values: it goes last so it cannot swallow the targets
        if mode == "local":
            args = ["--cores", "2", *targets, "--configfile", str(cfg)]
        else:
            args = ["--profile", str(prof), "--verbose", *targets, "--configfile", str(cfg)]
        rc, out, dt = run_snakemake(args, cwd=d, env=env, log=tmp_path / f"{mode}.log", timeout=1500)
        print(f"demo subset {mode}: {dt:.1f}s rc={rc} (log {tmp_path / f'{mode}.log'})")
        assert rc == 0, out[-8000:]
        if mode == "slurm":
            remote = check_every_remote_job_went_through_sbatch(out, d, cluster)
            ran = {executed_jobs(out)[j][0] for j in remote}
            print(f"SLURM jobs: {len(remote)}, rules: {sorted(ran)}")
            gpu_calls = [c for c in sbatch_calls(out) if re.search(r"rule_(train_prompt|predict)/", c)]
            assert all("--gpus=1" in c for c in gpu_calls), gpu_calls
        results[mode] = comparable(d / "results" / "slurmtest")
    kinds = {k.split("/")[0] for k in results["slurm"]} | {Path(k).name for k in results["slurm"]}
    if not os.environ.get("ICLPT_SLURM_DEMO_TARGETS"):  # the default targets produce all four kinds
        assert {"data", "retrieval", "predictions.jsonl", "metrics.json"} <= kinds, sorted(results["slurm"])
    assert results["slurm"].keys() == results["local"].keys()
    diff = [k for k in results["local"] if results["local"][k] != results["slurm"][k]]
    assert not diff, f"SLURM results differ from the local run's: {diff[:20]}"
