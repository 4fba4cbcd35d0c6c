"""README blocks generated from a run's files, never edited by hand (`make readme-tables RUN=results/mini`).

A run made through the Makefile (`make demo`, `make mini`, `make mini-samples`) is stamped: `stamp start` before
Snakemake and `stamp end` after it write `<run dir>/run_info.json` (git commit and whether the tree was dirty,
CPU model and count, whether it has native bf16, start, end and wall seconds). `splice` replaces, in the README,
the text between

    <!-- BEGIN GENERATED <block> -->
    <!-- END GENERATED <block> -->

with the named files of the run, verbatim, under one provenance line built from `run_info.json`. A README without
the block's markers, a missing file or an unfinished stamp is an error naming it: nothing is written then.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from iclpt.devices import cpu_has_bf16
from iclpt.io import atomic_open

RUN_INFO = "run_info.json"


class ReadmeError(ValueError):
    pass


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo; the platform's processor string elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def stamp_start(run_dir: Path, now: float | None = None) -> dict[str, Any]:
    """Write run_info.json before a run: commit, dirty tree, machine, start time (wall and end left open)."""
    info = {"commit": _git("rev-parse", "--short", "HEAD") or "unknown",
            "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
            "cpu": cpu_model(), "cpus": os.cpu_count(), "native_bf16": cpu_has_bf16(),
            "started": now if now is not None else time.time(), "ended": None, "wall_s": None}
    _write(run_dir / RUN_INFO, info)
    return info


def stamp_end(run_dir: Path, now: float | None = None) -> dict[str, Any]:
    """Close run_info.json after a successful run: end time and wall seconds."""
    info = read_info(run_dir, finished=False)
    info["ended"] = now if now is not None else time.time()
    info["wall_s"] = round(info["ended"] - info["started"], 1)
    _write(run_dir / RUN_INFO, info)
    return info


def read_info(run_dir: Path, finished: bool = True) -> dict[str, Any]:
    path = run_dir / RUN_INFO
    if not path.is_file():
        raise ReadmeError(f"{path}: no run stamp; make the run through the Makefile (make demo / make mini)")
    info = json.loads(path.read_text())
    if finished and info.get("wall_s") is None:
        raise ReadmeError(f"{path}: the run was started but never finished (no end stamp)")
    return info


def provenance_line(info: dict[str, Any], run_dir: Path) -> str:
    minutes, seconds = divmod(int(round(info["wall_s"])), 60)
    day = time.strftime("%Y-%m-%d", time.gmtime(info["ended"]))
    bf16 = "with" if info.get("native_bf16") else "without"
    dirty = " plus uncommitted changes" if info.get("dirty") else ""
    return (f"*Generated from `{run_dir}` by `make readme-tables` (never edited by hand): commit "
            f"{info['commit']}{dirty}, {info['cpus']}-CPU {info['cpu']} ({bf16} native bf16: AVX512-BF16 or AMX), "
            f"{day}; "
            f"the run took {minutes} min {seconds:02d} s wall.*")


def _markers(block: str) -> tuple[str, str]:
    return f"<!-- BEGIN GENERATED {block} -->", f"<!-- END GENERATED {block} -->"


def splice(readme: str, block: str, body: str) -> str:
    """`readme` with the text between the block's markers replaced by `body` (markers kept)."""
    begin, end = _markers(block)
    i, j = readme.find(begin), readme.find(end)
    if i < 0 or j < 0 or j < i:
        raise ReadmeError(f"README has no '{begin}' ... '{end}' pair for block {block!r}")
    return readme[: i + len(begin)] + "\n" + body.rstrip("\n") + "\n" + readme[j:]


def block_body(run_dir: Path, files: Sequence[str]) -> str:
    """The provenance line, then each file of the run verbatim (Markdown as is, anything else fenced)."""
    parts = [provenance_line(read_info(run_dir), run_dir)]
    for name in files:
        path = run_dir / name
        if not path.is_file():
            raise ReadmeError(f"{path}: not found (the README block needs it)")
        text = path.read_text().strip("\n")
        parts.append(text if path.suffix == ".md" else f"`{name}`:\n\n```\n{text}\n```")
    return "\n\n".join(parts)


def _write(path: Path, info: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        f.write(json.dumps(info, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m iclpt.reporting.readme", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("start", "end"):
        sub.add_parser(name).add_argument("run_dir", type=Path)
    sp = sub.add_parser("splice")
    sp.add_argument("readme", type=Path)
    sp.add_argument("block")
    sp.add_argument("run_dir", type=Path)
    sp.add_argument("files", nargs="*")
    args = ap.parse_args(argv)
    if args.cmd == "start":
        stamp_start(args.run_dir)
    elif args.cmd == "end":
        stamp_end(args.run_dir)
    else:
        text = splice(args.readme.read_text(), args.block, block_body(args.run_dir, args.files))
        with atomic_open(args.readme) as f:
            f.write(text)


if __name__ == "__main__":
    main()
