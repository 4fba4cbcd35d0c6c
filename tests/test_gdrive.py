"""Tests for iclpt.data.gdrive against a local HTTP server."""

from __future__ import annotations

import io
import threading
import urllib.parse
import zipfile
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from iclpt.data.gdrive import (
    GoogleDriveError,
    confirmation_url,
    drive_file_id,
    fetch_drive,
    is_html_response,
)

FILE_ID = "1AbCdEfG"


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("spider/hello.txt", "hi" * 5000)
    return buf.getvalue()


ZIP = _zip_bytes()

WARNING = """<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head>
<body><p>Google Drive can't scan this file for viruses.</p>
<form id="download-form" action="{base}/download" method="get">
<input type="submit" value="Download anyway"/>
<input type="hidden" name="id" value="{fid}"><input type="hidden" name="export" value="download">
<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="u-123">
</form></body></html>"""

QUOTA = """<!DOCTYPE html><html><body><p class="uc-error-caption">Sorry, you can't view or
download this file at this time.</p><p class="uc-error-subcaption">Too many users have viewed or
downloaded this file recently.</p></body></html>"""


def _serve(route: Callable[[BaseHTTPRequestHandler, str, dict], None]) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            parts = urllib.parse.urlsplit(self.path)
            route(self, parts.path, urllib.parse.parse_qs(parts.query))

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _send(handler: BaseHTTPRequestHandler, body: bytes, ctype: str) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", ctype)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture()
def warning_server() -> Iterator[tuple[str, list]]:
    seen: list = []
    box: dict = {}

    def route(h: BaseHTTPRequestHandler, path: str, query: dict) -> None:
        seen.append((path, query))
        if query.get("confirm") == ["t"] and query.get("uuid") == ["u-123"]:
            _send(h, ZIP, "application/octet-stream")
        else:
            _send(h, WARNING.format(base=box["base"], fid=FILE_ID).encode(), "text/html; charset=utf-8")

    gen = _serve(route)
    box["base"] = next(gen)
    yield box["base"], seen
    next(gen, None)


@pytest.fixture()
def quota_server() -> Iterator[str]:
    gen = _serve(lambda h, path, query: _send(h, QUOTA.encode(), "text/html"))
    yield next(gen)
    next(gen, None)


def test_follow_virus_scan_warning(tmp_path, warning_server) -> None:
    base, seen = warning_server
    dest = tmp_path / "out" / "spider.zip"
    got = fetch_drive(f"{base}/download?id={FILE_ID}&export=download", dest, timeout=10)
    assert got == dest and dest.read_bytes() == ZIP
    assert zipfile.ZipFile(dest).namelist() == ["spider/hello.txt"]
    assert len(seen) == 2
    path, query = seen[1]
    assert path == "/download"
    assert query["id"] == [FILE_ID] and query["export"] == ["download"] and query["confirm"] == ["t"]
    assert not (tmp_path / "out" / "spider.zip.part").exists()


def test_quota_page_raises_clear_error(tmp_path, quota_server) -> None:
    dest = tmp_path / "spider.zip"
    with pytest.raises(GoogleDriveError) as info:
        fetch_drive(f"{quota_server}/uc?id={FILE_ID}&export=download", dest, timeout=10)
    message = str(info.value)
    assert "Google Drive" in message and FILE_ID in message
    assert "ICLPT_DOWNLOAD_BASE_URL" in message and "source: local" in message
    assert not dest.exists()


def test_confirmation_url_building() -> None:
    page = WARNING.format(base="https://drive.usercontent.google.com", fid="XYZ")
    url = confirmation_url(page, "https://drive.usercontent.google.com/download?id=XYZ")
    parts = urllib.parse.urlsplit(url or "")
    assert parts.netloc == "drive.usercontent.google.com" and parts.path == "/download"
    assert urllib.parse.parse_qs(parts.query) == {
        "id": ["XYZ"], "export": ["download"], "confirm": ["t"], "uuid": ["u-123"]}
    old = '<html><a id="uc-download-link" href="/uc?export=download&amp;confirm=AbC&amp;id=XYZ">x</a></html>'
    assert confirmation_url(old, "https://drive.google.com/uc?id=XYZ") == (
        "https://drive.google.com/uc?export=download&confirm=AbC&id=XYZ")
    assert confirmation_url(QUOTA, "https://drive.google.com/uc?id=XYZ") is None


def test_helpers() -> None:
    assert drive_file_id("https://drive.google.com/uc?id=AAA&export=download") == "AAA"
    assert drive_file_id("https://drive.google.com/file/d/BBB/view") == "BBB"
    assert not is_html_response(ZIP[:64], {"Content-Type": "text/html"})
    assert is_html_response(b"<!DOCTYPE html><html>", {})
    assert is_html_response(b"anything", {"Content-Type": "text/html; charset=utf-8"})
