"""Shared parts of the task adapters: the record schema, text normalisation and the adapter base class.

A task adapter turns one split file in the dataset's OFFICIAL format into records (docs/architecture.md):

    {"id": str, "split": str, "input": str, "target": str, "references": [str, ...], "meta": {...}}

`input` and `target` are single-line (whitespace runs, newlines included, collapse to one space; an adapter
passing `exact_references=True` to `make_record` keeps its references, and so the target, as it produced them).
`meta.group` identifies records that share an input (e.g. the annotations of one DART entry); retrieval never
gives a training query a demo of its own group. Adding a task = adding one module with a `Task` subclass and
registering it in `iclpt.data.tasks.TASKS`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from iclpt.io import DataError, PathLike

SPLITS = ("train", "dev", "test")
_WS = re.compile(r"\s+")


def one_line(text: Any) -> str:
    """Collapse every whitespace run (newlines and tabs included) to one space and strip the ends."""
    if text is None:
        return ""
    return _WS.sub(" ", str(text)).strip()


def make_id(task: str, split: str, key: int | str) -> str:
    """Stable id `<task>-<split>-<key>`; integer keys are zero-padded to 5 digits (`dart-dev-00012`)."""
    if isinstance(key, int):
        return f"{task}-{split}-{key:05d}"
    return f"{task}-{split}-{key}"


def make_record(
    task: str,
    split: str,
    rid: str,
    input_text: str,
    references: list[str],
    meta: dict[str, Any] | None = None,
    *,
    where: str,
    exact_references: bool = False,
) -> dict[str, Any]:
    """Build one record; the target is the first reference. `where` (file:line) names the source in errors.

    References are whitespace-collapsed (`one_line`) unless `exact_references` is true: then they are kept
    byte-for-byte as the adapter produced them (e.g. Spider SQL, whose string literals may hold doubled
    spaces); a reference that is empty or only whitespace is dropped either way."""
    bad = next((r for r in references if r is not None and not isinstance(r, str)), None)
    if bad is not None:
        raise DataError(f"{where}: {task} {split} example {rid}: a reference must be a string, "
                        f"got {type(bad).__name__} {bad!r:.60}")
    inp = one_line(input_text)
    if exact_references:
        refs = [str(r) for r in references if r is not None and str(r).strip()]
    else:
        refs = [one_line(r) for r in references]
        refs = [r for r in refs if r]
    if not inp:
        raise DataError(f"{where}: empty input for {task} {split} example {rid}")
    if not refs:
        raise DataError(f"{where}: no non-empty reference for {task} {split} example {rid}")
    meta = dict(meta or {})
    meta.setdefault("group", rid)
    return {"id": rid, "split": split, "input": inp, "target": refs[0], "references": refs, "meta": meta}


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch. `name` is its file name (also the path under an overriding base URL).

    archive: None (saved as `name`), "zip" or "tar.gz" (unpacked; `strip` is a leading folder removed from
    every member, e.g. "spider_data/")."""

    url: str
    name: str
    sha256: str | None = None
    archive: str | None = None
    strip: str = ""


@dataclass(frozen=True)
class DownloadSpec:
    """Where a task's official data comes from (iclpt.data.download fetches it)."""

    task: str
    files: tuple[RemoteFile, ...]
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Task:
    """Base class of a task adapter. Subclasses set the class attributes and implement `load`.

    A task is one module: its adapter (`load`), its official download (`download`), its metrics (the first is
    the primary one) with their answer normalisation (`normalize_answer`, used by exact match), and `version`
    (bump it when the prepared data or the scoring of this task changes without a code change here). It also
    holds the facts other stages ask about it: `published_sizes` (split -> records of the official split, as
    `load` emits them; only the splits known for certain), `demo_files` (split -> its small example file under
    resources/demo_data), `dev_group` (what a dev slice held out of train keeps whole) and, for tasks scored on
    databases, where those are (`database_dir`)."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    metrics: ClassVar[list[str]] = []
    download: ClassVar[DownloadSpec | None] = None
    max_new_tokens: ClassVar[int] = 64
    input_label: ClassVar[str] = "Input"
    output_label: ClassVar[str] = "Output"
    description: ClassVar[str] = ""
    published_sizes: ClassVar[Mapping[str, int]] = {}
    demo_files: ClassVar[Mapping[str, str]] = {}
    #: the `meta` key whose value a dev slice held out of train keeps whole (when a config's dev and test files
    #: are one file, iclpt.data.prepare): Spider `db_id` (databases), ToTTo `table`; None: `meta.group`
    dev_group: ClassVar[str | None] = None

    def load(self, split: str, path: Path, **ctx: Any) -> list[dict[str, Any]]:
        """Read one split file in the official format and return its records (in file order)."""
        raise NotImplementedError

    def side_files(self, split: str, path: Path) -> list[Path]:
        """Other files `load` reads for this split (derived from the path only; nothing is read here).

        The prepare rule lists them as inputs so that editing them reruns the job."""
        return []

    def file_state(self, split: str, path: Path) -> dict[str, Any]:
        """What else on disk the split's records depend on that `side_files` cannot list without reading the
        split (e.g. which Spider databases exist). The prepare rule's params carry it, so a change reruns it."""
        return {}

    def normalize_answer(self, text: str) -> str:
        """The string exact match compares: surrounding whitespace removed, inner runs collapsed to one space."""
        return " ".join(str(text).split())

    def database_dir(self, files: Mapping[str, str], base: str) -> str | None:
        """The folder holding `<db_id>/<db_id>.sqlite` of the test split, for a task whose metrics read databases
        (`files`: split -> path under `base`, the configured data_root or download folder); None otherwise."""
        return None

    def database_tables(self, database_dir: PathLike) -> Path | None:
        """The schema file (with the foreign keys) beside `database_dir`, when the task ships one and it exists."""
        return None

    def __repr__(self) -> str:
        return f"<task {self.name}>"


#: more unreachable references than this fraction: the decoding budget is too small (the predict job warns)
UNREACHABLE_WARN_FRACTION = 0.01


def reference_budget(ref_tokens: Sequence[int], max_new_tokens: int) -> dict[str, Any]:
    """How far a decoding budget reaches: `n_refs`, `n_unreachable_refs` (references needing more than
    `max_new_tokens` tokens: a prediction can never equal them), `ref_tokens_p99` (the 99th percentile of the
    references' token counts, nearest rank; None without references) and `max_new_tokens`."""
    lengths = sorted(int(n) for n in ref_tokens)
    p99 = lengths[max(0, math.ceil(0.99 * len(lengths)) - 1)] if lengths else None
    return {"max_new_tokens": int(max_new_tokens), "n_refs": len(lengths),
            "n_unreachable_refs": sum(n > int(max_new_tokens) for n in lengths), "ref_tokens_p99": p99}


def database_file(database_dir: PathLike, db_id: str) -> Path:
    """`<database_dir>/<db_id>/<db_id>.sqlite`: where a database task keeps the database of `db_id` ("*" globs all)."""
    return Path(database_dir) / db_id / f"{db_id}.sqlite"


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")


def expect(cond: bool, where: str, what: str) -> None:
    """Raise DataError(`where: what`) unless `cond`."""
    if not cond:
        raise DataError(f"{where}: {what}")


def require_fields(row: Any, fields: tuple[str, ...], where: str) -> dict[str, Any]:
    """`row` must be a JSON object holding `fields`; else DataError naming `where` and what is missing."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object")
    missing = [k for k in fields if k not in row]
    if missing:
        raise DataError(f"{where}: missing field(s) {', '.join(missing)}")
    return row


def require_str(row: dict[str, Any], fields: tuple[str, ...], where: str) -> None:
    """Each of `fields` of `row` must be a string; else DataError naming `where`, the field and its type."""
    for k in fields:
        if not isinstance(row.get(k), str):
            raise DataError(f"{where}: field {k!r} must be a string, got {type(row.get(k)).__name__} "
                            f"{row.get(k)!r:.60}")


def require_file(path: Path, what: str = "file") -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    return path
