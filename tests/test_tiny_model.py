"""Tiny offline models: deterministic, and loadable exactly like hub models."""

from __future__ import annotations

import hashlib

import pytest
from tiny_engine import ARCHS, corpus, tiny_model_dir


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_build_is_deterministic_and_loads_like_a_hub_model(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from iclpt.models.tiny import build_tiny_model

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


MODEL_TYPES = {"gpt2": "gpt2", "opt": "opt", "bloom": "bloom", "llama": "llama", "gemma3": "gemma3_text"}


@pytest.mark.parametrize("arch", ARCHS)
def test_architectures(arch):
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(tiny_model_dir(arch))
    assert cfg.model_type == MODEL_TYPES[arch]
    assert cfg.hidden_size == 32


def test_llama_and_gemma3_builds_mirror_the_real_models():
    """SmolLM2-135M-Instruct / Gemma 3 270M details the engine depends on (ids as in the real tokenizers)."""
    import math

    import torch

    from iclpt.models.loading import load_model

    llama, ltok = load_model(tiny_model_dir("llama"))
    assert type(llama).__name__ == "LlamaForCausalLM"
    assert llama.get_output_embeddings().weight is llama.get_input_embeddings().weight
    assert llama.config.num_key_value_heads < llama.config.num_attention_heads  # grouped-query attention
    assert (ltok.convert_ids_to_tokens([0, 1, 2]) == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    assert (ltok.bos_token_id, ltok.eos_token_id, ltok.pad_token_id) == (1, 2, 2)
    assert ltok("a cat")["input_ids"] == ltok("a cat", add_special_tokens=False)["input_ids"]  # no BOS added
    assert (llama.config.bos_token_id, llama.config.eos_token_id, llama.config.pad_token_id) == (1, 2, 2)

    gemma, gtok = load_model(tiny_model_dir("gemma3"))
    assert type(gemma).__name__ == "Gemma3ForCausalLM"
    assert gemma.get_output_embeddings().weight is gemma.get_input_embeddings().weight
    emb = gemma.get_input_embeddings()
    assert type(emb).__name__ == "Gemma3TextScaledWordEmbedding"
    ids = torch.tensor([5, 6, 7])
    with torch.no_grad():
        torch.testing.assert_close(emb(ids), emb.weight[ids] * math.sqrt(32))
    assert gemma.config.sliding_window == 4
    assert gemma.config.layer_types == ["sliding_attention", "full_attention"]
    assert (gtok.pad_token_id, gtok.eos_token_id, gtok.bos_token_id) == (0, 1, 2)
    assert gtok.convert_ids_to_tokens([3, 4, 5]) == ["<unk>", "<start_of_turn>", "<end_of_turn>"]
    assert gtok("a cat")["input_ids"] == [2] + gtok("a cat", add_special_tokens=False)["input_ids"]
    assert (gemma.config.pad_token_id, gemma.config.eos_token_id, gemma.config.bos_token_id) == (0, 1, 2)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_new_architectures_build_deterministically(tmp_path, arch):
    from iclpt.models.tiny import build_tiny_model

    kw = dict(hidden_size=16, num_layers=2, num_heads=2, vocab_size=350, max_positions=64, seed=3)
    a = build_tiny_model(corpus(80), tmp_path / "a", arch, **kw)
    b = build_tiny_model(corpus(80), tmp_path / "b", arch, **kw)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert _digest(a / name) == _digest(b / name), name


def test_unknown_architecture(tmp_path):
    from iclpt.models.tiny import build_tiny_model

    with pytest.raises(ValueError, match="unknown architecture"):
        build_tiny_model(corpus(20), tmp_path / "x", "mamba")
