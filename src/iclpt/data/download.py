"""Download the official datasets (urllib only), verify sha256, unpack safely, write a manifest.

`download_task(task, download_dir, base_url=None)` fetches every file of the task's spec into
`<download_dir>/<task>/`: plain files under their own name, archives unpacked as they are (their top folder
kept), so a task's `files` (relative to `<download_dir>/<task>/`) are the paths inside the official release,
e.g. `spider_data/train_spider.json`. Steps: each file is streamed into a temp folder beside the target
(`<download_dir>/.tmp-<task>-*`) and checked against the size the server announces (a transfer cut short is resumed
with a Range request, or fetched again, up to 3 tries; then `IncompleteDownload`), its sha256 is computed and
compared with the spec's when the spec has one (a mismatch is fetched once more, then fails; otherwise the
computed checksum is recorded in the manifest on first download, and pinning it in the spec makes later
downloads verify it), archives are unpacked with every member checked (no absolute paths, no `..`,
no links or devices), `manifest.json` is written last, and the folder is renamed into place in one step. A
failure keeps nothing: no task folder, no manifest, no temp folder.

`base_url` (or the environment variable ICLPT_DOWNLOAD_BASE_URL, read by the Snakemake rule) replaces the
origin of every URL: the file is then fetched from `<base_url>/<name>` (a mirror, or a local server in tests)
as a plain file. Without it, a URL on drive.google.com or drive.usercontent.google.com goes through
`iclpt.data.gdrive.fetch_drive`, which passes Drive's virus-scan confirmation page; a refusal (quota, permission,
an HTML page instead of the file) raises `iclpt.data.gdrive.GoogleDriveError` with Drive's reason.

Sources (official where the data is officially distributed as files):

| task | URL(s) | unpacked to `<download_dir>/<task>/` |
|---|---|---|
| totto | https://storage.googleapis.com/totto-public/totto_data.zip | `totto_data/totto_train_data.jsonl`, `totto_data/totto_dev_data.jsonl`, `totto_data/unlabeled_totto_test_data.jsonl` (the test file has no references: use dev as test) |
| dart | https://raw.githubusercontent.com/Yale-LILY/dart/master/data/v1.1.1/dart-v1.1.1-full-{train,dev,test}.json and `-test.xml` | the same names |
| logic2text | https://raw.githubusercontent.com/czyssrs/Logic2Text/master/dataset/{train,valid,test}.json | the same names (full records) |
| spider | spider_data.zip, the Google Drive file linked from https://yale-lily.github.io/spider (id 1403EGqzIDoHMdQF4c9Bkyl7dZLZ5Wt6J) | `spider_data/train_spider.json`, `spider_data/dev.json`, `spider_data/tables.json`, `spider_data/database/<db>/<db>.sqlite`, ... |
| mtop | https://dl.fbaipublicfiles.com/mtop/mtop.zip (the target of https://fb.me/mtop_dataset) | `mtop/en/train.txt`, `mtop/en/eval.txt`, `mtop/en/test.txt` (TSV; + other languages) |

Google Drive may still refuse scripted downloads of large files or rate-limit them; then download spider_data.zip by
hand and serve it from a folder (`python -m http.server`) through ICLPT_DOWNLOAD_BASE_URL, or unpack it under
a data_root and use `source: local`.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import stat
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from iclpt.data.tasks import TASKS, get_task
from iclpt.data.tasks.base import DownloadSpec, RemoteFile
from iclpt.io import provenance, write_json_atomic

log = logging.getLogger(__name__)

BASE_URL_ENV = "ICLPT_DOWNLOAD_BASE_URL"
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download failed: HTTP error, checksum mismatch, unsafe archive, ..."""


def get_spec(task: str) -> DownloadSpec:
    """The task's download spec (it lives with the task: `iclpt.data.tasks.<task>`)."""
    spec = get_task(task).download
    if spec is None:
        have = ", ".join(sorted(n for n, t in TASKS.items() if t.download is not None))
        raise KeyError(f"no download spec for task {task!r}; tasks with one: {have}")
    return spec


def resolve_url(f: RemoteFile, base_url: str | None) -> str:
    if not base_url:
        return f.url
    return base_url.rstrip("/") + "/" + urllib.parse.quote(f.name)


DRIVE_HOSTS = ("drive.google.com", "drive.usercontent.google.com")


def is_drive_url(url: str) -> bool:
    """True for a Google Drive URL (host drive.google.com or drive.usercontent.google.com)."""
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    return host in DRIVE_HOSTS


def fetch_any(url: str, dest: Path, *, timeout: float = 60.0, retries: int = 2) -> int:
    """`fetch`, or `iclpt.data.gdrive.fetch_drive` for a Drive URL; return the byte count. A Drive transfer cut
    short is fetched again (up to `retries` times), then its DriveTransferIncomplete propagates."""
    if is_drive_url(url):
        from iclpt.data import gdrive

        for attempt in range(retries + 1):
            try:
                gdrive.fetch_drive(url, dest, timeout=timeout)  # GoogleDriveError propagates with Drive's reason
                return Path(dest).stat().st_size
            except gdrive.DriveTransferIncomplete as exc:
                if attempt == retries:
                    raise
                log.warning("%s; fetching it again (try %d of %d)", exc, attempt + 2, retries + 1)
                time.sleep(RETRY_WAIT_S * (attempt + 1))
    return fetch(url, dest, timeout=timeout, retries=retries)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


#: seconds to wait before retry n (n = 0, 1, ...): RETRY_WAIT_S * (n + 1)
RETRY_WAIT_S = 1.0


class IncompleteDownload(DownloadError):
    """The server sent fewer bytes than it announced (the connection closed early)."""


def expected_size(resp: Any, offset: int) -> int | None:
    """The file's full size from a response: Content-Range's total (a 206 answer to a Range request), else
    ``offset`` + Content-Length; None when the server announces neither (then only a pinned sha256 can tell)."""
    crange = resp.headers.get("Content-Range") or ""
    if resp.status == 206 and "/" in crange:
        total = crange.rsplit("/", 1)[1].strip()
        if total.isdigit():
            return int(total)
    length = resp.headers.get("Content-Length")
    if length is not None and length.strip().isdigit():
        return offset + int(length)
    return None


def _resume_offset(resp: Any, offset: int) -> int:
    """Where the body of `resp` starts in the file: ``offset`` for a 206 that starts there, 0 for a full answer
    (a server that ignores Range sends the whole file again)."""
    if offset and resp.status == 206:
        crange = resp.headers.get("Content-Range") or ""
        start = crange.removeprefix("bytes ").split("-", 1)[0].strip()
        if start.isdigit() and int(start) == offset:
            return offset
        raise IncompleteDownload(f"unexpected Content-Range {crange!r} for a resume at byte {offset}")
    return 0


def fetch(url: str, dest: Path, *, timeout: float = 60.0, retries: int = 2) -> int:
    """Stream `url` into `dest`; return the byte count. HTTP errors raise DownloadError naming url and status.

    The bytes received are checked against the size the server announces (Content-Length, or the total of
    Content-Range): a connection that closes early is resumed with a Range request where the server allows it
    (else the file is fetched again), up to `retries` times; then :class:`IncompleteDownload` names the url and
    both byte counts, and `dest` is removed (a short file is never left to be checksummed or recorded)."""
    dest = Path(dest)
    have = 0  # bytes of the file already in dest (a prefix), where the next try resumes
    short = ""  # the last try's short transfer, if that is why it failed
    for attempt in range(retries + 1):
        headers = {"User-Agent": "iclpt-download/0.1"}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
                start = _resume_offset(resp, have)
                total = expected_size(resp, start)
                n = start
                with open(dest, "r+b" if start else "wb") as out:
                    out.seek(start)
                    out.truncate()
                    for chunk in iter(lambda: resp.read(CHUNK), b""):
                        out.write(chunk)
                        n += len(chunk)
            if total is None or n == total:
                return n
            have = n if n < total else 0  # more than announced: start over
            last = short = f"received {n} of {total} bytes (the connection closed early)"
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:  # the resume point is not in the file any more: start over
                have, last, short = 0, f"HTTP 416 for a resume at byte {have}", ""
            elif exc.code < 500 or attempt == retries:
                _discard(dest)
                raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
            else:
                last, short = f"HTTP {exc.code} {exc.reason}", ""
        except IncompleteDownload as exc:  # a resume answered from the wrong offset: start over
            have, last, short = 0, str(exc), ""
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            last, short = str(getattr(exc, "reason", None) or exc or type(exc).__name__), ""
            have = dest.stat().st_size if dest.exists() else 0
        if attempt < retries:
            log.warning("%s: %s; %s (try %d of %d)", url, last,
                        f"resuming at byte {have}" if have else "fetching it again", attempt + 2, retries + 1)
            time.sleep(RETRY_WAIT_S * (attempt + 1))
    _discard(dest)
    if short:
        raise IncompleteDownload(f"{url}: incomplete download: {short}, after {retries + 1} tries; nothing was "
                                 "kept")
    raise DownloadError(f"{url}: {last} (after {retries + 1} tries)")


def _discard(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _safe_member(name: str, strip: str) -> PurePosixPath | None:
    """The member's relative path after `strip`, or None for folders outside `strip`; unsafe names raise."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
        raise DownloadError(f"unsafe path in archive: {name!r}")
    rel = str(p)
    if strip:
        s = strip.rstrip("/")
        if rel == s:
            return None
        if not rel.startswith(s + "/"):
            return None
        rel = rel[len(s) + 1:]
    return PurePosixPath(rel) if rel and rel != "." else None


def unpack(archive: Path, kind: str, dest: Path, strip: str = "") -> list[str]:
    """Unpack a zip / tar.gz into `dest` safely; return the relative paths of the files written."""
    written: list[str] = []
    dest_resolved = dest.resolve()

    def target(rel: PurePosixPath) -> Path:
        out = (dest / rel).resolve()
        if dest_resolved != out and dest_resolved not in out.parents:
            raise DownloadError(f"{archive}: member {rel} escapes the target folder")
        return out

    if kind == "zip":
        try:
            zf = zipfile.ZipFile(archive)
        except zipfile.BadZipFile:
            raise DownloadError(f"{archive}: not a zip archive") from None
        with zf:
            for info in zf.infolist():
                rel = _safe_member(info.filename, strip)
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise DownloadError(f"{archive}: link member {info.filename!r} refused")
                if rel is None or info.is_dir():
                    continue
                out = target(rel)
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
                written.append(str(rel))
    elif kind in ("tar.gz", "tgz", "tar"):
        try:
            tf = tarfile.open(archive, "r:*")
        except tarfile.TarError:
            raise DownloadError(f"{archive}: not a tar archive") from None
        with tf:
            for m in tf.getmembers():
                rel = _safe_member(m.name, strip)
                if m.isdir():
                    continue
                if not m.isfile():
                    raise DownloadError(f"{archive}: member {m.name!r} is not a regular file (refused)")
                if rel is None:
                    continue
                out = target(rel)
                out.parent.mkdir(parents=True, exist_ok=True)
                src = tf.extractfile(m)
                assert src is not None
                with src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
                written.append(str(rel))
    else:
        raise DownloadError(f"{archive}: unknown archive type {kind!r}")
    return sorted(written)


def _fetch_verified(f: RemoteFile, url: str, local: Path, *, plain: bool, timeout: float) -> tuple[int, str]:
    """(bytes, sha256) of `url` fetched into `local` (complete: :func:`fetch` checks the announced size); a
    pinned sha256 that does not match is fetched once more (a transfer cut short without a Content-Length shows
    only there), then raises DownloadError and removes `local`."""
    for attempt in range(2):
        nbytes = fetch(url, local, timeout=timeout) if plain else fetch_any(url, local, timeout=timeout)
        digest = sha256_file(local)
        if not f.sha256 or digest.lower() == f.sha256.lower():
            return nbytes, digest
        if attempt == 0:
            log.warning("%s: sha256 %s, expected %s (%d bytes); fetching it again", url, digest, f.sha256, nbytes)
    local.unlink(missing_ok=True)
    raise DownloadError(f"{url}: sha256 mismatch: expected {f.sha256}, got {digest} ({nbytes} bytes)")


def download_spec(spec: DownloadSpec, download_dir: str | Path, base_url: str | None = None,
                  timeout: float = 60.0) -> Path:
    """Fetch, verify and unpack `spec` into `<download_dir>/<task>/`; return the manifest path (written last)."""
    download_dir = Path(download_dir)
    download_dir.mkdir(parents=True, exist_ok=True)
    final = download_dir / spec.task
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{spec.task}-", dir=download_dir))
    try:
        work = tmp / spec.task
        raw = tmp / "raw"
        work.mkdir()
        raw.mkdir()
        entries = []
        for f in spec.files:
            url = resolve_url(f, base_url)
            log.info("fetching %s", url)
            local = raw / f.name
            # an overridden URL (base_url: a mirror) is always a plain fetch
            nbytes, digest = _fetch_verified(f, url, local, plain=bool(base_url), timeout=timeout)
            if f.archive:
                members = unpack(local, f.archive, work, f.strip)
                if not members:
                    raise DownloadError(f"{url}: no files under {f.strip or '/'} in the archive")
            else:
                os.replace(local, work / f.name)
                members = [f.name]
            entries.append({"url": url, "name": f.name, "bytes": nbytes, "sha256": digest,
                            "sha256_expected": f.sha256, "verified": bool(f.sha256), "archive": f.archive,
                            "files": members})
        manifest = {
            "task": spec.task, "note": spec.note, "downloads": entries,
            "checksum_policy": "verified against the spec where it pins sha256; otherwise recorded here on first download",
            "provenance": provenance({"task": spec.task, "base_url": base_url}),
        }
        write_json_atomic(work / "manifest.json", manifest)
        if final.exists():  # e.g. the empty folder Snakemake makes for the output, or a stale download
            trash = Path(tempfile.mkdtemp(prefix=f".old-{spec.task}-", dir=download_dir))
            os.replace(final, trash / spec.task)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(work, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final / "manifest.json"


def download_task(task: str, download_dir: str | Path, base_url: str | None = None, timeout: float = 60.0) -> Path:
    """Download the official data of `task` (see the table in the module docstring)."""
    return download_spec(get_spec(task), download_dir, base_url=base_url, timeout=timeout)

