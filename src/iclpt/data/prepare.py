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

Dev held out of train ([choice], `dev_from_train`): checkpoint selection reads the dev split, so where a config's
dev and test files are one file (ToTTo's and Spider's official dev sets serve as their test sets,
:func:`dev_is_test`), the dev split is instead a slice of TRAIN that is removed from train (never trained on,
never a demo). It is cut in whole groups (`Task.dev_group`: Spider databases, ToTTo tables; else `meta.group`), so
no group straddles dev and train: the groups in a seeded order (`random.Random(f"dev-holdout-{seed}")` shuffles
their sorted keys), taken until at least `dev_from_train` records are held out, and never more than half the
groups (train keeps the rest). Held-out records keep their ids (unique within the task, as they leave train),
with `split: dev` and `meta.held_out_from: train`. It happens before subsampling: `max_examples.train` samples
what is left, `max_examples.dev` the held-out slice.
"""

from __future__ import annotations

import logging
import os
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


def dev_is_test(files: Mapping[str, str | Path]) -> bool:
    """Whether the dev and test files resolve to the same file (symbolic links and `..` followed)."""
    return os.path.realpath(files["dev"]) == os.path.realpath(files["test"])


def hold_out_dev(train: list[dict[str, Any]], n: int, key: str | None, seed: int,
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train left, dev held out): whole groups of `meta[key]` (None: `meta.group`) in a seeded order until at
    least `n` records are held out, at most half the groups (rounded down); both in the original order."""
    if n < 1:
        raise ValueError(f"dev_from_train must be >= 1, got {n}")
    group = [str(r["meta"].get(key or "group", r["meta"]["group"])) for r in train]
    sizes: dict[str, int] = {}
    for g in group:
        sizes[g] = sizes.get(g, 0) + 1
    if len(sizes) < 2:
        raise DataError(f"{len(train)} train records form {len(sizes)} group(s) by {key or 'group'}: a dev slice "
                        "held out of train needs at least two (one stays in train)")
    order = sorted(sizes)
    random.Random(f"dev-holdout-{seed}").shuffle(order)
    held: set[str] = set()
    taken = 0
    for g in order[: len(order) // 2]:
        if taken >= n:
            break
        held.add(g)
        taken += sizes[g]
    dev = [_as_dev(r) for r, g in zip(train, group) if g in held]
    return [r for r, g in zip(train, group) if g not in held], dev


def _as_dev(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "split": "dev", "meta": {**record["meta"], "held_out_from": "train"}}


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
    dev_from_train: int | None = None,
    **ctx: Any,
) -> dict[str, list[dict[str, Any]]]:
    """Load, validate, group and subsample the train/dev/test splits of `task` (see the module docstring).

    `missing_database`: error | exclude, for test examples whose database file is missing (Spider). `excluded`,
    when given, receives `{split: [{"id", "reason"}, ...]}` of every example an adapter left out.
    `dev_from_train`: when the dev and test files are one file (:func:`dev_is_test`), the dev split is at least
    this many train records held out of train (:func:`hold_out_dev`); the workflow always gives it there. None
    reads dev from its file (direct calls only)."""
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
    loaded, left_out = _load_splits(adapter, files, dev_from_train, seed, missing_database=missing_database, **ctx)
    out = {}
    for split in SPLITS:
        records = loaded[split]
        kept = subsample(records, max_examples.get(split), seed)
        log.info("%s %s: %d records from %s, %d kept", adapter.name, split, len(records), files[split], len(kept))
        if left_out[split]:
            log.warning("%s %s: %d example(s) left out of %s (first: %s, %s)", adapter.name, split,
                        len(left_out[split]), files[split], left_out[split][0]["id"], left_out[split][0]["reason"])
        if excluded is not None:
            excluded[split] = left_out[split]
        out[split] = kept
    return out


def _load_splits(adapter: Task, files: Mapping[str, str | Path], dev_from_train: int | None, seed: int,
                 **ctx: Any) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, str]]]]:
    """({split: records}, {split: left-out examples}) before subsampling; dev held out of train when the dev and
    test files are one file and `dev_from_train` is given."""
    holdout = dev_from_train is not None and dev_is_test(files)
    loaded: dict[str, list[dict[str, Any]]] = {}
    left_out: dict[str, list[dict[str, str]]] = {s: [] for s in SPLITS}
    for split in SPLITS:
        if not (holdout and split == "dev"):
            loaded[split] = load_split(adapter, split, files[split], excluded=left_out[split], **ctx)
    if holdout:
        loaded["train"], loaded["dev"] = hold_out_dev(loaded["train"], int(dev_from_train), adapter.dev_group, seed)
        log.info("%s: dev and test are one file (%s): dev is %d train records held out of train (whole groups by "
                 "%s), %d left in train", adapter.name, files["dev"], len(loaded["dev"]),
                 adapter.dev_group or "group", len(loaded["train"]))
    return loaded, left_out


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
