"""Outputs follow the user's umask (a team reads them on a shared file system), not mkstemp's 0600."""

from __future__ import annotations

import os
import stat

import pytest

from iclpt.io import atomic_open, chmod_default, current_umask, write_json_atomic


@pytest.fixture
def umask():
    def set_mask(mask: int) -> None:
        os.umask(mask)
    old = os.umask(0o022)
    yield set_mask
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_atomic_writes_follow_the_umask(tmp_path, umask, mask):
    umask(mask)
    assert current_umask() == mask
    write_json_atomic(tmp_path / "a.json", {"x": 1})
    with atomic_open(tmp_path / "b.bin", "wb") as f:
        f.write(b"x")
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what open() gives: the reference
    assert _mode(tmp_path / "a.json") == _mode(tmp_path / "b.bin") == _mode(plain) == 0o666 & ~mask


def test_chmod_default_for_folders(tmp_path, umask):
    umask(0o027)
    d = tmp_path / "made"
    d.mkdir(mode=0o700)
    chmod_default(d, directory=True)
    assert _mode(d) == 0o750


def test_a_tiny_model_folder_follows_the_umask(tmp_path, umask):
    from iclpt.models.tiny import build_tiny_model

    umask(0o022)
    out = tmp_path / "m"
    build_tiny_model(["a b c d e f g h"] * 20, out, architecture="gpt2", vocab_size=300)
    assert _mode(out) == 0o755
    assert all(_mode(p) == 0o644 for p in out.iterdir())
