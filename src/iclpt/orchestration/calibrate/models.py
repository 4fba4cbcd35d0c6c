"""Where calibration gets each configured model: the run's own folder when the pipeline built or fetched it
already, else a fresh tiny build (``build:``), the packaged model's folder in the model cache (``gguf:``, fetched
on first use; the fetch's seconds are recorded beside it, so a later calibration reuses them), or the hub id /
folder of ``path:``. A model that cannot be had (a hub id without access) has no path; its jobs keep the config's
guesses."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class ModelSource:
    """Where a configured model is loaded from for calibration (``path`` None: it cannot be), and the seconds
    its build or fetch took (None: not timed here)."""

    name: str
    path: str | None
    how: str
    fetch_seconds: float | None = None
    error: str | None = None


def _cache_folder(spec: Any, cache_dir: str | Path | None) -> tuple[Path, Path]:
    from iclpt.models.packaged import converted_folder_path, default_cache_dir

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = converted_folder_path(spec, cache)  # keyed by the GGUF: one folder whatever the config calls it
    return folder, folder.with_name(folder.name + ".timing.json")


def recorded_fetch_seconds(spec: Any, cache_dir: str | Path | None = None) -> float | None:
    """The measured seconds of the fetch that made the cache folder of ``spec`` (None if never fetched here)."""
    timing = _cache_folder(spec, cache_dir)[1]
    return json.loads(timing.read_text()).get("fetch_seconds") if timing.is_file() else None


def packaged_folder(spec: Any, cache_dir: str | Path | None = None) -> tuple[Path, float | None]:
    """The converted folder of a PyPI-packaged GGUF (``iclpt.models.packaged``) in the model cache, fetched on
    first use (the same folder the pipeline's fetch_model links from); returns (folder, the fetch's seconds:
    measured now or recorded when it was fetched, else None)."""
    from iclpt.models.packaged import cached_folder_ok, converted_folder

    folder, timing = _cache_folder(spec, cache_dir)
    if cached_folder_ok(folder, spec):
        return folder, recorded_fetch_seconds(spec, cache_dir)
    t0 = time.perf_counter()
    converted_folder(spec, folder.parents[1], spec.name)
    seconds = time.perf_counter() - t0
    timing.write_text(json.dumps({"fetch_seconds": seconds}) + "\n")
    return folder, seconds


def model_source(config: Mapping[str, Any], name: str, workdir: Path, texts: Callable[[], list[str]],
                 tmp: Path, cache_dir: str | Path | None = None) -> ModelSource:
    """The folder to calibrate ``name`` on (module docstring); a tiny build is timed."""
    t0 = time.perf_counter()
    src = _source(config, name, workdir, texts, tmp, cache_dir)
    if src.how.startswith("built"):
        src.fetch_seconds = time.perf_counter() - t0
    return src


def _source(config: Mapping[str, Any], name: str, workdir: Path, texts: Callable[[], list[str]], tmp: Path,
            cache_dir: str | Path | None) -> ModelSource:
    m = config["models"][name]
    run_dir = workdir / "results" / str(config["run"]) / "models" / name
    try:
        fetched = "path" not in m or not Path(str(m["path"])).expanduser().is_dir()  # built, gguf or a hub id
        if fetched and (run_dir / "config.json").is_file() and any(run_dir.glob("*.safetensors")):
            secs = None
            if "gguf" in m:
                from iclpt.models.packaged import PackagedGGUF

                secs = recorded_fetch_seconds(PackagedGGUF.from_config(m["gguf"], name), cache_dir)
            return ModelSource(name, str(run_dir), "the run's model folder", fetch_seconds=secs)
        if "build" in m:
            from iclpt.models.tiny import build_tiny_model

            b = dict(m["build"])
            arch = b.pop("architecture")
            out = build_tiny_model(texts(), tmp / name, arch, **b)
            return ModelSource(name, str(out), "built (tiny random)")
        if "gguf" in m:
            from iclpt.models.packaged import PackagedGGUF

            folder, secs = packaged_folder(PackagedGGUF.from_config(m["gguf"], name), cache_dir)
            return ModelSource(name, str(folder), "packaged GGUF (model cache)", fetch_seconds=secs)
        from transformers import AutoConfig

        AutoConfig.from_pretrained(m["path"])
        return ModelSource(name, str(m["path"]), "configured path")
    except Exception as e:  # noqa: BLE001 - no access / no network: the guesses stay
        return ModelSource(name, None, "unavailable", error=" ".join(f"{type(e).__name__}: {e}".split())[:300])
