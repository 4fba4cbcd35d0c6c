"""Conda environments: every `conda:` path exists and its pins equal pyproject.toml's."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES = sorted((ROOT / "workflow" / "rules").glob("*.smk"))


def _pins(lines):
    out = {}
    for line in lines:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;]+)\s*", line)
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def pyproject_pins():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    deps = data["project"]["dependencies"]
    pins = _pins(deps)
    assert len(pins) == len(deps), "every runtime dependency in pyproject.toml must be pinned with =="
    return pins


def conda_paths():
    found = []
    for smk in RULES:
        for m in re.finditer(r"^\s*conda:\s*\n?\s*[\"']([^\"']+)[\"']", smk.read_text(), re.M):
            found.append((smk, (smk.parent / m.group(1)).resolve()))
    return found


def test_every_rule_has_an_existing_conda_env():
    paths = conda_paths()
    assert paths, "no conda: directive found in workflow/rules/*.smk"
    for smk, path in paths:
        assert path.is_file(), f"{smk.name}: conda env {path} does not exist"
    n_rules = sum(len(re.findall(r"^rule \w+:", s.read_text(), re.M)) for s in RULES)
    assert len(paths) == n_rules, f"{len(paths)} conda: directives for {n_rules} rules"


def test_env_pins_equal_pyproject():
    want = pyproject_pins()
    for env_file in sorted((ROOT / "envs").glob("*.yaml")):
        env = yaml.safe_load(env_file.read_text())
        pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
        got = _pins(pip)
        assert got, f"{env_file.name}: no pinned pip packages"
        for name, version in got.items():
            assert name in want, f"{env_file.name}: {name} is not a dependency in pyproject.toml"
            assert want[name] == version, f"{env_file.name}: {name}=={version} but pyproject.toml pins {want[name]}"
        py = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
        assert py.startswith("python=3.1"), py


def test_pin_checker_detects_a_mismatch():
    assert _pins(["torch==2.13.0", "pandas == 3.1.1", "foo>=1"]) == {"torch": "2.13.0", "pandas": "3.1.1"}
