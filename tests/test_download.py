"""Downloads for real, against a local HTTP server on 127.0.0.1 (no mocks)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from iclpt.data.download import (
    DownloadError,
    DownloadSpec,
    RemoteFile,
    download_spec,
    download_task,
    get_spec,
    resolve_url,
)
from iclpt.data.prepare import prepare_task
from iclpt.data.tasks import TASKS


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture()
def server(tmp_path):
    """A static file server on 127.0.0.1 (random port) serving tmp_path/www; yields (folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _spider_zip(path: Path, demo: Path) -> None:
    """spider_data.zip in the official layout, made from the demo files."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("spider_data/", "")
        for name in ("train_spider.json", "dev.json", "tables.json"):
            zf.write(demo / "spider" / name, f"spider_data/{name}")
        zf.write(demo / "spider/database/school_library/school_library.sqlite",
                 "spider_data/database/school_library/school_library.sqlite")


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith((".tmp-", ".old-"))) if d.exists() else []


def test_specs_cover_every_task():
    SPECS = {name: get_spec(name) for name in TASKS}
    assert all(spec is task.download for spec, task in zip(SPECS.values(), TASKS.values()))
    for spec in SPECS.values():
        assert all(f.url.startswith("https://") for f in spec.files)
    f = SPECS["spider"].files[0]
    assert resolve_url(f, "http://127.0.0.1:9/mirror/") == "http://127.0.0.1:9/mirror/spider_data.zip"


def test_spider_download_unpacks_and_prepares(server, tmp_path, demo_data):
    www, base = server
    _spider_zip(www / "spider_data.zip", demo_data)
    dl = tmp_path / "downloads"
    (dl / "spider").mkdir(parents=True)  # as Snakemake creates the output folder before the job
    manifest_path = download_task("spider", dl, base_url=base)
    assert manifest_path == dl / "spider/manifest.json"
    m = json.loads(manifest_path.read_text())
    entry = m["downloads"][0]
    assert entry["url"] == base + "/spider_data.zip"
    assert entry["sha256"] == hashlib.sha256((www / "spider_data.zip").read_bytes()).hexdigest()
    assert entry["verified"] is False and "spider_data/tables.json" in entry["files"]
    root = dl / "spider/spider_data"
    assert (root / "database/school_library/school_library.sqlite").is_file()
    assert _leftovers(dl) == []
    out = prepare_task("spider", {"train": root / "train_spider.json", "dev": root / "dev.json",
                                  "test": root / "dev.json"})
    assert len(out["dev"]) == 20 and out["dev"][0]["meta"]["db_path"]


def test_plain_files_and_tar_gz(server, tmp_path, demo_data):
    www, base = server
    (www / "dev.json").write_bytes((demo_data / "dart/dev.json").read_bytes())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(demo_data / "dart/test.xml", arcname="pkg/data/test.xml")
    (www / "pkg.tar.gz").write_bytes(buf.getvalue())
    digest = hashlib.sha256((www / "dev.json").read_bytes()).hexdigest()
    spec = DownloadSpec("dart", (RemoteFile("https://example.invalid/dev.json", "dev.json", sha256=digest),
                                 RemoteFile("https://example.invalid/pkg.tar.gz", "pkg.tar.gz", archive="tar.gz",
                                            strip="pkg/")))
    manifest = json.loads(download_spec(spec, tmp_path / "dl", base_url=base).read_text())
    assert manifest["downloads"][0]["verified"] is True
    assert (tmp_path / "dl/dart/dev.json").is_file() and (tmp_path / "dl/dart/data/test.xml").is_file()


def test_checksum_mismatch(server, tmp_path):
    www, base = server
    (www / "a.json").write_text("[]")
    spec = DownloadSpec("mtop", (RemoteFile("https://example.invalid/a.json", "a.json", sha256="0" * 64),))
    with pytest.raises(DownloadError, match=r"a.json: sha256 mismatch: expected 0{64}, got [0-9a-f]{64}"):
        download_spec(spec, tmp_path / "dl", base_url=base)
    assert not (tmp_path / "dl/mtop").exists() and _leftovers(tmp_path / "dl") == []


def test_http_404(server, tmp_path):
    _, base = server
    with pytest.raises(DownloadError, match=r"/mtop.zip: HTTP 404"):
        download_task("mtop", tmp_path / "dl", base_url=base)
    assert not (tmp_path / "dl/mtop").exists() and _leftovers(tmp_path / "dl") == []


@pytest.mark.parametrize("member", ["../evil.txt", "/etc/evil.txt", "spider_data/../../evil.txt"])
def test_zip_path_traversal_refused(server, tmp_path, member):
    www, base = server
    with zipfile.ZipFile(www / "spider_data.zip", "w") as zf:
        zf.writestr("spider_data/ok.json", "[]")
        zf.writestr(member, "x")
    with pytest.raises(DownloadError, match="unsafe path"):
        download_task("spider", tmp_path / "dl", base_url=base)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "dl/spider").exists()


def test_tar_symlink_refused(server, tmp_path):
    www, base = server
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("pkg/link")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tf.addfile(info)
    (www / "pkg.tar.gz").write_bytes(buf.getvalue())
    spec = DownloadSpec("dart", (RemoteFile("https://example.invalid/pkg.tar.gz", "pkg.tar.gz", archive="tar.gz"),))
    with pytest.raises(DownloadError, match="not a regular file"):
        download_spec(spec, tmp_path / "dl", base_url=base)


def test_rule_download_then_prepare(server, tmp_path, demo_data, repo_root):
    """`source: download`: the download rule runs (base URL from ICLPT_DOWNLOAD_BASE_URL), then prepare reads it."""
    import json
    import os
    import shutil
    import subprocess
    import uuid

    import yaml

    www, base = server
    _spider_zip(www / "spider_data.zip", demo_data)
    run = f"pytest-dl-{uuid.uuid4().hex[:8]}"
    dl = tmp_path / "downloads"
    cfg = {"run": run, "download_dir": str(dl),
           "tasks": {"spider": {"source": "download", "files": {
               "train": "spider_data/train_spider.json", "dev": "spider_data/dev.json",
               "test": "spider_data/dev.json"}}}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    target = f"results/{run}/data/spider/dev.jsonl"
    exe = repo_root / ".venv/bin/snakemake"
    cmd = [str(exe) if exe.exists() else "snakemake", target, "--cores", "1", "--nolock",
           "--configfile", str(repo_root / "config/tiny.yaml"), str(tmp_path / "cfg.yaml")]
    try:
        proc = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=300,
                              env=os.environ | {"ICLPT_DOWNLOAD_BASE_URL": base})
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert (dl / "spider/manifest.json").is_file()
        # dev and test are one file here, so the dev split is held out of train in whole databases
        dev = [json.loads(line) for line in (repo_root / target).read_text().splitlines()]
        train = [json.loads(line) for line in (repo_root / target).with_name("train.jsonl").read_text().splitlines()]
        assert len(dev) >= 8 and all(r["meta"]["held_out_from"] == "train" and r["split"] == "dev" for r in dev)
        assert not {r["meta"]["db_id"] for r in dev} & {r["meta"]["db_id"] for r in train}
        assert not {r["id"] for r in dev} & {r["id"] for r in train}
    finally:
        shutil.rmtree(repo_root / "results" / run, ignore_errors=True)


# ---- Google Drive routing ------------------------------------------------------------------------------
def test_drive_url_goes_through_fetch_drive(tmp_path, monkeypatch, demo_data):
    """Without base_url, the Spider spec's Drive URL is fetched by iclpt.data.gdrive.fetch_drive."""
    import iclpt.data.gdrive
    from iclpt.data.download import is_drive_url

    archive = tmp_path / "spider_data.zip"
    _spider_zip(archive, demo_data)
    calls = []

    def fake_fetch_drive(url, dest, timeout=60.0, opener=None):
        calls.append((url, Path(dest).name))
        Path(dest).write_bytes(archive.read_bytes())
        return Path(dest)

    monkeypatch.setattr(iclpt.data.gdrive, "fetch_drive", fake_fetch_drive)
    manifest = json.loads(download_task("spider", tmp_path / "dl").read_text())
    assert calls == [(get_spec("spider").files[0].url, "spider_data.zip")]
    assert manifest["downloads"][0]["bytes"] == archive.stat().st_size
    assert (tmp_path / "dl/spider/spider_data/dev.json").is_file()
    assert is_drive_url("https://drive.google.com/uc?id=x&export=download")
    assert is_drive_url("https://drive.usercontent.google.com/download?id=x")
    assert not is_drive_url("https://storage.googleapis.com/totto-public/totto_data.zip")
    assert not is_drive_url("https://example.org/drive.google.com/x")


def test_drive_error_propagates_with_its_message(tmp_path, monkeypatch):
    import iclpt.data.gdrive

    def refuse(url, dest, timeout=60.0, opener=None):
        raise iclpt.data.gdrive.GoogleDriveError("Google Drive refused file abc: download quota exceeded")

    monkeypatch.setattr(iclpt.data.gdrive, "fetch_drive", refuse)
    spec = DownloadSpec("drivetask", (RemoteFile("https://drive.google.com/uc?id=abc&export=download", "f.bin"),))
    with pytest.raises(iclpt.data.gdrive.GoogleDriveError, match="download quota exceeded"):
        download_spec(spec, tmp_path / "dl")
    assert not (tmp_path / "dl/drivetask").exists() and _leftovers(tmp_path / "dl") == []


def test_base_url_override_bypasses_drive(server, tmp_path, monkeypatch, demo_data):
    """An overridden Drive URL is a plain mirror fetch: fetch_drive is not called."""
    import iclpt.data.gdrive

    www, base = server
    _spider_zip(www / "spider_data.zip", demo_data)

    def boom(*a, **k):
        raise AssertionError("fetch_drive must not be used with base_url")

    monkeypatch.setattr(iclpt.data.gdrive, "fetch_drive", boom)
    manifest = json.loads(download_task("spider", tmp_path / "dl", base_url=base).read_text())
    assert manifest["downloads"][0]["url"] == f"{base}/spider_data.zip"
