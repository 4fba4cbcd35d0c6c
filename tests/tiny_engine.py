"""Helpers of the soft-prompt engine tests: tiny random GPT-2 / OPT / BLOOM / Llama / Gemma 3 built once per test
session (the Llama and Gemma 3 builds mirror SmolLM2 and Gemma 3 270M: see :mod:`iclpt.models.tiny`)."""

from __future__ import annotations

import atexit
import functools
import random
import shutil
import tempfile
from pathlib import Path

ARCHS = ("gpt2", "opt", "bloom", "llama", "gemma3")

_WORDS = ("red blue green small big old new cat dog bird fish tree house river city table chair "
          "runs sleeps eats sees likes has the a of in on with and is was name age country").split()


def corpus(n: int = 300, seed: int = 0) -> list[str]:
    """Deterministic text that covers the templates' labels, digits, punctuation and newlines."""
    rng = random.Random(seed)
    texts = ["Triples: Text: Table: Sentence: Logic: Question: SQL: Utterance: Parse: Input: Output:",
             "SELECT count(*) FROM singer WHERE age > 30", "[IN:GET_WEATHER [SL:LOCATION Paris ] ]",
             "0 1 2 3 4 5 6 7 8 9 | ; , . ( ) = > < ' \" \n\n"]
    for _ in range(n):
        texts.append(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12))) + ".")
    return texts


@functools.cache
def _root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="iclpt-tiny-"))
    atexit.register(shutil.rmtree, root, True)
    return root


@functools.cache
def tiny_model_dir(arch: str, hidden: int = 32, init_std: float | None = None) -> str:
    """Folder of a tiny random model (built once per session, 2 layers, vocab <= 400)."""
    from iclpt.models.tiny import build_tiny_model

    out = _root() / f"{arch}-{hidden}-{init_std}"
    build_tiny_model(corpus(), out, arch, hidden_size=hidden, num_layers=2, num_heads=2, vocab_size=400,
                     max_positions=256, seed=0, init_std=init_std)
    return str(out)


def load(arch: str, hidden: int = 32, init_std: float | None = None):
    from iclpt.models.loading import load_model

    return load_model(tiny_model_dir(arch, hidden, init_std))


def left_pad(rows, pad_id):
    """(ids, mask) of token rows left-padded to the longest, as the engine batches them (CPU tensors)."""
    import torch

    T = max(map(len, rows))
    ids = torch.full((len(rows), T), int(pad_id))
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, T - len(r):] = torch.tensor(r)
        mask[i, T - len(r):] = 1
    return ids, mask


def kill_at_checkpoint(proc, ckpt_dir: Path, min_step: int, timeout: float) -> None:
    """SIGKILL the training child `proc` once a checkpoint under `ckpt_dir` holds step >= `min_step` (or at
    `timeout` seconds); waits for it. The caller asserts it was killed (returncode -SIGKILL), not finished."""
    import os
    import signal
    import time

    import torch

    deadline = time.time() + timeout
    try:
        while time.time() < deadline and proc.poll() is None:
            states = list(Path(ckpt_dir).glob("*/state.pt"))
            if states and torch.load(states[0], weights_only=False)["step"] >= min_step:
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
