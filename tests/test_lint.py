"""`snakemake --lint` is clean for every shipped config (part of `make test`)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from workflow_helpers import ROOT, env


@pytest.mark.parametrize("name", ["demo.yaml", "tiny.yaml", "sample.yaml", "mini.yaml", "config.yaml"])
def test_snakemake_lint_is_clean(name):
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "--configfile", f"config/{name}"],
                          cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Lints for" not in out, out[-4000:]
    assert "Congratulations, your workflow is in a good condition!" in out
