"""Spider 1.0 (Yu et al. 2018): a question + the database schema -> SQL.

Official format: `train_spider.json` / `dev.json` are JSON lists of `{db_id, query, question, ...}`; the
schemas are in `tables.json` (a list of `{db_id, table_names_original, column_names_original, ...}`), found
next to the split file (or passed as `tables=`); the SQLite databases are `database/<db_id>/<db_id>.sqlite`
next to it. The current release also ships the test set: a split file named `test.json` reads
`test_tables.json` and `test_database/<db_id>/<db_id>.sqlite` beside it instead (`tables_path`, `database_root`;
`database_dir` gives the workflow and the metrics the test split's database folder, `database_tables` the
schemas beside it: this module is the one place that layout is written).

Linearisation (the UnifiedSKG / PICARD serialisation, with the original table and column names the SQL uses):
`<question> | <db_id> | <table> : <col> , <col> | <table> : ...`, e.g.
`How many singers do we have? | concert_singer | stadium : Stadium_ID , Location , ... | singer : Singer_ID , ...`.
Target: `query` with whitespace collapsed outside quoted literals (string literals are kept byte-for-byte,
so execution is unchanged; the references bypass `make_record`'s whitespace collapsing, `exact_references`).
Metrics: the official exact set match (primary) and execution accuracy (`iclpt.evaluation.metrics`);
`normalize_answer` (`sql_match_key`) serves the secondary string metric `exact_match_string`. `meta`: `db_id`,
and `db_path` (the SQLite file, as a path string built from the split file's path) when that file exists, else null.
A row whose `db_id` is not in tables.json is a DataError naming the file, the row and the db_id. A TEST row whose
database file is missing (the test split is scored by executing SQL on it) is a DataError too, unless
`missing_database="exclude"` (config `tasks.spider.missing_database`): it is then left out, appended to the
caller's `excluded` list and logged. Train / dev rows need no database (never executed): counted in the log.
Ids: `spider-<split>-<index>`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from iclpt.data.tasks.base import (
    DownloadSpec,
    RemoteFile,
    Task,
    check_split,
    database_file,
    make_id,
    make_record,
    one_line,
    require_fields,
    require_str,
)
from iclpt.io import DataError, PathLike, read_json

log = logging.getLogger(__name__)

#: the release's test split file, whose schemas and databases sit in their own files beside it
TEST_RELEASE = "test.json"
#: (schemas file, database folder) beside a split file: the usual ones, and those of the test release
LAYOUT, TEST_LAYOUT = ("tables.json", "database"), ("test_tables.json", "test_database")


def normalize_sql(sql: str) -> str:
    """Collapse whitespace runs outside quoted literals ('...', "...", `...`) to one space; strip the ends."""
    out: list[str] = []
    quote: str | None = None
    pending_space = False
    for ch in str(sql):
        if quote is not None:
            out.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch.isspace():
            pending_space = True
            continue
        if pending_space and out:
            out.append(" ")
        pending_space = False
        out.append(ch)
        if ch in "'\"`":
            quote = ch
    text = "".join(out)
    return text if "\n" not in text and "\r" not in text else one_line(text)


_SQL_PUNCT = re.compile(r"\s*(<=|>=|!=|<>|==|=|<|>|\(|\)|,)\s*")


def sql_match_key(sql: str) -> str:
    """The string Spider's string exact match compares: lowercase, `"` -> `'`, no trailing `;`, spaced
    punctuation and operators, collapsed whitespace (not the official component-wise exact-set match)."""
    s = str(sql).strip().lower().replace('"', "'")
    s = s.rstrip().rstrip(";").rstrip()
    s = _SQL_PUNCT.sub(lambda m: f" {m.group(1)} ", s)
    return " ".join(s.split())


def serialize_schema(db: dict[str, Any]) -> str:
    tables = db["table_names_original"]
    cols: list[list[str]] = [[] for _ in tables]
    for t, c in db["column_names_original"]:
        if t >= 0:
            cols[t].append(c)
    parts = [db["db_id"]] + [f"{t} : {' , '.join(cs)}" for t, cs in zip(tables, cols)]
    return " | ".join(one_line(p) for p in parts)


def load_tables(path: Path) -> dict[str, dict[str, Any]]:
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of database schemas")
    out = {}
    for n, db in enumerate(data):
        if not isinstance(db, dict) or not {"db_id", "table_names_original", "column_names_original"} <= set(db):
            raise DataError(f"{path}: schema {n}: needs db_id, table_names_original, column_names_original")
        out[db["db_id"]] = db
    return out


class Spider(Task):
    name = "spider"
    version = "1"
    metrics = ["exact_set_match", "execution_accuracy"]
    max_new_tokens = 128
    input_label = "Question"
    output_label = "SQL"
    description = "question + database schema -> SQL"
    published_sizes = {"test": 1034}
    demo_files = {"train": "spider/train_spider.json", "dev": "spider/dev.json", "test": "spider/dev.json"}
    dev_group = "db_id"  # a dev slice held out of train takes whole databases (Spider's splits do too)
    download = DownloadSpec("spider", (
        RemoteFile("https://drive.usercontent.google.com/download?id=1403EGqzIDoHMdQF4c9Bkyl7dZLZ5Wt6J"
                   "&export=download&confirm=t", "spider_data.zip", archive="zip"),
    ), note="official Spider 1.0 release linked from https://yale-lily.github.io/spider (CC BY-SA 4.0)")

    def normalize_answer(self, text: str) -> str:
        """String exact match (`exact_match_string`), not the official exact set match."""
        return sql_match_key(text)

    @staticmethod
    def is_test_release(path: Path) -> bool:
        """True for the release's test split file (`test.json`), whose schemas and databases are separate."""
        return Path(path).name == TEST_RELEASE

    def layout(self, path: Path) -> tuple[str, str]:
        """(schemas file, database folder) beside the split file `path`."""
        return TEST_LAYOUT if self.is_test_release(path) else LAYOUT

    def tables_path(self, path: Path) -> Path:
        """`test_tables.json` beside `test.json`, else `tables.json` beside the split file."""
        return Path(path).with_name(self.layout(path)[0])

    def database_root(self, path: Path) -> Path:
        """`test_database/` beside `test.json`, else `database/` beside the split file."""
        return Path(path).parent / self.layout(path)[1]

    def database_dir(self, files: Mapping[str, str], base: str) -> str:
        """The test split's database folder: <base>/<folder of the test file>/database (test_database for the
        release's test.json), as `load` reads it."""
        return os.path.normpath(self.database_root(Path(base) / files["test"]))

    def database_tables(self, database_dir: PathLike) -> Path | None:
        """`test_tables.json` beside `test_database/`, else `tables.json` beside the folder, when it exists."""
        d = Path(database_dir)
        tables, _ = TEST_LAYOUT if d.name == TEST_LAYOUT[1] else LAYOUT
        return d.parent / tables if (d.parent / tables).is_file() else None

    def side_files(self, split: str, path: Path) -> list[Path]:
        return [self.tables_path(path)]

    def file_state(self, split: str, path: Path) -> dict[str, Any]:
        """The test split's records depend on which databases exist (missing ones: error or excluded)."""
        if split != "test":
            return {}
        root = self.database_root(path)
        dbs = sorted(d.name for d in root.iterdir() if (d / f"{d.name}.sqlite").is_file()) if root.is_dir() else []
        return {"databases": dbs}

    def load(self, split: str, path: Path, **ctx: Any) -> list[dict[str, Any]]:
        """ctx: `tables` (another tables.json), `missing_database` (error | exclude: the policy for test examples
        without a database file) and `excluded` (a list that receives `{"id", "reason"}` per left-out example)."""
        check_split(split)
        path = Path(path)
        tables_file = Path(ctx["tables"]) if ctx.get("tables") else self.tables_path(path)
        rows = read_json(path)
        if not isinstance(rows, list):
            raise DataError(f"{path}: expected a JSON list of Spider examples")
        schemas = load_tables(tables_file)
        serialized: dict[str, str] = {}
        db_root = self.database_root(path)
        policy = ctx.get("missing_database") or "error"
        excluded = ctx.get("excluded") if ctx.get("excluded") is not None else []
        records, no_db = [], []
        for n, row in enumerate(rows):
            where = f"{path}: row {n}"
            require_fields(row, ("db_id", "query", "question"), where)
            require_str(row, ("db_id", "query", "question"), where)
            db_id = row["db_id"]
            if db_id not in schemas:
                raise DataError(f"{where}: db_id {db_id!r} is not in {tables_file}")
            if db_id not in serialized:
                serialized[db_id] = serialize_schema(schemas[db_id])
            db_file = database_file(db_root, db_id)
            rid = make_id("spider", split, n)
            if not db_file.is_file():
                no_db.append(rid)
                if split == "test":
                    if policy != "exclude":
                        raise DataError(f"{where}: the database of db_id {db_id!r} is missing ({db_file}); the "
                                        "test split is scored by executing SQL on it. Add the file, or set "
                                        "tasks.spider.missing_database: exclude to leave such examples out")
                    excluded.append({"id": rid, "reason": f"database missing: {db_file}"})
                    continue
            meta = {"db_id": db_id, "db_path": str(db_file) if db_file.is_file() else None}
            inp = f"{one_line(row['question'])} | {serialized[db_id]}"
            records.append(make_record("spider", split, rid, inp, [normalize_sql(row["query"])], meta, where=where,
                                       exact_references=True))
        _log_missing(split, path, db_root, no_db)
        return records


def _log_missing(split: str, path: Path, db_root: Path, no_db: list[str]) -> None:
    if not no_db:
        return
    if split == "test":
        log.warning("%s: %d test example(s) without a database under %s were excluded (first: %s)",
                    path, len(no_db), db_root, no_db[0])
    else:
        log.info("%s: %d %s example(s) have no database under %s (not needed: only the test split is executed)",
                 path, len(no_db), split, db_root)


TASK = Spider()
