"""A Hugging Face hub on 127.0.0.1 for the tests: the three endpoints ``huggingface_hub`` uses to fetch a snapshot
(``/api/models/<repo>/revision/<rev>``, ``/api/models/<repo>/tree/<rev>``, ``/<repo>/resolve/<rev>/<file>``),
serving folders on disk as repositories at a fixed commit; point ``HF_ENDPOINT`` at :attr:`FakeHub.url`.
Every request is recorded (:attr:`FakeHub.requests`)."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, tuple[str, Path]] = {}  # repo id -> (commit, folder)
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                hub._serve(self, body=False)

            def do_GET(self):
                hub._serve(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, repo_id: str, folder: Path, commit: str | None = None) -> str:
        """Serve ``folder`` as ``repo_id``; returns its commit (40 hex digits)."""
        commit = commit or hashlib.sha1(repo_id.encode()).hexdigest()
        self.repos[repo_id] = (commit, Path(folder))
        return commit

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ---- routing ----------------------------------------------------------------------------------------------
    def _files(self, folder: Path) -> list[str]:
        return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())

    def _repo(self, path: str) -> tuple[str, str, str] | None:
        """(repo id, kind, rest) of /api/models/<repo>/<kind>/<rest> or /<repo>/resolve/<rest>."""
        for repo in sorted(self.repos, key=len, reverse=True):
            for prefix, kind in ((f"/api/models/{repo}/revision/", "revision"), (f"/api/models/{repo}/tree/", "tree"),
                                 (f"/{repo}/resolve/", "resolve")):
                if path.startswith(prefix):
                    return repo, kind, path[len(prefix):]
        return None

    def _serve(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlsplit(h.path).path)
        self.requests.append((h.command, path))
        found = self._repo(path)
        if found is None:
            return self._send(h, 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}, body)
        repo, kind, rest = found
        commit, folder = self.repos[repo]
        rev, _, sub = rest.partition("/")
        if rev not in (commit, "main"):
            return self._send(h, 404, {"error": f"Invalid rev id: {rev}"}, {"X-Error-Code": "RevisionNotFound"}, body)
        files = self._files(folder)
        if kind == "revision":
            return self._send(h, 200, {"id": repo, "modelId": repo, "sha": commit, "private": False,
                                       "siblings": [{"rfilename": f} for f in files]}, {}, body)
        if kind == "tree":
            entries = [{"type": "file", "oid": git_blob_sha1((folder / f).read_bytes()),
                        "size": (folder / f).stat().st_size, "path": f}
                       for f in files if not sub or f.startswith(sub.rstrip("/") + "/")]
            return self._send(h, 200, entries, {}, body)
        if sub not in files:
            return self._send(h, 404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound",
                                                                     "X-Repo-Commit": commit}, body)
        data = (folder / sub).read_bytes()
        headers = {"X-Repo-Commit": commit, "ETag": f'"{git_blob_sha1(data)}"',
                   "Content-Type": "application/octet-stream"}
        self._send_bytes(h, 200, data, headers, body)

    def _send(self, h, code: int, obj, headers: dict, body: bool) -> None:
        self._send_bytes(h, code, json.dumps(obj).encode(), {"Content-Type": "application/json", **headers}, body)

    @staticmethod
    def _send_bytes(h, code: int, data: bytes, headers: dict, body: bool) -> None:
        h.send_response(code)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if body:
            h.wfile.write(data)
