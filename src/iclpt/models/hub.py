"""Hugging Face hub models fetched once, at a pinned revision, into a local ``save_pretrained`` folder.

A config model ``path: org/name`` (with ``revision:``, a commit hash or a branch) and a hub ``encoder_path`` are
never read from the hub by a training, decoding or embedding job. The ``fetch_hub_model`` / ``fetch_encoder`` rules
(local rules: they run where the internet is, the login node of a cluster) call :func:`fetch_hub_snapshot`:

1. ``HfApi().model_info(repo, revision)`` resolves the revision to its commit and lists the repository's files;
   :func:`select_files` keeps what ``from_pretrained`` / ``SentenceTransformer`` read (configs, tokenizer files,
   one weight format: safetensors where the repository has them, else ``pytorch_model*.bin``; no ONNX, TF, Flax,
   OpenVINO copies);
2. ``huggingface_hub.snapshot_download`` at that commit downloads them into the Hugging Face cache once per
   machine: it honours ``HF_HOME`` / ``HF_HUB_CACHE`` (where), ``HF_ENDPOINT`` (a mirror), ``HF_TOKEN`` or the
   stored token (gated models), and with ``HF_HUB_OFFLINE=1`` it reuses a cached snapshot without any request;
3. :func:`materialize_snapshot` hard-links the files (copies across file systems) into a temp folder beside
   ``results/<run>/models/<name>/`` (or ``encoders/<name>/``), writes ``provenance.json`` (repository, revision
   asked for, commit, endpoint, files and sizes, versions), checks the folder (a causal LM with
   :func:`iclpt.artifacts.check_model_dir`, an encoder by its ``modules.json``) and renames it into place.

Every job then reads that folder like any local model; the jobs never need the internet.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from iclpt.io import DataError, chmod_default, package_versions, write_json_atomic

log = logging.getLogger(__name__)

PROVENANCE_FILE = "provenance.json"
#: files of another framework or export: never what the pipeline loads
_SKIP = ("*.onnx", "*.onnx_data", "*.h5", "*.msgpack", "*.ot", "*.tflite", "*.mlmodel", "*.gguf", "*.pt", "*.pth",
         "*.ckpt", "*.npz", "*.md", "*.png", "*.jpg", ".gitattributes")
_SKIP_DIRS = {"onnx", "openvino", "coreml", "tf", "flax", "runs", "checkpoints"}
_TEXT = ("*.json", "*.txt", "*.model", "*.tiktoken", "tokenizer*", "*.py")
KINDS = ("causal-lm", "sentence-transformers")


class HubModelError(RuntimeError):
    """A hub model could not be fetched (unknown repository or revision, no access, offline without a cache,
    nothing loadable in the repository)."""


def select_files(files: Iterable[str]) -> list[str]:
    """The repository files a pipeline load reads: configs and tokenizer files, and one weight format (every
    ``*.safetensors`` where the repository has any, else ``pytorch_model*.bin`` and its index)."""
    keep: list[str] = []
    names = sorted(set(files))
    for f in names:
        p = PurePosixPath(f)
        if set(p.parts[:-1]) & _SKIP_DIRS or any(fnmatch.fnmatch(p.name, pat) for pat in _SKIP):
            continue
        if any(fnmatch.fnmatch(p.name, pat) for pat in _TEXT):
            keep.append(f)
    weights = [f for f in names if f.endswith(".safetensors") and not set(PurePosixPath(f).parts[:-1]) & _SKIP_DIRS]
    if not weights:
        weights = [f for f in names if re.fullmatch(r"(.*/)?pytorch_model(-\d+-of-\d+)?\.bin", f)]
    else:  # a .bin index beside safetensors would point at files not fetched
        keep = [f for f in keep if not f.endswith("pytorch_model.bin.index.json")]
    return sorted(set(keep) | set(weights))


def fetch_hub_snapshot(repo_id: str, revision: str = "main") -> tuple[Path, str, list[str]]:
    """(snapshot folder in the Hugging Face cache, commit, files kept) of ``repo_id`` at ``revision``."""
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    where = f"hub model {repo_id!r} at revision {revision!r} (endpoint {constants.ENDPOINT})"
    try:
        if constants.HF_HUB_OFFLINE:
            return cached_snapshot(repo_id, revision)
        info = HfApi().model_info(repo_id, revision=revision)
        files = select_files(s.rfilename for s in info.siblings or [])
        if not any(f.endswith((".safetensors", ".bin")) for f in files):
            raise HubModelError(f"{where}: the repository has no safetensors or pytorch_model*.bin weights "
                                f"(files: {', '.join(sorted(s.rfilename for s in info.siblings or []))})")
        snap = Path(snapshot_download(repo_id, revision=info.sha, allow_patterns=files))
        return snap, str(info.sha), files
    except LocalEntryNotFoundError as e:
        raise HubModelError(f"{where}: not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and "
                            f"HF_HUB_OFFLINE=1 forbids the download; fetch it once with network access: {e}") from e
    except HfHubHTTPError as e:
        raise HubModelError(f"{where} could not be fetched (unknown repository or revision, gated without a "
                            f"token in HF_TOKEN / `hf auth login`, or the hub is down): {e}") from e
    except (OSError, ValueError) as e:
        raise HubModelError(f"{where} could not be fetched: {e}") from e


def cached_snapshot(repo_id: str, revision: str) -> tuple[Path, str, list[str]]:
    """Offline (``HF_HUB_OFFLINE=1``): the snapshot an earlier fetch left in the Hugging Face cache (the revision's
    commit: itself, or what ``refs/<revision>`` recorded), and the files of it the pipeline reads."""
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError
    from huggingface_hub.file_download import repo_folder_name

    storage = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")
    ref = storage / "refs" / revision
    commit = revision if re.fullmatch(r"[0-9a-f]{40}", revision) else (
        ref.read_text(encoding="utf-8").strip() if ref.is_file() else "")
    snap = storage / "snapshots" / commit
    if not commit or not snap.is_dir():
        raise LocalEntryNotFoundError(f"no snapshot of {repo_id} at {revision} under {storage}")
    files = select_files(str(p.relative_to(snap)) for p in snap.rglob("*") if p.is_file())
    return snap, commit, files


def materialize_snapshot(snapshot: Path, files: Iterable[str], out_dir: str | os.PathLike[str], name: str,
                         provenance: Mapping[str, Any], kind: str = "causal-lm") -> Path:
    """``out_dir`` as a plain folder of ``files`` from ``snapshot`` (hard links to the cache's blobs, copies across
    file systems) with ``provenance.json``; checked as a ``kind`` model, renamed into place (no half folder)."""
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {', '.join(KINDS)}")
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        sizes = {}
        for rel in files:
            src = Path(os.path.realpath(snapshot / rel))
            if not src.is_file():
                raise HubModelError(f"model {name!r}: {rel} is missing from the downloaded snapshot {snapshot}")
            dst = tmp / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)
            sizes[rel] = dst.stat().st_size
        write_json_atomic(tmp / PROVENANCE_FILE, {**provenance, "model": name, "files": sizes,
                                                   "versions": package_versions(("huggingface_hub", "transformers"))})
        check_folder(tmp, name, kind)
        chmod_default(tmp, directory=True)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)



def check_folder(path: Path, name: str, kind: str) -> None:
    """HubModelError unless ``path`` loads as a ``kind`` model (every file it needs present and whole)."""
    from iclpt.artifacts import check_model_dir

    try:
        if kind == "causal-lm":
            check_model_dir(path, name)
        elif not (path / "modules.json").is_file():
            raise DataError(f"model {name!r}: {path} has no modules.json (not a sentence-transformers model)")
    except DataError as e:
        raise HubModelError(str(e)) from e


def fetch_hub_model(repo_id: str, revision: str, out_dir: str | os.PathLike[str], name: str,
                    kind: str = "causal-lm") -> dict[str, Any]:
    """Fetch ``repo_id`` at ``revision`` (:func:`fetch_hub_snapshot`) into ``out_dir``; returns its provenance."""
    from huggingface_hub import constants

    snap, commit, files = fetch_hub_snapshot(repo_id, revision)
    prov = {"repo_id": repo_id, "revision": revision, "commit": commit, "endpoint": constants.ENDPOINT,
            "kind": kind, "snapshot": str(snap)}
    materialize_snapshot(snap, files, out_dir, name, prov, kind)
    log.info("%s: %s@%s (commit %s, %d files) -> %s", name, repo_id, revision, commit, len(files), out_dir)
    return prov
