"""Logic2Text (Chen et al. 2020): a logical form over a table (+ the table caption) -> one sentence.

Official formats, both read (chosen by the JSON's top-level type):
- Full records (`dataset/{train,valid,test}.json` of czyssrs/Logic2Text): a JSON list of objects with `topic`
  (the caption), `logic_str` (the linearised logical form), `sent` (the sentence), `action`, `url` (the
  TabFact CSV the table comes from, which gives the table id; present in the official files), ...
- The train layout of the offline sample (see shared/data/logic2text/SOURCE.md): `train_lm.json`
  (`{table_id: [[sentence, linked_columns, topic, "None"], ...]}`) next to the parallel line files
  `train.en` (sentence) and `train.sql` (its `logic_str`); the prefix `train` is the JSON's name without
  `_lm.json`. One record per line i of the line files: target = line i of `.en`, logical form = line i of
  `.sql`, caption (+ table id) = the `train_lm.json` row whose sentence equals line i (compared after
  whitespace collapsing; if that fails, after removing all whitespace and lower-casing). A sentence listed
  under several tables takes the first. Lines with no match cannot get a caption and are skipped (logged).

Linearisation: `caption: <topic> | logic: <logic_str>`, e.g.
`caption: eagle riders | logic: and { only { filter_eq { all_rows ; weapon ; razor boomerang } } ; ... } = true`.
The table itself (`table_header`/`table_cont`, or `all_csv/<table_id>`) is not part of the input: the logical
form already names the columns and values it uses (Logic2Text's own "logic form + caption" setting); the
table id is kept in `meta.table_id` (from `url` or `train_lm.json`).
Ids: `logic2text-<split>-<index>`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from iclpt.data.tasks.base import (
    DownloadSpec,
    RemoteFile,
    Task,
    check_split,
    make_id,
    make_record,
    one_line,
    require_fields,
    require_file,
    require_str,
)
from iclpt.io import DataError, read_json, read_lines

log = logging.getLogger(__name__)

_L2T_URL = "https://raw.githubusercontent.com/czyssrs/Logic2Text/master/dataset/"


def linearize(topic: str, logic_str: str) -> str:
    return f"caption: {one_line(topic)} | logic: {one_line(logic_str)}"


def _loose(s: str) -> str:
    return re.sub(r"\s+", "", s).lower()


def _companions(path: Path) -> tuple[Path, Path]:
    name = path.name
    prefix = name[: -len("_lm.json")] if name.endswith("_lm.json") else path.stem
    return path.with_name(prefix + ".en"), path.with_name(prefix + ".sql")


def _read_lines(path: Path) -> list[str]:
    require_file(path, "line file")
    return read_lines(path)


class Logic2Text(Task):
    name = "logic2text"
    version = "1"
    metrics = ["bleu"]
    max_new_tokens = 64
    input_label = "Logic"
    output_label = "Sentence"
    description = "logical form over a table (+ caption) -> one sentence"
    published_sizes = {"test": 1092}
    demo_files = {"train": "logic2text/train_lm.json", "dev": "logic2text/valid.json",
                  "test": "logic2text/test.json"}
    download = DownloadSpec("logic2text", tuple(
        RemoteFile(_L2T_URL + n, n) for n in ("train.json", "valid.json", "test.json")
    ), note="czyssrs/Logic2Text dataset/ (MIT)")

    def side_files(self, split: str, path: Path) -> list[Path]:
        path = Path(path)
        if path.name.endswith("_lm.json"):
            return list(_companions(path))
        return []

    def load(self, split: str, path: Path, **ctx: Any) -> list[dict[str, Any]]:
        check_split(split)
        path = Path(path)
        data = read_json(path)
        if isinstance(data, list):
            return self._from_records(split, path, data)
        if isinstance(data, dict):
            return self._from_lm(split, path, data, ctx.get("excluded"))
        raise DataError(f"{path}: expected a list of Logic2Text records or a train_lm.json object")

    def _from_records(self, split: str, path: Path, data: list) -> list[dict[str, Any]]:
        records = []
        for n, row in enumerate(data):
            where = f"{path}: record {n}"
            require_fields(row, ("topic", "logic_str", "sent"), where)
            require_str(row, ("topic", "logic_str", "sent"), where)
            meta = {"action": row.get("action"), "table_id": Path(row["url"]).name if row.get("url") else None}
            rid = make_id("logic2text", split, n)
            records.append(
                make_record("logic2text", split, rid, linearize(row["topic"], row["logic_str"]), [row["sent"]], meta,
                            where=where)
            )
        return records

    def _from_lm(self, split: str, path: Path, lm: dict, excluded: list | None = None) -> list[dict[str, Any]]:
        en_path, sql_path = _companions(path)
        sents, forms = _read_lines(en_path), _read_lines(sql_path)
        if len(sents) != len(forms):
            raise DataError(f"{en_path} has {len(sents)} lines but {sql_path} has {len(forms)}; they must be parallel")
        exact: dict[str, tuple[str, str]] = {}
        loose: dict[str, tuple[str, str]] = {}
        for table_id, rows in lm.items():
            if not isinstance(rows, list):
                raise DataError(f"{path}: table {table_id}: expected a list of [sentence, columns, topic, template]")
            for row in rows:
                if not isinstance(row, list) or len(row) < 3 or not isinstance(row[0], str) \
                        or not isinstance(row[2], str):
                    raise DataError(f"{path}: table {table_id}: malformed row {row!r:.80} "
                                    "(expected [sentence, columns, topic, template] with string sentence and topic)")
                exact.setdefault(one_line(row[0]), (table_id, row[2]))
                loose.setdefault(_loose(row[0]), (table_id, row[2]))
        records, skipped = [], []
        for n, (sent, form) in enumerate(zip(sents, forms)):
            where = f"{en_path}:{n + 1}"
            if not one_line(sent) and not one_line(form):
                continue
            hit = exact.get(one_line(sent)) or loose.get(_loose(sent))
            if hit is None:
                skipped.append(n + 1)
                if excluded is not None:
                    excluded.append({"id": make_id("logic2text", split, n),
                                     "reason": f"{where}: sentence not in {path.name} (no caption)"})
                continue
            table_id, topic = hit
            rid = make_id("logic2text", split, n)
            records.append(
                make_record("logic2text", split, rid, linearize(topic, form), [sent], {"table_id": table_id},
                            where=where)
            )
        if skipped:
            log.warning(
                "%s: %d line(s) have no sentence in %s and were skipped (no caption): lines %s",
                en_path, len(skipped), path, ", ".join(map(str, skipped[:20])),
            )
        return records


TASK = Logic2Text()
