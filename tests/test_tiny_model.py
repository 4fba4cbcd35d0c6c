"""Tiny offline models: deterministic, and loadable exactly like hub models."""

from __future__ import annotations

import hashlib

import pytest
from tiny_engine import corpus, tiny_model_dir


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_build_is_deterministic_and_loads_like_a_hub_model(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from iclpt.tiny_model import build_tiny_model

    a = build_tiny_model(corpus(80), tmp_path / "a", "gpt2", hidden_size=16, num_layers=1, num_heads=2,
                         vocab_size=350, max_positions=64, seed=3)
    b = build_tiny_model(corpus(80), tmp_path / "b", "gpt2", hidden_size=16, num_layers=1, num_heads=2,
                         vocab_size=350, max_positions=64, seed=3)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert _digest(a / name) == _digest(b / name), name
    c = build_tiny_model(corpus(80), tmp_path / "c", "gpt2", hidden_size=16, num_layers=1, num_heads=2,
                         vocab_size=350, max_positions=64, seed=4)
    assert _digest(a / "model.safetensors") != _digest(c / "model.safetensors")

    tok = AutoTokenizer.from_pretrained(a)
    model = AutoModelForCausalLM.from_pretrained(a)
    assert tok.eos_token_id == model.config.eos_token_id == 0
    assert tok.pad_token_id == model.config.pad_token_id == 1
    text = "Triples: cat | eats | fish\nText: the cat eats.\n"
    assert tok.decode(tok(text)["input_ids"]) == text
    assert model.config.vocab_size == len(tok) <= 350


@pytest.mark.parametrize("arch", ["gpt2", "opt", "bloom"])
def test_architectures(arch):
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(tiny_model_dir(arch))
    assert cfg.model_type == arch
    assert cfg.hidden_size == 32


def test_unknown_architecture(tmp_path):
    from iclpt.tiny_model import build_tiny_model

    with pytest.raises(ValueError, match="unknown architecture"):
        build_tiny_model(corpus(20), tmp_path / "x", "llama")
