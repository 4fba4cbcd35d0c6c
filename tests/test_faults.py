"""Faults, the ways a cluster breaks a run: every stage's inputs and state truncated, emptied, rewritten while read,
taken from another run, written to a full disk or killed mid-write. The promise: a clear error naming the file (and
line, ids or cause), or a correct recomputation; never a complete-looking wrong result.

Sections: predicted SQL that tries to write or hoard (execution accuracy); downloads cut short; checkpoints that do not
load; predictions that are not exactly the run's test split; writes that fail (disk full, permission, read-only, a
kill); byte-order marks; the pipeline end to end (slow: --keep-going, a killed training, the score rule's check).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from workflow_helpers import ROOT, copy_repo, env, snakemake, write_config


def small_config(run: str, tasks: tuple[str, ...]) -> dict:
    cfg = yaml.safe_load((ROOT / "config" / "tiny.yaml").read_text())
    cfg["run"] = run
    cfg["tasks"] = {t: cfg["tasks"][t] for t in tasks}
    cfg["seeds"] = [0]
    cfg["prompt"]["lengths"] = [cfg["prompt"]["length"]]
    return cfg


@pytest.mark.slow
def test_keep_going_keeps_the_other_tasks_results(tmp_path):
    work = copy_repo(tmp_path / "w")
    broken = work / "resources" / "demo_data" / "mtop" / "dev.json"
    lines = broken.read_text().splitlines()
    lines[3] = lines[3][:-5]  # truncate one JSON line
    broken.write_text("\n".join(lines) + "\n")
    cfg = small_config("kg", ("mtop", "dart"))
    path = write_config(work, cfg)
    res = work / "results" / "kg"
    targets = [f"results/kg/retrieval/{t}/dense/summary.json" for t in ("mtop", "dart")]
    proc = snakemake(work, "--cores", "2", "--keep-going", *targets, "--configfile", str(path), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "dev.json:4" in out, "the error names the broken file and line"
    # the broken task wrote nothing that looks complete; the other task finished
    assert not list((res / "data").glob("mtop/*.jsonl"))
    summary = json.loads((res / "retrieval" / "dart" / "dense" / "summary.json").read_text())
    assert summary
    assert len((res / "retrieval" / "dart" / "dense" / "test.jsonl").read_text().splitlines()) == 20


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=,ppid=,args=", "-e"], capture_output=True, text=True).stdout
    rows = [line.split(None, 2) for line in out.splitlines() if line.strip()]
    kids, frontier = [], {pid}
    while frontier:
        nxt = {int(p) for p, pp, *_ in rows if int(pp) in frontier}
        kids += sorted(nxt)
        frontier = nxt
    return kids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.slow
def test_killed_training_resumes_from_its_checkpoint(tmp_path):
    """SIGKILL the training job and SIGTERM Snakemake mid-training; --rerun-incomplete resumes and matches an
    uninterrupted run exactly."""
    cfg = small_config("resume", ("mtop",))
    cfg["train"].update(max_steps=400, checkpoint_every=20, eval_every=100, batch_size=4)
    target_rel = "results/resume/prompts/mtop/tiny-gpt2/pt/L4/none/s0/prompt.safetensors"

    ref = copy_repo(tmp_path / "ref")
    snakemake(ref, "--cores", "2", target_rel, "--configfile", str(write_config(ref, cfg)))

    work = copy_repo(tmp_path / "w")
    path = write_config(work, cfg)
    # everything before training first, so the kill lands inside train_prompt
    snakemake(work, "--cores", "2", "--until", "train_prompt", "--omit-from", "train_prompt", target_rel,
              "--configfile", str(path))
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "1", target_rel, "--configfile", str(path)],
                            cwd=work, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ckpt_root = work / "results" / "resume" / ".checkpoints"
    deadline = time.time() + 300
    killed = False
    while time.time() < deadline and proc.poll() is None:
        states = list(ckpt_root.rglob("*")) if ckpt_root.exists() else []
        if any(p.is_file() for p in states):
            for kid in _children(proc.pid):
                if "train_prompt" in _cmdline(kid):
                    os.kill(kid, signal.SIGKILL)
                    killed = True
            if killed:
                break
        time.sleep(0.2)
    assert killed, "training finished before a checkpoint could be observed"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    assert not (work / target_rel).exists(), "a killed job must not leave a complete-looking prompt"

    snakemake(work, "--cores", "2", "--rerun-incomplete", target_rel, "--configfile", str(path))
    meta = json.loads((work / target_rel).with_name("meta.json").read_text())
    assert meta.get("resumed_from_step", 0) > 0, meta
    assert (work / target_rel).read_bytes() == (ref / target_rel).read_bytes()


# ==== 1. predicted SQL cannot write or hoard (execution accuracy) ===============================================
DEMO = ROOT / "resources" / "demo_data"
DEMO_DB = DEMO / "spider" / "database" / "school_library" / "school_library.sqlite"
GOLD = "SELECT count(*) FROM book"

#: every SQLite statement class that can touch the file system, or change the database or the connection's
#: settings; {p} is a database file the statement would create, {d} its folder
WRITING_SQL = {
    "attach": "ATTACH DATABASE '{p}' AS x",
    "attach_uri_rwc": "ATTACH DATABASE 'file:{p}?mode=rwc' AS x",
    "attach_memory": "ATTACH DATABASE ':memory:' AS x",
    "attach_then_create": "ATTACH '{p}' AS x; CREATE TABLE x.t(a)",
    "vacuum_into": "VACUUM INTO '{p}'",
    "vacuum": "VACUUM",
    "create_table": "CREATE TABLE t(a)",
    "create_table_as": "CREATE TABLE t AS SELECT * FROM book",
    "create_temp_table": "CREATE TEMP TABLE t AS SELECT * FROM book",
    "create_index": "CREATE INDEX i ON book(title)",
    "create_view": "CREATE VIEW v AS SELECT 1",
    "create_trigger": "CREATE TEMP TRIGGER tr AFTER INSERT ON book BEGIN SELECT 1; END",
    "create_virtual_table": "CREATE VIRTUAL TABLE temp.v USING fts5(a)",
    "insert": "INSERT INTO book(title) VALUES ('x')",
    "insert_with_cte": "WITH c(t) AS (SELECT 'x') INSERT INTO book(title) SELECT t FROM c",
    "replace": "REPLACE INTO book(book_id, title) VALUES (1, 'x')",
    "update": "UPDATE book SET title = 'x'",
    "delete": "DELETE FROM book",
    "drop": "DROP TABLE book",
    "alter_rename": "ALTER TABLE book RENAME TO b2",
    "alter_add_column": "ALTER TABLE book ADD COLUMN z",
    "pragma_journal_wal": "PRAGMA journal_mode = WAL",
    "pragma_journal_persist": "PRAGMA journal_mode = PERSIST",
    "pragma_user_version": "PRAGMA user_version = 7",
    "pragma_writable_schema": "PRAGMA writable_schema = ON",
    "pragma_temp_store_directory": "PRAGMA temp_store_directory = '{d}'",
    "pragma_temp_store_file": "PRAGMA temp_store = FILE",
    "pragma_wal_checkpoint": "PRAGMA wal_checkpoint(TRUNCATE)",
    "pragma_optimize": "PRAGMA optimize",
    "pragma_incremental_vacuum": "PRAGMA incremental_vacuum",
    "pragma_function": "SELECT * FROM pragma_table_info('book')",
    "begin": "BEGIN IMMEDIATE",
    "savepoint": "SAVEPOINT s",
    "analyze": "ANALYZE",
    "reindex": "REINDEX",
    "load_extension": "SELECT load_extension('{p}')",
    "detach": "DETACH DATABASE main",
}


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _tmp_names(token: str) -> list[str]:
    import tempfile

    tmp = Path(tempfile.gettempdir())
    return sorted(p.name for p in tmp.iterdir() if token in p.name or p.name.startswith("etilqs_"))


@pytest.fixture()
def spider_copy(tmp_path, monkeypatch):
    """(database folder with a copy of the demo database, the database file, an empty cwd, an empty folder
    elsewhere); the test runs in the cwd."""
    dbdir = tmp_path / "database"
    db = dbdir / "school_library" / "school_library.sqlite"
    db.parent.mkdir(parents=True)
    db.write_bytes(DEMO_DB.read_bytes())
    cwd, elsewhere = tmp_path / "results", tmp_path / "elsewhere"
    cwd.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(cwd)
    return dbdir, db, cwd, elsewhere


@pytest.mark.parametrize("where", ["beside", "cwd", "tmp"])
@pytest.mark.parametrize("name", sorted(WRITING_SQL))
def test_predicted_sql_writes_nothing_anywhere(spider_copy, name, where):
    import tempfile
    import uuid

    from iclpt.evaluation.spider_eval import execution_match
    from iclpt.evaluation.spider_sql.execution import QueryFailed, run_query

    dbdir, db, cwd, elsewhere = spider_copy
    token = f"iclpt-evil-{uuid.uuid4().hex[:8]}"
    folder = {"beside": db.parent, "cwd": Path("."), "tmp": Path(tempfile.gettempdir())}[where]
    sql = WRITING_SQL[name].format(p=folder / f"{token}.sqlite", d=folder)
    before = {d: _tree(d) for d in (dbdir, cwd, elsewhere)}
    try:
        assert execution_match(sql, GOLD, db) is False, "a statement that writes is never a correct prediction"
        with pytest.raises(QueryFailed):
            run_query(db, sql, timeout_s=5)
        assert execution_match(GOLD, GOLD, db) is True  # the connection still reads
    finally:
        leaked = _tmp_names(token)
        for n in leaked:
            if token in n:
                (Path(tempfile.gettempdir()) / n).unlink()
    assert {d: _tree(d) for d in (dbdir, cwd, elsewhere)} == before, "a file appeared or changed"
    assert not any(token in n for n in leaked), leaked
    assert db.read_bytes() == DEMO_DB.read_bytes()


def test_the_attacks_do_write_on_a_connection_that_is_only_read_only(tmp_path):
    """Why an authorizer: mode=ro alone lets ATTACH create a file and VACUUM INTO write a copy."""
    import sqlite3

    conn = sqlite3.connect(f"{DEMO_DB.as_uri()}?mode=ro", uri=True)
    try:
        conn.execute(f"ATTACH DATABASE '{tmp_path / 'a.sqlite'}' AS x")
        conn.execute(f"VACUUM INTO '{tmp_path / 'b.sqlite'}'")
    finally:
        conn.close()
    assert (tmp_path / "a.sqlite").exists() and (tmp_path / "b.sqlite").stat().st_size > 0


def test_a_runaway_prediction_holds_no_more_than_the_gold_result(spider_copy):
    """A join without a condition stops at one row past the gold's row count (or its data size), at once."""
    from iclpt.evaluation.spider_eval import execution_match
    from iclpt.evaluation.spider_sql.execution import ResultTooLarge, run_query

    _, db, _, _ = spider_copy
    join = "SELECT * FROM book a, book b, book c, book d, book e, book f, book g"  # 9^7 = 4.8 M rows
    t0 = time.monotonic()
    assert execution_match(join, "SELECT title FROM book", db, timeout_s=30) is False
    with pytest.raises(ResultTooLarge, match="more than 9 rows"):
        run_query(db, join, timeout_s=30, max_rows=9)
    # one row, but more data than the gold result holds
    with pytest.raises(ResultTooLarge, match="more than 100 characters"):
        run_query(db, "SELECT printf('%.*c', 1000000, 'x')", timeout_s=30, max_rows=1, max_size=100)
    assert time.monotonic() - t0 < 10
    # the bound never turns a correct prediction wrong: equal results have equal sizes
    assert execution_match("SELECT title, year FROM book", "SELECT year, title FROM book", db) is True
    assert execution_match("SELECT title FROM book WHERE 0", "SELECT title FROM book WHERE 0", db) is True


def test_a_prediction_that_sorts_too_much_fails_in_memory_and_makes_no_temp_file(spider_copy):
    """A 2 GB sort hits SQLite's heap limit (no temp file: temp storage is in memory), and counts as wrong."""
    import threading

    from iclpt.evaluation.spider_sql.execution import QueryFailed, run_query

    _, db, _, _ = spider_copy
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to watch the open files")
    sort = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) "
            "SELECT x, zeroblob(1000) FROM c ORDER BY random()")
    opened: set[str] = set()
    done = threading.Event()

    def watch():
        while not done.is_set():
            for fd in os.listdir("/proc/self/fd"):
                try:
                    opened.add(os.readlink(f"/proc/self/fd/{fd}"))
                except OSError:
                    pass
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with pytest.raises(QueryFailed, match="Memory"):
            run_query(db, sort, timeout_s=60, max_rows=1)
    finally:
        done.set()
        watcher.join()
    assert not [f for f in opened if "etilqs" in f], opened  # SQLite names its temp files etilqs_*


def test_execution_accuracy_on_hostile_predictions_changes_nothing(spider_copy):
    """The score stage on predictions that try to write and to hoard: each is wrong (with its reason), the
    correct one is right, and nothing in the results folder or beside the databases changes."""
    from iclpt.evaluation.metrics import score_predictions

    dbdir, _, cwd, elsewhere = spider_copy
    preds = [GOLD, "ATTACH DATABASE 'evil.sqlite' AS x", f"VACUUM INTO '{dbdir / 'copy.sqlite'}'",
             "CREATE TEMP TABLE t(a)", "SELECT * FROM book a, book b, book c, book d, book e, book f", "SELEC"]
    rows = [{"id": str(i), "prediction": p, "references": [GOLD], "meta": {"db_id": "school_library"}}
            for i, p in enumerate(preds)]
    before = {d: _tree(d) for d in (dbdir, cwd, elsewhere)}
    body, scores = score_predictions(rows, ["execution_accuracy"], task="spider", database_dir=dbdir)
    assert [s["execution_accuracy"] for s in scores] == [100.0] + [0.0] * 5
    assert body["details"]["execution_accuracy"]["wrong_reasons"] == {
        "prediction refused (writes, attaches or changes settings)": 3,
        "prediction returns more rows or data than the gold result": 1, "prediction invalid SQL": 1}
    assert {d: _tree(d) for d in (dbdir, cwd, elsewhere)} == before


# ==== 2. downloads are complete or absent ========================================================================
@pytest.fixture()
def flaky_server(monkeypatch):
    """make(body, mode) -> (base URL, the Range header of each request): a 127.0.0.1 HTTP server for one file whose
    first answer (every answer: modes 'always', 'no_length') announces the whole file and closes the connection
    halfway. 'resume': a Range request gets a 206 from the asked offset; 'retry': Range is ignored (a full 200
    again); 'no_length': no Content-Length at all. Retries do not wait."""
    import http.server
    import threading

    from iclpt.data import download

    monkeypatch.setattr(download, "RETRY_WAIT_S", 0.0)
    servers = []

    def make(body: bytes, mode: str) -> tuple[str, list[str | None]]:
        requests: list[str | None] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                rng = self.headers.get("Range")
                requests.append(rng)
                if rng and mode == "resume":
                    start = int(rng.removeprefix("bytes=").rstrip("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                    self.send_header("Content-Length", str(len(body) - start))
                    self.end_headers()
                    self.wfile.write(body[start:])
                    return
                short = mode in ("always", "no_length") or len(requests) == 1
                self.send_response(200)
                if mode != "no_length":
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if short else body)
                self.close_connection = True

            def log_message(self, *args):
                pass

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}", requests

    yield make
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


BODY = b"".join(json.dumps({"question": f"q {i}", "logical_form": f"[IN:X {i} ]"}).encode() + b"\n"
                for i in range(4000))


def _download(tmp_path, base: str, sha256: str | None = None) -> Path:
    from iclpt.data.download import DownloadSpec, RemoteFile, download_spec

    spec = DownloadSpec("mtop", (RemoteFile("https://example.invalid/train.json", "train.json", sha256=sha256),))
    return download_spec(spec, tmp_path / "dl", base_url=base)


def _left(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_download_cut_short_every_time_is_absent_not_recorded(tmp_path, flaky_server):
    from iclpt.data.download import IncompleteDownload

    base, requests = flaky_server(BODY, "always")
    with pytest.raises(IncompleteDownload, match=rf"train.json: incomplete download: received {len(BODY) // 2} of "
                                                 rf"{len(BODY)} bytes \(the connection closed early\), after 3 tries"):
        _download(tmp_path, base)
    assert len(requests) == 3
    assert _left(tmp_path / "dl") == [], "no task folder, no manifest, no temp folder"


def test_a_download_cut_short_resumes_where_the_server_allows_ranges(tmp_path, flaky_server):
    import hashlib

    base, requests = flaky_server(BODY, "resume")
    manifest = json.loads(_download(tmp_path, base).read_text())
    assert requests == [None, f"bytes={len(BODY) // 2}-"]
    assert (tmp_path / "dl" / "mtop" / "train.json").read_bytes() == BODY
    (entry,) = manifest["downloads"]
    assert entry["bytes"] == len(BODY) and entry["sha256"] == hashlib.sha256(BODY).hexdigest()


def test_a_download_cut_short_is_fetched_again_where_ranges_are_ignored(tmp_path, flaky_server):
    base, requests = flaky_server(BODY, "retry")
    manifest = json.loads(_download(tmp_path, base).read_text())
    assert len(requests) == 2
    assert (tmp_path / "dl" / "mtop" / "train.json").read_bytes() == BODY
    assert manifest["downloads"][0]["bytes"] == len(BODY)


def test_a_short_download_without_a_length_is_caught_by_its_pinned_sha256(tmp_path, flaky_server):
    import hashlib

    from iclpt.data.download import DownloadError

    pinned = hashlib.sha256(BODY).hexdigest()
    base, requests = flaky_server(BODY, "no_length")
    with pytest.raises(DownloadError, match=rf"train.json: sha256 mismatch: expected {pinned}"):
        _download(tmp_path, base, sha256=pinned)
    assert len(requests) == 2  # fetched once more before giving up
    assert _left(tmp_path / "dl") == []


def test_a_drive_transfer_cut_short_leaves_no_file(tmp_path, flaky_server):
    from iclpt.data.gdrive import DriveTransferIncomplete, fetch_drive

    body = b"PK\x03\x04" + bytes(range(256)) * 64
    base, _ = flaky_server(body, "always")
    dest = tmp_path / "spider_data.zip"
    with pytest.raises(DriveTransferIncomplete, match=rf"incomplete download: received {len(body) // 2} of "
                                                       rf"{len(body)} bytes"):
        fetch_drive(f"{base}/uc?id=abc", dest)
    assert _left(tmp_path) == []


# ==== 3a. a checkpoint that cannot be used is discarded, naming it; training restarts and ends as a fresh run ====
def _train_files(folder: Path) -> Path:
    from test_training import write_job_files

    folder.mkdir(parents=True, exist_ok=True)
    return write_job_files(folder)


def _train(d: Path, out: Path, ckpt: Path, **kw):
    from test_training import _params
    from tiny_engine import tiny_model_dir

    from iclpt.engine.training import train_job

    params = _params()
    params["train"] = {**params["train"], "max_steps": 4, "warmup_steps": 1, "eval_every": 2, "checkpoint_every": 2}
    return train_job(model_path=tiny_model_dir("gpt2"), train_path=str(d / "train.jsonl"),
                     dev_path=str(d / "dev.jsonl"), train_retrieval=str(d / "ret_train.jsonl"),
                     dev_retrieval=str(d / "ret_dev.jsonl"), out_dir=out, params=params, checkpoint_root=ckpt,
                     **kw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(the job's files, the bytes of the checkpoint of a run stopped after step 3 (its state at step 2), the
    prompt and train log of an uninterrupted run of 4 steps)."""
    from iclpt.engine.training import TrainingInterrupted

    d = _train_files(tmp_path_factory.mktemp("train"))
    _train(d, d / "full", d / "ckpt_full")
    with pytest.raises(TrainingInterrupted):
        _train(d, d / "stopped", d / "ckpt", stop_after=3)
    (state,) = (d / "ckpt").glob("*/state.pt")
    return d, state.relative_to(d), state.read_bytes(), (d / "full" / "prompt.safetensors").read_bytes(), \
        (d / "full" / "train_log.jsonl").read_text()


@pytest.fixture()
def stopped_job(trained):
    """(the job's files, its checkpoint file as the stopped run left it, the uninterrupted prompt and log); the
    checkpoint key hashes the input paths, so the files stay where they are and the checkpoint is put back."""
    import shutil

    d, rel, state_bytes, prompt, train_log = trained
    shutil.rmtree(d / "ckpt", ignore_errors=True)
    (d / rel).parent.mkdir(parents=True)
    (d / rel).write_bytes(state_bytes)
    yield d, d / rel, prompt, train_log
    shutil.rmtree(d / "ckpt", ignore_errors=True)


def _damage(state: Path, how: str) -> None:
    import torch

    data = state.read_bytes()
    if how == "truncated":
        state.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        state.write_bytes(b"")
    elif how == "garbage":
        state.write_bytes(os.urandom(len(data)))
    elif how == "not_a_dict":
        torch.save([1, 2, 3], state)
    elif how == "keys_missing":
        good = torch.load(state, weights_only=False)
        torch.save({k: v for k, v in good.items() if k != "optimizer"}, state)
    elif how == "foreign_run":  # another run's state: a prompt of another length
        good = torch.load(state, weights_only=False)
        good["prompt"] = torch.zeros(7, good["prompt"].shape[1])
        torch.save(good, state)
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage", "not_a_dict", "keys_missing", "foreign_run"])
def test_a_damaged_checkpoint_is_discarded_and_training_restarts(tmp_path, stopped_job, how, caplog):
    import logging

    d, state, prompt, train_log = stopped_job
    _damage(state, how)
    with caplog.at_level(logging.WARNING, logger="iclpt.engine"):
        meta = _train(d, tmp_path / "out", d / "ckpt")
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(m.startswith(f"checkpoint {state} is unusable: ") and "training restarts from step 0" in m
               for m in warned), warned
    assert meta["resumed_from_step"] == 0
    assert (tmp_path / "out" / "prompt.safetensors").read_bytes() == prompt, "a fresh run's result, exactly"
    assert (tmp_path / "out" / "train_log.jsonl").read_text() == train_log
    assert not state.exists()


def test_an_intact_checkpoint_still_resumes(tmp_path, stopped_job):
    d, _, prompt, train_log = stopped_job
    meta = _train(d, tmp_path / "out", d / "ckpt")
    assert meta["resumed_from_step"] == 2
    assert (tmp_path / "out" / "prompt.safetensors").read_bytes() == prompt
    assert (tmp_path / "out" / "train_log.jsonl").read_text() == train_log


def test_a_checkpoint_that_cannot_be_written_names_the_file_and_the_disk_full(tmp_path, stopped_job, monkeypatch):
    import errno
    import shutil

    from iclpt.io import WriteError

    d, _, _, _ = stopped_job
    shutil.rmtree(d / "ckpt")
    disk_full(monkeypatch, errno.ENOSPC)
    with pytest.raises(WriteError, match=r"cannot write .*/ckpt/\w+/state.pt: no space left on device \(ENOSPC\); "
                                         r"nothing was written there") as exc:
        _train(d, tmp_path / "out", d / "ckpt")
    assert exc.value.errno == errno.ENOSPC
    assert [p.name for p in (d / "ckpt").rglob("*") if p.is_file()] == [], "no temp file left behind"
    assert not (tmp_path / "out" / "prompt.safetensors").exists()


# ==== 4. writes that fail name the file and the cause, and leave nothing that looks complete ====================
class _FailingFile:
    """A file that takes `room` bytes (or characters), then fails every write with OSError(err): what a full
    disk (ENOSPC), a quota (EDQUOT) or an I/O error does to a write."""

    def __init__(self, fh, room: int, err: int):
        self._fh, self._room, self._err = fh, room, err

    def write(self, data):
        if len(data) > self._room:
            self._fh.write(data[: self._room])
            self._room = 0
            raise OSError(self._err, os.strerror(self._err))
        self._room -= len(data)
        return self._fh.write(data)

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()
        return False


def disk_full(monkeypatch, err: int, room: int = 10) -> None:
    """Every file iclpt.io's writers open takes `room` bytes, then fails with `err` (monkeypatched open)."""
    import builtins

    import iclpt.io

    real_open = builtins.open

    def failing_open(file, mode="r", *args, **kwargs):
        fh = real_open(file, mode, *args, **kwargs)
        return _FailingFile(fh, room, err) if any(c in mode for c in "wax+") else fh

    monkeypatch.setattr(iclpt.io, "open", failing_open, raising=False)


def _writers():
    """(name, write(path), what the reader of the output would get) of every atomic writer the stages use."""
    import numpy as np
    import torch

    from iclpt.engine.soft_prompt import save_prompt
    from iclpt.io import write_bytes_atomic, write_json_atomic, write_jsonl_atomic, write_text_atomic
    from iclpt.retrieval.encoder import save_embeddings

    rows = [{"id": f"x{i}", "prediction": "p" * 50} for i in range(50)]
    return {
        "jsonl": lambda p: write_jsonl_atomic(p, rows),
        "json": lambda p: write_json_atomic(p, {"metrics": {"bleu": 1.0}, "rows": rows}),
        "text": lambda p: write_text_atomic(p, "x" * 5000),
        "bytes": lambda p: write_bytes_atomic(p, b"x" * 5000),
        "prompt": lambda p: save_prompt(p, torch.ones(4, 8)),
        "embeddings": lambda p: save_embeddings(p, np.ones((20, 8), dtype=np.float32)),
    }


@pytest.mark.parametrize("cause", [("ENOSPC", "no space left on device"), ("EDQUOT", "disk quota exceeded"),
                                   ("EIO", "input/output error")], ids=lambda c: c[0])
@pytest.mark.parametrize("writer", sorted(_writers()))
def test_a_write_to_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch, writer, cause):
    import errno

    from iclpt.io import WriteError

    name, words = cause
    out = tmp_path / "out" / "artefact"
    out.parent.mkdir()
    out.write_bytes(b"the previous, complete version")
    disk_full(monkeypatch, getattr(errno, name))
    with pytest.raises(WriteError) as exc:
        _writers()[writer](out)
    assert str(exc.value) == f"cannot write {out}: {words} ({name}); nothing was written there"
    assert exc.value.errno == getattr(errno, name) and exc.value.filename == str(out)
    assert out.read_bytes() == b"the previous, complete version"
    assert sorted(p.name for p in out.parent.iterdir()) == ["artefact"], "the temp file was removed"


@pytest.mark.parametrize("cause", [("EACCES", "permission denied"), ("EROFS", "read-only file system")],
                         ids=lambda c: c[0])
def test_a_folder_that_cannot_be_written_names_the_file_and_the_cause(tmp_path, monkeypatch, cause):
    import errno
    import tempfile

    from iclpt.io import WriteError, write_json_atomic

    name, words = cause

    def refuse(*args, **kwargs):
        raise OSError(getattr(errno, name), os.strerror(getattr(errno, name)), str(tmp_path / ".x.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    out = tmp_path / "metrics.json"
    with pytest.raises(WriteError, match=rf"^cannot write {out}: {words} \({name}\); nothing was written there$"):
        write_json_atomic(out, {"a": 1})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_for_real(tmp_path):
    from iclpt.io import WriteError, write_jsonl_atomic

    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(WriteError, match=rf"cannot write {folder}/a.jsonl: permission denied \(EACCES\)"):
            write_jsonl_atomic(folder / "a.jsonl", [{"id": 1}])
    finally:
        folder.chmod(0o700)
    assert list(folder.iterdir()) == []


def test_an_error_of_the_writing_code_itself_passes_through_unchanged(tmp_path):
    """Only the file system's failures become WriteError: a bad row is still the reader's DataError / TypeError,
    and an OSError about another file keeps its own name."""
    from iclpt.io import write_jsonl_atomic

    out = tmp_path / "a.jsonl"

    def rows():
        yield {"id": 1}
        raise FileNotFoundError(2, "No such file or directory", str(tmp_path / "input.jsonl"))

    with pytest.raises(FileNotFoundError) as exc:
        write_jsonl_atomic(out, rows())
    assert exc.value.filename == str(tmp_path / "input.jsonl")
    with pytest.raises(TypeError):
        write_jsonl_atomic(out, [{"id": object()}])
    assert list(tmp_path.iterdir()) == []


_SLOW_WRITER = """
import sys, time
from iclpt.io import write_jsonl_atomic
def rows():
    for i in range(1000):
        yield {"id": i}
        if i == 100:
            print("writing", flush=True)
            time.sleep(60)
write_jsonl_atomic(sys.argv[1], rows())
"""


def test_a_writer_killed_mid_write_leaves_the_old_file_or_none(tmp_path):
    """SIGKILL in the middle of a write: the output keeps its previous content (or stays absent); what is left
    is a hidden temp file that no rule reads, and the next write succeeds."""
    from iclpt.io import read_jsonl, write_jsonl_atomic

    e = env()
    e["PYTHONPATH"] = str(ROOT / "src")
    for previous in (None, [{"id": "old"}]):
        out = tmp_path / f"out{previous is None}" / "scores.jsonl"
        if previous:
            write_jsonl_atomic(out, previous)
        proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(out)], env=e, stdout=subprocess.PIPE,
                                text=True)
        assert proc.stdout.readline().strip() == "writing"
        proc.kill()
        proc.wait(timeout=30)
        if previous:
            assert read_jsonl(out) == previous
        else:
            assert not out.exists()
        assert all(p.name.startswith(".scores.jsonl.") and p.name.endswith(".tmp")
                   for p in out.parent.iterdir() if p != out)
        write_jsonl_atomic(out, [{"id": "new"}])
        assert read_jsonl(out) == [{"id": "new"}]


def test_a_file_rewritten_while_it_is_read_is_read_whole(tmp_path):
    """A rule rewriting an artefact while another reads it (a rerun beside a running job): the reader sees one
    complete version or the other, never a mix or a cut."""
    import threading

    from iclpt.io import read_jsonl, write_jsonl_atomic

    out = tmp_path / "train.jsonl"
    versions = {n: [{"id": f"v{n}-{i}", "text": "t" * 200} for i in range(n)] for n in (300, 700)}
    write_jsonl_atomic(out, versions[300])
    stop = threading.Event()

    def rewrite():
        while not stop.is_set():
            for rows in versions.values():
                write_jsonl_atomic(out, rows)

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        deadline = time.monotonic() + 1.0
        reads = 0
        while time.monotonic() < deadline:
            rows = read_jsonl(out)
            assert rows in (versions[300], versions[700])
            reads += 1
    finally:
        stop.set()
        writer.join()
    assert reads > 5


# ==== 3b. a predictions file must be its run's answer to exactly the test split ==================================
RUN = {"task": "mtop", "model": "tiny-gpt2", "method": "icl", "length": 0, "demos": "retrieved", "seed": 0}


def _test_split(folder: Path, n: int = 16, task: str = "mtop") -> Path:
    path = folder / "data" / task / "test.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": f"{task}-test-{i:05d}", "input": f"q {i}", "target": f"[IN:X {i} ]",
                                        "references": [f"[IN:X {i} ]"]}) + "\n" for i in range(n)))
    return path


def _predictions(path: Path, ids: list[str], **labels) -> Path:
    run = {**RUN, **labels}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({
        "id": i, "task": run["task"], "model": run["model"], "method": run["method"], "seed": run["seed"],
        "prompt_length": run["length"], "demo_source": run["demos"], "demo_ids": [], "demo_scores": [],
        "input_text": "x", "prediction": "[IN:X ]", "references": ["[IN:X ]"], "meta": {}}) + "\n" for i in ids))
    return path


def _check(pred: Path, test: Path, max_examples=None, run=RUN):
    from iclpt.evaluation.metrics import check_predictions_match, load_predictions

    check_predictions_match(load_predictions(pred), pred, test, max_examples, run)


def test_predictions_cut_at_a_line_end_stop_the_score_naming_the_missing_ids(tmp_path):
    from iclpt.io import DataError

    test = _test_split(tmp_path)
    ids = [f"mtop-test-{i:05d}" for i in range(16)]
    _check(_predictions(tmp_path / "full.jsonl", ids), test)
    cut = _predictions(tmp_path / "cut.jsonl", ids[:8])
    with pytest.raises(DataError) as exc:
        _check(cut, test)
    assert str(exc.value).startswith(
        f"{cut}: holds 8 predictions, the test split {test} has 16 examples to predict: 8 test id(s) missing "
        "('mtop-test-00008', 'mtop-test-00009', 'mtop-test-00010', 'mtop-test-00011', 'mtop-test-00012', ... "
        "(8 in all))"), str(exc.value)
    assert str(exc.value).endswith("delete it so that predict reruns")


def test_predictions_of_predict_max_examples_are_the_first_n_test_ids(tmp_path):
    from iclpt.io import DataError

    test = _test_split(tmp_path)
    ids = [f"mtop-test-{i:05d}" for i in range(16)]
    _check(_predictions(tmp_path / "p.jsonl", ids[:10]), test, max_examples=10)
    with pytest.raises(DataError, match=r"1 id\(s\) not in the test split \('mtop-test-00010'\)"):
        _check(_predictions(tmp_path / "q.jsonl", ids[:11]), test, max_examples=10)


def test_predictions_of_another_task_or_data_version_name_the_extra_ids(tmp_path):
    from iclpt.io import DataError

    test = _test_split(tmp_path)
    other = _predictions(tmp_path / "p.jsonl", [f"mtop-test-{i:05d}" for i in range(15)] + ["dart-test-00000"])
    with pytest.raises(DataError, match=r"1 test id\(s\) missing \('mtop-test-00015'\); 1 id\(s\) not in the test "
                                        r"split \('dart-test-00000'\)"):
        _check(other, test)


@pytest.mark.parametrize("field,value,run_value", [("method", "pt", "'icl'"), ("seed", 1, "0"),
                                                   ("demo_source", "random", "'retrieved'"),
                                                   ("prompt_length", 4, "0")])
def test_predictions_of_another_run_name_the_line_and_the_label(tmp_path, field, value, run_value):
    from iclpt.io import DataError

    test = _test_split(tmp_path)
    label = {"method": "method", "seed": "seed", "demo_source": "demos", "prompt_length": "length"}[field]
    foreign = _predictions(tmp_path / "p.jsonl", [f"mtop-test-{i:05d}" for i in range(16)], **{label: value})
    with pytest.raises(DataError, match=rf"p.jsonl:1: {field} is {value!r}, this run's is {run_value} \(the "
                                        r"predictions of another run\?\)"):
        _check(foreign, test)


@pytest.mark.parametrize("damage", ["empty", "cut_mid_line", "blank_lines_only"])
def test_predictions_emptied_or_cut_mid_line_name_the_file(tmp_path, damage):
    from iclpt.io import DataError

    test = _test_split(tmp_path)
    pred = _predictions(tmp_path / "p.jsonl", [f"mtop-test-{i:05d}" for i in range(16)])
    data = pred.read_bytes()
    pred.write_bytes({"empty": b"", "cut_mid_line": data[: len(data) // 2 + 7], "blank_lines_only": b"\n\n"}[damage])
    match = {"empty": "p.jsonl: no predictions", "blank_lines_only": "p.jsonl: no predictions",
             "cut_mid_line": r"p.jsonl:\d+: malformed JSON"}[damage]
    with pytest.raises(DataError, match=match):
        _check(pred, test)


def test_a_metrics_file_copied_into_another_runs_folder_is_refused_by_the_reports(tmp_path):
    """The reports take a run's identity from its metrics.json; one copied over another run's would count its run
    twice and drop the other: the tables stop, naming both files."""
    from iclpt.io import DataError
    from iclpt.reporting.aggregate import load_per_example, load_runs

    doc = {**RUN, "metrics": {"exact_match": 50.0}}
    folders = [tmp_path / "predictions" / "mtop" / "tiny-gpt2" / m for m in ("icl/L0/retrieved/s0", "pt/L4/none/s0")]
    for folder in folders:
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(doc))
        (folder / "scores.jsonl").write_text(json.dumps({"id": "mtop-test-00000", "exact_match": 100.0}) + "\n")
    assert len(load_runs([folders[0] / "metrics.json"] * 2)) == 2  # the same file twice is the same run
    msg = (rf"{folders[1]}/metrics.json: names the run mtop/tiny-gpt2/icl/L0/retrieved/s0, as "
           rf"{folders[0]}/metrics.json does \(a metrics.json copied or moved from another run's folder\?\)")
    with pytest.raises(DataError, match=msg):
        load_runs([f / "metrics.json" for f in folders])
    with pytest.raises(DataError, match=msg):
        load_per_example(folders, need_demo_scores=False)


# ==== 5. encodings: a byte-order mark is stripped with a note naming the file; invalid UTF-8 is refused ===========
@pytest.mark.parametrize("reader", ["jsonl", "tsv", "lines"])
def test_a_byte_order_mark_in_each_reader_is_stripped_with_a_note(tmp_path, reader, caplog):
    import logging
    import shutil

    from iclpt.data.tasks import get_task

    if reader == "jsonl":  # the reader of MTOP's JSONL split files
        p = tmp_path / "dev.json"
        shutil.copy(DEMO / "mtop" / "dev.json", p)
        load = lambda: get_task("mtop").load("dev", p)  # noqa: E731
    elif reader == "tsv":  # the reader of the official MTOP TSV
        p = tmp_path / "test.txt"
        p.write_text("1\tIN:GET_WEATHER\t\tweather in Paris\tweather\ten_US\t[IN:GET_WEATHER ]\t"
                     '{"tokens": ["weather", "in", "Paris"]}\n')
        load = lambda: get_task("mtop").load("test", p)  # noqa: E731
    else:  # the line files of Logic2Text
        for name in ("train_lm.json", "train.sql", "train.en"):
            shutil.copy(DEMO / "logic2text" / name, tmp_path / name)
        p = tmp_path / "train.en"
        load = lambda: get_task("logic2text").load("train", tmp_path / "train_lm.json")  # noqa: E731
    expected = load()
    p.write_bytes(b"\xef\xbb\xbf" + p.read_bytes())
    with caplog.at_level(logging.WARNING, logger="iclpt.io"):
        assert load() == expected
    assert [r.getMessage() for r in caplog.records if "byte-order mark" in r.getMessage()] == [
        f"{p}: a UTF-8 byte-order mark at the start of the file was removed (read as UTF-8 without it)"]


def test_a_byte_order_mark_inside_a_file_is_not_a_silent_character(tmp_path):
    """Only a leading BOM is removed; one at the start of a later JSONL line (two files concatenated) is malformed
    JSON on that line."""
    from iclpt.io import DataError, read_jsonl

    p = tmp_path / "dev.json"
    p.write_bytes(b'{"id": 1}\n\xef\xbb\xbf{"id": 2}\n')
    with pytest.raises(DataError, match=r"dev.json:2: malformed JSON"):
        read_jsonl(p)


# ==== 6. the other stages' inputs: truncated, emptied, another run's ============================================
@pytest.mark.parametrize("damage", ["truncated", "empty", "not_npy"])
def test_cached_embeddings_that_do_not_load_name_the_file(tmp_path, damage):
    import numpy as np

    from iclpt.io import DataError
    from iclpt.retrieval.encoder import load_embeddings, save_embeddings

    path = tmp_path / "train.npy"
    save_embeddings(path, np.ones((50, 16), dtype=np.float32))
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "not_npy": b"{}"}[damage])
    with pytest.raises(DataError, match=rf"^{path}: not a readable .npy array \(truncated or corrupt\?"):
        load_embeddings(path, n_rows=50)


@pytest.mark.parametrize("damage", ["cut_at_line_end", "cut_mid_line", "empty", "another_split"])
def test_a_damaged_retrieval_file_names_the_file(tmp_path, damage):
    from iclpt.engine.prompting import load_retrieval
    from iclpt.io import DataError

    train = {f"mtop-train-{i:05d}": {"id": f"mtop-train-{i:05d}"} for i in range(6)}
    queries = [{"id": f"mtop-test-{i:05d}"} for i in range(4)]
    lines = [json.dumps({"id": q["id"], "demo_ids": ["mtop-train-00001", "mtop-train-00002"], "scores": [1.0, 0.5]})
             for q in queries]
    path = tmp_path / "test.jsonl"
    text = "\n".join(lines) + "\n"
    path.write_text({"cut_at_line_end": "\n".join(lines[:2]) + "\n", "cut_mid_line": text[: len(text) // 2 + 3],
                     "empty": "", "another_split": text.replace("mtop-test", "mtop-dev")}[damage])
    match = {"cut_at_line_end": r"test.jsonl: no line for example 'mtop-test-00002'",
             "cut_mid_line": r"test.jsonl:3: malformed JSON", "empty": r"test.jsonl: no line for example",
             "another_split": r"test.jsonl: id 'mtop-dev-00000' is not an example of"}[damage]
    with pytest.raises(DataError, match=match):
        load_retrieval(str(path), queries, train, n_demos=1)


@pytest.mark.parametrize("damage", ["cut_mid_line", "empty"])
def test_a_damaged_data_file_names_the_file(tmp_path, damage):
    from iclpt.data.prepare import prepare_task
    from iclpt.io import DataError

    files = {}
    for split in ("train", "dev", "test"):
        files[split] = tmp_path / f"{split}.json"
        files[split].write_bytes((DEMO / "mtop" / f"{split}.json").read_bytes())
    data = files["dev"].read_bytes()
    files["dev"].write_bytes(data[: len(data) // 2 + 3] if damage == "cut_mid_line" else b"")
    with pytest.raises(DataError, match=rf"{files['dev']}" + (r":\d+: malformed JSON" if damage == "cut_mid_line"
                                                              else r"")):
        prepare_task("mtop", files)


@pytest.mark.slow
def test_the_score_rule_stops_on_predictions_cut_short(tmp_path):
    """The score rule gets the test split as an input: predictions cut at a line end (a copy that stopped, a
    predict job that another run's file replaced) stop the job, naming the file and the missing ids, and leave
    no metrics.json."""
    work = copy_repo(tmp_path / "w")
    cfg = small_config("cut", ("mtop",))
    cfg["methods"] = ["zeroshot"]
    path = write_config(work, cfg)
    run_dir = "results/cut/predictions/mtop/tiny-gpt2/zeroshot/L0/none/s0"
    snakemake(work, "--cores", "2", f"{run_dir}/metrics.json", "--configfile", str(path))
    metrics = json.loads((work / run_dir / "metrics.json").read_text())
    assert metrics["n_examples"] == cfg["predict"]["max_examples"]
    pred = work / run_dir / "predictions.jsonl"
    lines = pred.read_text().splitlines(keepends=True)
    pred.write_text("".join(lines[: len(lines) // 2]))  # newer than metrics.json: score reruns
    proc = snakemake(work, "--cores", "2", f"{run_dir}/metrics.json", "--configfile", str(path), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"predictions.jsonl: holds {len(lines) // 2} predictions, the test split" in out, out[-3000:]
    assert f"{len(lines) - len(lines) // 2} test id(s) missing ('mtop-test-" in out
    assert not (work / run_dir / "metrics.json").exists()
