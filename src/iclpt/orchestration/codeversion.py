"""Code versions: a digest of the library modules a job runs, so that editing one reruns exactly its jobs.

`code_version(["iclpt.engine.generation"], task="dart")` hashes the source of `iclpt/engine/generation.py` and of every
`iclpt` module it imports, transitively (imports found statically with `ast`, including those inside
functions). Task adapters are per task: with `task=` given, `iclpt.data.tasks.<other task>` modules are left out, so
editing the MTOP adapter changes the digest of MTOP's jobs only. Rules pass the digest as a `params:` value
(Snakemake reruns a job whose params changed). Digests are cached per process: Snakemake computes them once
per parse, so a module edited while a workflow runs counts at the next invocation.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from functools import cache
from pathlib import Path

PACKAGE = "iclpt"
ROOT = Path(__file__).resolve().parents[1]
TASKS_PACKAGE = f"{PACKAGE}.data.tasks"
#: task-package modules shared by every task (always included when the package is)
TASK_SHARED = {TASKS_PACKAGE, f"{TASKS_PACKAGE}.base"}


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The source file of an iclpt module (a package's __init__.py), or None if it is not a library module."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    parts = name.split(".")[1:]
    if not parts:
        return root / "__init__.py" if (root / "__init__.py").is_file() else None
    rel = Path(*parts)
    for p in (root / rel.with_suffix(".py"), root / rel / "__init__.py"):
        if p.is_file():
            return p
    return None


def _imports_in(tree: ast.AST, name: str, is_pkg: bool) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            mod = _resolve(node, name, is_pkg)
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)  # `from pkg import submodule`
    return found


def _resolve(node: ast.ImportFrom, current: str, is_pkg: bool) -> str:
    if not node.level:
        return node.module or ""
    base = current.split(".")
    base = base if is_pkg else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


@cache
def imports_of(name: str, root: Path = ROOT) -> tuple[str, ...]:
    """The iclpt modules `name` imports (directly), as found in its source."""
    path = module_file(name, root)
    if path is None:
        return ()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = _imports_in(tree, name, path.name == "__init__.py")
    return tuple(sorted(m for m in found if module_file(m, root) is not None))


def _keep(name: str, task: str | None) -> bool:
    if task is None or not name.startswith(TASKS_PACKAGE + ".") or name in TASK_SHARED:
        return True
    return name == f"{TASKS_PACKAGE}.{task}"


def module_closure(roots: Iterable[str], task: str | None = None, root: Path = ROOT) -> list[str]:
    """Every iclpt module reachable from `roots` (their parents' __init__ included), sorted."""
    todo, seen = list(roots), set()
    while todo:
        name = todo.pop()
        if name in seen or module_file(name, root) is None or not _keep(name, task):
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += list(imports_of(name, root))
    return sorted(seen)


def code_version(roots: Iterable[str], task: str | None = None, root: Path = ROOT) -> str:
    """sha256 (first 16 hex digits) over the names and sources of `module_closure(roots, task)`."""
    return _code_version(tuple(sorted(roots)), task, root)


@cache
def _code_version(roots: tuple[str, ...], task: str | None, root: Path) -> str:
    h = hashlib.sha256()
    for name in module_closure(roots, task, root):
        path = module_file(name, root)
        assert path is not None
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def script_modules(script: str | Path, root: Path = ROOT) -> list[str]:
    """The iclpt modules a (workflow) script imports directly."""
    path = Path(script)
    found = _imports_in(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), "__main__", False)
    return sorted(m for m in found if module_file(m, root) is not None)


@cache
def script_version(script: str | Path, task: str | None = None, root: Path = ROOT) -> str:
    """The code version of the library a script runs: `code_version` of the modules it imports."""
    return code_version(script_modules(script, root), task=task, root=root)
