"""File helpers shared by every stage: JSONL with line-numbered errors, atomic writes, provenance."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import platform
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import IO, Any

PathLike = str | os.PathLike[str]

_PROVENANCE_PACKAGES = (
    "iclpt",
    "torch",
    "transformers",
    "tokenizers",
    "datasets",
    "sentence-transformers",
    "bm25s",
    "sacrebleu",
    "numpy",
    "pandas",
    "snakemake",
)


log = logging.getLogger(__name__)

UTF8_BOM = b"\xef\xbb\xbf"


class DataError(ValueError):
    """Bad input data. The message names the file (and line) and what was expected."""


def decode_utf8(data: bytes, path: PathLike, first_line: int = 1) -> str:
    """`data` decoded as UTF-8; invalid bytes raise DataError naming the file, line and column.

    A UTF-8 byte-order mark at the very start of a file (``first_line`` 1) is removed with a logged warning
    naming the file (docs/errors.md, class 3); anywhere else U+FEFF is an ordinary character."""
    if first_line == 1 and data.startswith(UTF8_BOM):
        log.warning("%s: a UTF-8 byte-order mark at the start of the file was removed (read as UTF-8 "
                    "without it)", path)
        data = data[len(UTF8_BOM):]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = first_line + data.count(b"\n", 0, e.start)
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte 0x{data[e.start]:02x} at column {col}); "
                        "the file must be UTF-8 encoded") from None


def read_text(path: PathLike) -> str:
    """A UTF-8 text file (errors name the file, and the line of an invalid byte)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return decode_utf8(path.read_bytes(), path)


def read_lines(path: PathLike) -> list[str]:
    """The lines of a UTF-8 text file without their line ends (split on \\n only, as files are written)."""
    text = read_text(path)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def file_sha256(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_jsonl(path: PathLike, required: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Read a JSONL file; malformed lines, invalid UTF-8 and missing keys raise DataError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    need = tuple(required)
    rows: list[dict[str, Any]] = []
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = decode_utf8(raw, path, lineno)
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            missing = [k for k in need if k not in row]
            if missing:
                raise DataError(f"{path}:{lineno}: missing field(s) {', '.join(missing)}")
            rows.append(row)
    return rows


def read_json(path: PathLike) -> Any:
    """Read a UTF-8 JSON document; errors name the file and position."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None


#: what an errno means for a write, in the words of a message (the errno name follows in brackets)
_WRITE_CAUSES = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EIO: "input/output error",
    errno.EFBIG: "file too large",
}


def os_error_cause(exc: OSError) -> str:
    """``'no space left on device (ENOSPC)'``, ``'permission denied (EACCES)'``, ...: an OSError's cause."""
    name = errno.errorcode.get(exc.errno or -1)
    words = _WRITE_CAUSES.get(exc.errno or -1) or (exc.strerror or str(exc)).lower()
    return f"{words} ({name})" if name else words


class WriteError(OSError):
    """Writing an output failed: the message names the file and the cause (no space left, permission, read-only
    file system, ...); nothing was left at the path, and the temp file of the write was removed. Keeps the
    errno of the OSError behind it."""

    def __init__(self, path: PathLike, exc: OSError) -> None:
        super().__init__(exc.errno, exc.strerror or str(exc))
        self.filename = str(path)
        self.message = f"cannot write {path}: {os_error_cause(exc)}; nothing was written there"

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:  # picklable (a worker process passing it on)
        return _rebuild_write_error, (self.filename, self.errno, self.strerror)


def _rebuild_write_error(path: str, errno_: int | None, strerror: str | None) -> WriteError:
    return WriteError(path, OSError(errno_, strerror))


def _remove_quietly(path: PathLike) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:  # pragma: no cover - a read-only folder after the temp file was made
        log.warning("could not remove the temp file %s: %s", path, os_error_cause(exc))


def current_umask() -> int:
    """The process's umask: read from /proc/self/status where Linux shows it (no race), else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def chmod_default(path: PathLike, directory: bool = False) -> None:
    """Give a mkstemp / mkdtemp result (0600 / 0700) the mode a plain open / mkdir would have (0666 / 0777 less
    the umask), so outputs follow the user's umask (readable by a team on a shared file system)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


@contextmanager
def atomic_open(path: PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temp file beside `path`; it replaces `path` only if the block finishes without error. The file gets
    the mode a plain open would give it (the umask applied), not mkstemp's 0600.

    A failed write (the block raises, or the file system does: no space left, permission, read-only) removes the
    temp file and leaves `path` as it was; a file system error is raised as :class:`WriteError` naming `path` and
    the cause. An OSError the block raises about another file (its ``filename`` set) passes through unchanged."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        chmod_default(tmp)
    except OSError as exc:
        raise WriteError(path, exc) from exc
    try:
        kwargs = {} if "b" in mode else {"encoding": encoding}
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        _remove_quietly(tmp)
        if (isinstance(exc, OSError) and not isinstance(exc, WriteError)
                and exc.filename in (None, tmp, str(path))):
            raise WriteError(path, exc) from exc
        raise


def write_bytes_atomic(path: PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (:func:`atomic_open`: a failure names the file and the cause)."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def write_jsonl_atomic(path: PathLike, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows as JSONL (sorted keys for byte-stable output) atomically; return the row count."""
    n = 0
    with atomic_open(path) as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            n += 1
    return n


def write_json_atomic(path: PathLike, obj: Any) -> None:
    with atomic_open(path) as fh:
        json.dump(obj, fh, ensure_ascii=False, indent=2, sort_keys=True)
        fh.write("\n")


def write_text_atomic(path: PathLike, text: str) -> None:
    with atomic_open(path) as fh:
        fh.write(text)


@contextmanager
def logged(log_path: PathLike | None, name: str) -> Iterator[logging.Logger]:
    """Log INFO and above to a rule's log file (truncated) and to stderr; inside the block, an exception is
    logged with its traceback and re-raised (the job fails, its log says why)."""
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w", encoding="utf-8"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=handlers, force=True)
    log = logging.getLogger(name)
    try:
        yield log
    except BaseException:
        log.exception("%s failed", name)
        raise


def package_versions(packages: Iterable[str] = _PROVENANCE_PACKAGES) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def provenance(params: dict[str, Any] | None = None) -> dict[str, Any]:
    """What made an output: the resolved parameters and the versions of the software."""
    return {
        "params": _jsonable(params or {}),
        "versions": package_versions(),
        "platform": platform.platform(),
        "argv0": Path(sys.argv[0]).name if sys.argv else "",
    }


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, "items"):  # snakemake Namedlist / config views
        return {str(k): _jsonable(v) for k, v in obj.items()}
    return str(obj)
