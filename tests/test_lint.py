"""`snakemake --lint` is clean for every shipped config (part of `make test`)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from workflow_helpers import ROOT, env


@pytest.mark.parametrize("name", ["demo.yaml", "tiny.yaml", "sample.yaml", "mini.yaml", "config.yaml"])
def test_snakemake_lint_is_clean(name, request):
    if name == "sample.yaml":
        request.getfixturevalue("shared_data")  # its data_root is ../shared/data: skips in a user's clone
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "--configfile", f"config/{name}"],
                          cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Lints for" not in out, out[-4000:]
    assert "Congratulations, your workflow is in a good condition!" in out


def _tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env(), capture_output=True, text=True,
                          timeout=300)


def test_ruff_is_clean():
    """pyproject.toml's [tool.ruff] rules hold for the library, scripts, tests and benchmarks."""
    proc = _tool("ruff", "check", "--no-cache", "src", "workflow/scripts", "tests", "benchmarks")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


def test_snakefmt_is_clean():
    """The Snakefile and every rule file are formatted as snakefmt writes them (pyproject.toml's [tool.snakefmt])."""
    proc = _tool("snakefmt", "--check", "Snakefile", "workflow/rules")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
