"""MTOP, English (Li et al. 2021): an utterance -> its decoupled logical form.

Official formats, both read:
- JSONL (the `iohadrubin/mtop` / `tasksource/mtop` layout used by EPR/CEIL and the offline sample): one object
  per line with `question` (utterance) and `logical_form`; test rows also carry `idx`, `intent`, `domain`, ...
- The official TSV (`mtop/en/{train,eval,test}.txt` of https://dl.fbaipublicfiles.com/mtop/mtop.zip), chosen by
  the `.txt` / `.tsv` suffix: 8 tab-separated columns id, intent, slot spans, utterance, domain, locale,
  decoupled logical form, tokens JSON.

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

from iclpt.io import DataError, read_jsonl
from iclpt.tasks.base import DownloadSpec, RemoteFile, Task, check_split, make_id, make_record, require_file


def _read_tsv(path: Path) -> list[tuple[str, dict[str, Any]]]:
    require_file(path)
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            cols = line.split("\t")
            if len(cols) < 7:
                raise DataError(f"{path}:{lineno}: expected 8 tab-separated MTOP columns, got {len(cols)}")
            rows.append((f"{path}:{lineno}", {"idx": cols[0], "intent": cols[1], "question": cols[3],
                                              "domain": cols[4], "logical_form": cols[6]}))
    return rows


class MTOP(Task):
    name = "mtop"
    version = "1"
    metrics = ["exact_match"]
    max_new_tokens = 96
    input_label = "Utterance"
    output_label = "Parse"
    description = "utterance -> decoupled logical form"
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
            meta = {k: row[k] for k in ("domain", "intent") if row.get(k)}
            rid = make_id("mtop", split, n)
            records.append(make_record("mtop", split, rid, row["question"], [row["logical_form"]], meta, where=where))
        return records


TASK = MTOP()
