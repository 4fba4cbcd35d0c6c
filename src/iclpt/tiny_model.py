"""Offline tiny models: a byte-level BPE tokenizer trained on the run's text and a small random GPT-2/OPT/BLOOM.

The folder written by :func:`build_tiny_model` is an ordinary ``save_pretrained`` folder: ``AutoTokenizer`` and
``AutoModelForCausalLM`` load it exactly like a hub model, so the rest of the pipeline never special-cases it.

Determinism: the tokenizer is trained on the texts in the given order (the BPE trainer breaks frequency ties
deterministically) and the weights come from ``torch.manual_seed(seed)``; the same texts and build block give
byte-identical files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<pad>"
ARCHITECTURES = ("gpt2", "opt", "bloom")

BUILD_DEFAULTS: dict[str, Any] = {
    "hidden_size": 64,
    "num_layers": 2,
    "num_heads": 2,
    "vocab_size": 1000,
    "max_positions": 1024,
    "seed": 0,
}


def train_tokenizer(texts: Iterable[str], vocab_size: int, max_length: int = 1024):
    """Byte-level BPE (GPT-2 style) trained on ``texts``; ids 0/1 are the EOS(=BOS=UNK) and PAD tokens.

    Lower ids are more frequent: the 256 byte symbols come first, then merges in the order learned (by
    frequency), which is what the soft prompt's ``init_vocab_size`` sampling relies on.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=int(vocab_size),
        min_frequency=2,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=int(max_length),
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    return fast


def make_config(architecture: str, vocab_size: int, hidden_size: int, num_layers: int, num_heads: int,
                max_positions: int, eos_id: int = 0, pad_id: int = 1):
    """A transformers config for a tiny random model of the given family (dropout off: the base is frozen)."""
    from transformers import BloomConfig, GPT2Config, OPTConfig

    if hidden_size % num_heads:
        raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
    common = dict(vocab_size=vocab_size, bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=pad_id)
    if architecture == "gpt2":
        return GPT2Config(n_embd=hidden_size, n_layer=num_layers, n_head=num_heads, n_positions=max_positions,
                          resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common)
    if architecture == "opt":
        return OPTConfig(hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=num_heads,
                         ffn_dim=4 * hidden_size, max_position_embeddings=max_positions,
                         word_embed_proj_dim=hidden_size, dropout=0.0, attention_dropout=0.0,
                         activation_dropout=0.0, layerdrop=0.0, **common)
    if architecture == "bloom":
        return BloomConfig(hidden_size=hidden_size, n_layer=num_layers, n_head=num_heads,
                           hidden_dropout=0.0, attention_dropout=0.0, **common)
    raise ValueError(f"unknown architecture {architecture!r}; expected one of {', '.join(ARCHITECTURES)}")


def build_tiny_model(texts: Sequence[str], out_dir: str | os.PathLike[str], architecture: str,
                     hidden_size: int = 64, num_layers: int = 2, num_heads: int = 2, vocab_size: int = 1000,
                     max_positions: int = 1024, seed: int = 0, init_std: float | None = None) -> Path:
    """Train the tokenizer on ``texts``, build a seeded random model, ``save_pretrained`` both into ``out_dir``.

    ``init_std`` overrides the weight-init standard deviation (transformers' default 0.02 makes near-uniform
    logits; tests use a larger value to get a model a soft prompt can steer quickly).

    The folder is written next to ``out_dir`` and moved into place at the end, so a crash never leaves a
    half-written model behind.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if not texts:
        raise ValueError("build_tiny_model: no training text for the tokenizer")
    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(texts, vocab_size, max_length=max_positions)
    eos_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    pad_id = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    # the real vocabulary may be smaller than asked when the text is small: size the embeddings to it
    config = make_config(architecture, len(tokenizer), hidden_size, num_layers, num_heads, max_positions,
                         eos_id=eos_id, pad_id=pad_id)
    if init_std is not None:
        config.initializer_range = float(init_std)
    torch.manual_seed(int(seed))
    model = AutoModelForCausalLM.from_config(config)
    model.eval()
    model.generation_config.pad_token_id = pad_id
    model.generation_config.eos_token_id = eos_id
    model.generation_config.bos_token_id = eos_id

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "build.json").write_text(json.dumps({
            "architecture": architecture, "hidden_size": hidden_size, "num_layers": num_layers,
            "num_heads": num_heads, "vocab_size_requested": vocab_size, "vocab_size": len(tokenizer),
            "max_positions": max_positions, "seed": seed, "n_texts": len(texts)}, indent=2, sort_keys=True) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def texts_from_records(records: Iterable[dict[str, Any]]) -> list[str]:
    """Tokenizer training text of prepared records: each input and target, one per line."""
    out: list[str] = []
    for r in records:
        out.append(str(r["input"]))
        out.append(str(r["target"]))
    return out
