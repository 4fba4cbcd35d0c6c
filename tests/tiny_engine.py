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
