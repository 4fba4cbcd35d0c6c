"""Shared pytest setup: offline Hugging Face, the repository root and the real-data samples in ../shared/data."""

from __future__ import annotations

import os

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_var] = "1"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (Path(__file__).parents[1] / ".." / "shared" / "data").resolve()
#: seconds of the real-model steps the tests ran (download, conversion, load); printed in the terminal summary
STEP_TIMINGS: dict[str, float] = {}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the real-model step timings the session recorded (information, not a check)."""
    if STEP_TIMINGS:
        terminalreporter.section("real-model step timings")
        for name, seconds in STEP_TIMINGS.items():
            terminalreporter.write_line(f"{name}: {seconds:.1f} s")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (the folder holding the Snakefile)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real dataset samples in their official formats); skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real-data samples not found at {SHARED_DATA} (a fresh clone has no ../shared/data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def demo_data(repo_root: Path) -> Path:
    """resources/demo_data: the small demo files in each task's official format."""
    return repo_root / "resources" / "demo_data"
