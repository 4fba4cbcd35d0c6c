"""Prepare a task: load its three splits with the task adapter, validate, subsample, group.

`prepare_task(task, files, max_examples, seed)` returns `{split: [record, ...]}` for train/dev/test (records as
in docs/architecture.md). Checks: every file exists (the error names it), malformed JSON names file and line
(from the adapters / iclpt.io), an empty split names task, split and file, ids are unique within the task's
split (the same file may serve two splits: ids carry the split, so they stay unique within the task).

Exclusions are never silent: an example an adapter leaves out (a Spider test example whose database file is
missing under `missing_database="exclude"`, a DART train entry without annotation text, a Logic2Text train line
without caption) is logged and listed in `excluded` (the prepare rule writes it to prepare.json).

Groups: after loading, records of one split with the same `input` share `meta.group` (the group of the first
of them), on top of what the adapter set (DART annotations of one entry; identical MTOP utterances ...).

Subsampling (`max_examples[split] = k`, applied after grouping): if the split has n > k records, keep the
records at `sorted(random.Random(seed).sample(range(n), k))`: a seeded uniform sample without replacement
that keeps the original order. It samples RECORDS, also for DART train where one entry gives one record per
annotation: `k` is then the number of training pairs (what the training stage consumes); the kept annotations of
one entry still share a group. Each split is sampled with its own `random.Random(seed)`, so a split's sample
does not depend on the other splits. `None` (or a k >= n) keeps everything.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from iclpt.data.tasks import SPLITS, Task, get_task
from iclpt.io import DataError

log = logging.getLogger(__name__)


def subsample(records: list[dict[str, Any]], k: int | None, seed: int) -> list[dict[str, Any]]:
    """Seeded uniform sample of k records without replacement, in original order (k None or >= n: all)."""
    if k is None or k >= len(records):
        return list(records)
    if k < 1:
        raise ValueError(f"max_examples must be >= 1 or null, got {k}")
    keep = sorted(random.Random(seed).sample(range(len(records)), k))
    return [records[i] for i in keep]


def assign_groups(records: list[dict[str, Any]]) -> None:
    """Records with the same input share the group of the first of them (in place)."""
    first: dict[str, str] = {}
    for r in records:
        g = first.setdefault(r["input"], r["meta"].get("group", r["id"]))
        r["meta"]["group"] = g


def validate_records(task: str, split: str, path: Path, records: list[dict[str, Any]]) -> None:
    if not records:
        raise DataError(f"{task} {split}: no examples in {path} (empty split)")
    seen: set[str] = set()
    for r in records:
        if r["id"] in seen:
            raise DataError(f"{task} {split}: duplicate id {r['id']!r} in {path}")
        seen.add(r["id"])
        if "\n" in r["input"] or "\n" in r["target"] or not r["references"]:
            raise DataError(f"{task} {split}: record {r['id']} breaks the record schema ({path})")


def load_split(task: str | Task, split: str, path: str | Path, **ctx: Any) -> list[dict[str, Any]]:
    """Load and validate one split file (no subsampling). ctx reaches the adapter (`missing_database`,
    `excluded`: the list that receives the examples the adapter leaves out, with their reason)."""
    adapter = get_task(task)
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {adapter.name} {split} file not found")
    records = adapter.load(split, path, **ctx)
    validate_records(adapter.name, split, path, records)
    assign_groups(records)
    return records


def prepare_task(
    task: str | Task,
    files: Mapping[str, str | Path],
    max_examples: Mapping[str, int | None] | None = None,
    seed: int = 0,
    missing_database: str = "error",
    excluded: dict[str, list[dict[str, str]]] | None = None,
    **ctx: Any,
) -> dict[str, list[dict[str, Any]]]:
    """Load, validate, group and subsample the train/dev/test splits of `task` (see the module docstring).

    `missing_database`: error | exclude, for test examples whose database file is missing (Spider). `excluded`,
    when given, receives `{split: [{"id", "reason"}, ...]}` of every example an adapter left out."""
    if missing_database not in ("error", "exclude"):
        raise ValueError(f"missing_database must be 'error' or 'exclude', got {missing_database!r}")
    adapter = get_task(task)
    missing = [s for s in SPLITS if s not in files]
    if missing:
        raise DataError(f"{adapter.name}: no file given for split(s) {', '.join(missing)}")
    for split in SPLITS:  # name every missing file before reading any
        p = Path(files[split])
        if not p.is_file():
            raise DataError(f"{p}: {adapter.name} {split} file not found")
        for side in adapter.side_files(split, p):
            if not ctx and not Path(side).is_file():
                raise DataError(f"{side}: {adapter.name} {split} needs this file next to {p}, not found")
    max_examples = dict(max_examples or {})
    out = {}
    for split in SPLITS:
        left_out: list[dict[str, str]] = []
        records = load_split(adapter, split, files[split], missing_database=missing_database, excluded=left_out,
                             **ctx)
        kept = subsample(records, max_examples.get(split), seed)
        log.info("%s %s: %d records from %s, %d kept", adapter.name, split, len(records), files[split], len(kept))
        if left_out:
            log.warning("%s %s: %d example(s) left out of %s (first: %s, %s)", adapter.name, split, len(left_out),
                        files[split], left_out[0]["id"], left_out[0]["reason"])
        if excluded is not None:
            excluded[split] = left_out
        out[split] = kept
    return out


def summarize(splits: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Counts per split: records, references, groups."""
    return {
        s: {
            "records": len(rs),
            "references": sum(len(r["references"]) for r in rs),
            "groups": len({r["meta"]["group"] for r in rs}),
        }
        for s, rs in splits.items()
    }
