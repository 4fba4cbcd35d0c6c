"""MTOP, English (Li et al. 2021): an utterance -> its decoupled logical form.

Official formats, both read:
- JSONL (the `iohadrubin/mtop` / `tasksource/mtop` layout used by EPR/CEIL and the offline sample): one object
  per line with `question` (utterance) and `logical_form`; test rows also carry `idx`, `intent`, `domain`, ...
- The official TSV (`mtop/en/{train,eval,test}.txt` of https://dl.fbaipublicfiles.com/mtop/mtop.zip), chosen by
  the `.txt` / `.tsv` suffix: 8 tab-separated columns id, intent, slot spans, utterance, domain, locale,
  decoupled logical form, tokens JSON. A line with another column count, an intent column not starting with
  `IN:` or a logical form not starting with `[` (columns shifted) is a DataError naming file and line.

Input = the utterance; target = the logical form (both whitespace-collapsed by `make_record`), e.g.
`Maricopa County weather forecast for this week` -> `[IN:GET_WEATHER [SL:LOCATION Maricopa County ] ... ]`.
`meta.domain` / `meta.intent` when the file has them; rows with the same utterance share `meta.group`.
Ids: `mtop-<split>-<index>`.
Exact match as the reference evaluators (CASPER, UnifiedSKG) compute it: both strings stripped at the ends,
then compared as they are (inner whitespace and case matter).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from iclpt.data.tasks.base import (
    DownloadSpec,
    RemoteFile,
    Task,
    check_split,
    make_id,
    make_record,
    require_file,
    require_str,
)
from iclpt.io import DataError, read_jsonl, read_lines

TSV_COLUMNS = ("id", "intent", "slots", "utterance", "domain", "locale", "decoupled logical form", "tokens JSON")


def _tsv_row(cols: list[str], where: str) -> dict[str, Any]:
    """One official TSV line: exactly the 8 columns, the intent and the logical form where they belong."""
    if len(cols) != len(TSV_COLUMNS):
        raise DataError(f"{where}: expected {len(TSV_COLUMNS)} tab-separated MTOP columns "
                        f"({', '.join(TSV_COLUMNS)}), got {len(cols)}")
    if not cols[1].startswith("IN:"):
        raise DataError(f"{where}: column 2 (intent) must start with 'IN:', got {cols[1]!r:.60}")
    if not cols[6].lstrip().startswith("["):
        raise DataError(f"{where}: column 7 (decoupled logical form) must start with '[', got {cols[6]!r:.60}")
    return {"idx": cols[0], "intent": cols[1], "question": cols[3], "domain": cols[4], "logical_form": cols[6]}


def _read_tsv(path: Path) -> list[tuple[str, dict[str, Any]]]:
    require_file(path)
    rows = []
    for lineno, line in enumerate(read_lines(path), start=1):
        if line.strip():
            rows.append((f"{path}:{lineno}", _tsv_row(line.split("\t"), f"{path}:{lineno}")))
    return rows


class MTOP(Task):
    name = "mtop"
    version = "1"
    metrics = ["exact_match"]
    max_new_tokens = 96
    input_label = "Utterance"
    output_label = "Parse"
    description = "utterance -> decoupled logical form"
    published_sizes = {"test": 4386}
    demo_files = {"train": "mtop/train.json", "dev": "mtop/dev.json", "test": "mtop/test.json"}
    download = DownloadSpec("mtop", (
        RemoteFile("https://dl.fbaipublicfiles.com/mtop/mtop.zip", "mtop.zip", archive="zip"),
    ), note="official MTOP release, https://fb.me/mtop_dataset (CC BY-SA 4.0)")

    def normalize_answer(self, text: str) -> str:
        """Strip the ends only; inner whitespace is compared as it is (the reference evaluators' exact match)."""
        return str(text).strip()

    def load(self, split: str, path: Path, **ctx: Any) -> list[dict[str, Any]]:
        check_split(split)
        path = Path(path)
        if path.suffix.lower() in (".txt", ".tsv"):
            rows = _read_tsv(path)
        else:
            rows = [(f"{path}: row {n + 1}", r) for n, r in
                    enumerate(read_jsonl(path, required=("question", "logical_form")))]
        records = []
        for n, (where, row) in enumerate(rows):
            require_str(row, ("question", "logical_form"), where)
            meta = {k: row[k] for k in ("domain", "intent") if row.get(k)}
            rid = make_id("mtop", split, n)
            records.append(make_record("mtop", split, rid, row["question"], [row["logical_form"]], meta, where=where))
        return records


TASK = MTOP()
