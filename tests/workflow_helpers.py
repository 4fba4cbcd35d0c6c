"""Run the real Snakefile on a copy of the repository (used by the end-to-end and rerun tests)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
COPY = ["Snakefile", "workflow", "config", "resources/demo_data", "src", "envs", "profiles"]


def copy_repo(dest: Path) -> Path:
    """Copy what a run needs (no results, no .snakemake, no venv) into dest."""
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".snakemake")
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore, dirs_exist_ok=True)
        elif src.exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def env() -> dict[str, str]:
    e = dict(os.environ)
    e.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    e.pop("PYTHONPATH", None)
    return e


def write_config(workdir: Path, cfg: dict, name: str = "test.yaml") -> Path:
    path = workdir / "config" / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def snakemake(workdir: Path, *args: str, timeout: int = 1800, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", *args]
    proc = subprocess.run(cmd, cwd=workdir, env=env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


_STATS = re.compile(r"^Job stats:[ \t]*\n(?:.*\n)*?-+[ \t]+-+[ \t]*\n((?:\S+[ \t]+\d+[ \t]*\n)+)", re.M)


def job_stats(output: str) -> Counter:
    """Rule -> job count from Snakemake's 'Job stats' table (empty when nothing is to be done)."""
    m = _STATS.search(output)
    if not m:
        return Counter()
    counts = Counter()
    for line in m.group(1).splitlines():
        rule, n = line.split()
        if rule != "total":
            counts[rule] = int(n)
    return counts


def dry_run(workdir: Path, configfile: Path, *extra: str) -> tuple[Counter, str]:
    proc = snakemake(workdir, "-n", "--cores", "1", "--configfile", str(configfile), *extra)
    out = proc.stdout + proc.stderr
    return job_stats(out), out


_JOB = re.compile(r"^(?:local)?rule (\w+):\n((?:[ \t]+.*\n)*)", re.M)


def planned_jobs(output: str) -> list[tuple[str, str]]:
    """(rule, first output) of every job listed by a (non-quiet) dry run."""
    jobs = []
    for m in _JOB.finditer(output if output.endswith("\n") else output + "\n"):
        out = re.search(r"^\s+output: ([^,\n]+)", m.group(2), re.M)
        jobs.append((m.group(1), out.group(1).strip() if out else ""))
    return jobs
