"""Job-time checks of artefacts a job reads: model folders, config.json, safetensors headers, hub cache lookups.

A job calls these where it reads a file, so that a missing or truncated one is named (the file and what was
expected) instead of failing deep inside a loader: :func:`check_model_dir` (config.json, weights and tokenizer
of a model folder; safetensors headers against the file size), :func:`check_safetensors`, :func:`model_files`
(what a local model folder's jobs depend on), :func:`looks_local` (a path, not a hub id), :func:`context_of` and
:func:`hub_cached_file` (a model's context length without loading it).

Standard library, :mod:`iclpt.io` and file formats only: no registry (methods, runs, tasks), so that the code
digest of the jobs importing this (:mod:`iclpt.orchestration.codeversion`) does not change with them.
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path

from iclpt.io import DataError

#: a well-formed hub id: 'name' or 'org/name' (letters, digits, '-', '_', '.')
HUB_ID_RE = re.compile(r"^[A-Za-z0-9](?:[\w.-]*[A-Za-z0-9_])?(?:/[A-Za-z0-9_](?:[\w.-]*[A-Za-z0-9_])?)?$")
_CONTEXT_KEYS = ("n_positions", "max_position_embeddings", "seq_length")
_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model")


def looks_local(path: str) -> bool:
    """Absolute, ./ ../ ~ paths, Windows separators, more than one '/', or a first component that is a folder here."""
    first = path.split("/")[0]
    return (os.path.isabs(path) or path.startswith((".", "~")) or "\\" in path or path.count("/") > 1
            or ("/" in path and os.path.isdir(first)))


# ---- model context (config.json, hub cache) --------------------------------------------------------------
def context_of(config_json: Path) -> int | None:
    """n_positions / max_position_embeddings / seq_length of a config.json (or of its text_config)."""
    try:
        cfg = json.loads(config_json.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    for node in (cfg, cfg.get("text_config") or {}):
        for key in _CONTEXT_KEYS:
            v = node.get(key)
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                return v
    return None


def hub_cached_file(repo_id: str, filename: str) -> Path | None:
    """`filename` of the cached main revision of a hub model (HF_HUB_CACHE / HF_HOME layout), if cached."""
    if not HUB_ID_RE.match(repo_id):
        return None
    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface"), "hub")
    repo = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    try:
        rev = (repo / "refs" / "main").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    path = repo / "snapshots" / rev / filename
    return path if path.is_file() else None


# ---- model folders and safetensors files ------------------------------------------------------------------
def check_model_dir(path: str | os.PathLike[str], name: str = "") -> Path:
    """Raise DataError naming the model and the missing or truncated file unless `path` holds a model:
    config.json (valid JSON), weights (model.safetensors / pytorch_model.bin, or an index and every shard it
    lists; safetensors files checked against their header) and a tokenizer."""
    path = Path(path)
    who = f"model {name!r}: " if name else ""
    if not path.is_dir():
        raise DataError(f"{who}model folder {path} does not exist")
    _check_json(path / "config.json", who)
    for weights in _weight_files(path, who):
        if weights.suffix == ".safetensors":
            check_safetensors(weights, who)
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        raise DataError(f"{who}folder {path} has no tokenizer (expected one of {', '.join(_TOKENIZER_FILES)})")
    return path


def model_files(path: str) -> list[str]:
    """config.json and the weight files of a local model folder (what its jobs depend on); [] for a hub id."""
    folder = Path(os.path.expanduser(path))
    if not folder.is_dir():
        return []
    return [str(folder / "config.json")] + [str(w) for w in _weight_files(folder, "")]


def _check_json(path: Path, who: str) -> None:
    if not path.is_file():
        raise DataError(f"{who}folder {path.parent} is missing {path.name}")
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{who}{path} is not valid JSON (truncated or corrupt?): {e}") from None


def _weight_files(path: Path, who: str) -> list[Path]:
    for w in _WEIGHTS:
        if (path / w).is_file():
            return [path / w]
    for idx in _WEIGHT_INDEXES:
        if (path / idx).is_file():
            _check_json(path / idx, who)
            try:
                shards = sorted(set(json.loads((path / idx).read_text(encoding="utf-8"))["weight_map"].values()))
            except (KeyError, AttributeError, TypeError):
                raise DataError(f"{who}{path / idx} has no weight_map") from None
            missing = [s for s in shards if not (path / s).is_file()]
            if missing:
                raise DataError(f"{who}folder {path} is missing {missing[0]} (listed in {idx})")
            return [path / s for s in shards]
    raise DataError(f"{who}folder {path} has no weights (expected {' or '.join(_WEIGHTS)}, or a sharded index)")


def check_safetensors(path: str | os.PathLike[str], who: str = "") -> None:
    """Raise DataError unless the file's size is what its safetensors header says (catches truncated copies)."""
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise DataError(f"{who}{path} is truncated ({size} bytes; not a safetensors file)")
        n = struct.unpack("<Q", raw)[0]
        if n > size - 8:
            raise DataError(f"{who}{path} is truncated: its header alone needs {n + 8} bytes, the file has {size}")
        try:
            header = json.loads(fh.read(n).decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise DataError(f"{who}{path}: unreadable safetensors header (corrupt file?)") from None
    end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    if size != 8 + n + end:
        state = "truncated" if size < 8 + n + end else "longer than its header says"
        raise DataError(f"{who}{path} is {state}: {size} bytes, expected {8 + n + end}")
