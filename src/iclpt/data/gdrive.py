"""Google Drive large-file download with urllib only.

Drive answers a direct download of a large file with an HTML "can't scan this
file for viruses" page holding a form (``id="download-form"``) whose action URL
and hidden inputs (``id``, ``export``, ``confirm``, ``uuid``, ...) make the real
download URL.  As gdown does, the follow-up URL is the form action with the
hidden inputs merged into its query string (older pages offer an
``/uc?export=download&confirm=...`` link instead).  Any HTML after following,
or a quota / refusal page, raises :class:`GoogleDriveError`; a file body shorter
than its Content-Length raises :class:`DriveTransferIncomplete` (nothing kept;
``iclpt.data.download.fetch_any`` tries again).
"""

from __future__ import annotations

import http.cookiejar
import os
import shutil
import urllib.parse
import urllib.request
from collections.abc import Mapping
from html.parser import HTMLParser
from pathlib import Path
from typing import BinaryIO

ZIP_MAGIC = b"PK\x03\x04"
_SNIFF = 4096
_CHUNK = 1 << 20


class GoogleDriveError(RuntimeError):
    """Google Drive refused the download (quota, permissions, unexpected page)."""


class _FormParser(HTMLParser):
    """Collects the download form's action and hidden inputs, and any confirm link."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.hidden: dict[str, str] = {}
        self.confirm_href: str | None = None
        self._in_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and (a.get("id") == "download-form" or self.action is None):
            self.action, self._in_form = a.get("action", ""), True
        elif tag == "input" and self._in_form and a.get("type", "").lower() == "hidden" and a.get("name"):
            self.hidden[a["name"]] = a.get("value", "")
        elif tag == "a" and "export=download" in a.get("href", "") and self.confirm_href is None:
            self.confirm_href = a["href"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False


def drive_file_id(url: str) -> str | None:
    """The ``id`` of a Drive URL (query ``id=`` or ``/file/d/<id>/``)."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    if query.get("id"):
        return query["id"][0]
    segments = parts.path.split("/")
    if "d" in segments and segments.index("d") + 1 < len(segments):
        return segments[segments.index("d") + 1]
    return None


def is_html_response(head: bytes, headers: Mapping[str, str] | None = None) -> bool:
    """True for an HTML page (content type or body), False for a zip or other payload."""
    if head.startswith(ZIP_MAGIC):
        return False
    ctype = (headers or {}).get("Content-Type", "") or ""
    start = head.lstrip()[:200].lower()
    return "text/html" in ctype.lower() or start.startswith((b"<!doctype html", b"<html"))


def _merge_query(action: str, fields: Mapping[str, str]) -> str:
    parts = urllib.parse.urlsplit(action)
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    for name, value in fields.items():
        query[name] = [value]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query, doseq=True)))


def confirmation_url(html: str, page_url: str) -> str | None:
    """Follow-up URL from a virus-scan warning page, or None when the page has no form/link."""
    parser = _FormParser()
    parser.feed(html)
    if parser.action is not None and parser.hidden:
        return _merge_query(urllib.parse.urljoin(page_url, parser.action), parser.hidden)
    if parser.confirm_href:
        return urllib.parse.urljoin(page_url, parser.confirm_href.replace("&amp;", "&"))
    return None


def drive_error(file_id: str | None, reason: str) -> GoogleDriveError:
    """The error raised when Drive serves a page instead of the file."""
    return GoogleDriveError(
        f"Google Drive did not serve file id {file_id or '?'} ({reason}); this is usually the "
        "download quota or a permission refusal. Download the file by hand in a browser, then "
        "serve it through ICLPT_DOWNLOAD_BASE_URL or configure `source: local`."
    )


def _default_opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))


class DriveTransferIncomplete(GoogleDriveError):
    """Drive sent fewer bytes than its Content-Length (the connection closed early)."""


def _stream(first: bytes, body: BinaryIO, dest: Path, expected: int | None = None, url: str = "") -> None:
    """``first`` + the rest of ``body`` into ``dest`` (through ``dest.part``); with ``expected`` (Content-Length)
    a short body raises :class:`DriveTransferIncomplete` and leaves neither file."""
    tmp = dest.with_name(dest.name + ".part")
    try:
        with tmp.open("wb") as out:
            out.write(first)
            shutil.copyfileobj(body, out, _CHUNK)
            n = out.tell()
        if expected is not None and n != expected:
            raise DriveTransferIncomplete(f"{url}: incomplete download: received {n} of {expected} bytes (the "
                                          "connection closed early)")
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _content_length(headers: Mapping[str, str]) -> int | None:
    value = (headers.get("Content-Length") or "").strip()
    return int(value) if value.isdigit() else None


def fetch_drive(
    url: str,
    dest: str | os.PathLike[str],
    timeout: float = 60.0,
    opener: urllib.request.OpenerDirector | None = None,
) -> Path:
    """Download a Drive file to ``dest``, passing the virus-scan warning page if needed."""
    opener = opener or _default_opener()
    dest_path, file_id = Path(dest), drive_file_id(url)
    dest_path.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(2):
        with opener.open(url, timeout=timeout) as resp:
            head = resp.read(_SNIFF)
            if not is_html_response(head, resp.headers):
                _stream(head, resp, dest_path, _content_length(resp.headers), url)
                return dest_path
            page = (head + resp.read()).decode("utf-8", errors="replace")
            next_url = confirmation_url(page, resp.geturl()) if attempt == 0 else None
        if next_url is None:
            raise drive_error(file_id, "an HTML page instead of the file")
        url = next_url
    raise drive_error(file_id, "HTML again after confirming the virus-scan warning")
