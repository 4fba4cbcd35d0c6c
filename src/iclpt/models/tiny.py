"""Offline tiny models: a byte-level BPE tokenizer trained on the run's text and a small random GPT-2 / OPT /
BLOOM / Llama / Gemma 3.

The Llama and Gemma 3 builds mirror the two real models the pipeline runs (SmolLM2-135M-Instruct and Gemma 3
270M) in every detail the soft-prompt engine depends on: tied input/output embeddings, grouped-query attention,
RoPE, Gemma's ``sqrt(hidden)`` embedding scale inside the embedding module, Gemma's mix of sliding-window
(window ``sliding_window``, 4 by default) and full-attention layers, and each tokenizer's special tokens and BOS
behaviour (:data:`TOKENIZER_STYLES`): SmolLM2's tokenizer adds no BOS (``<|im_start|>`` = 1 is its BOS,
``<|im_end|>`` = 2 its EOS and pad), Gemma's adds ``<bos>`` = 2 before every text (``<pad>`` 0, ``<eos>`` 1).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iclpt.io import chmod_default

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<pad>"
ARCHITECTURES = ("gpt2", "opt", "bloom", "llama", "gemma3")


@dataclass(frozen=True)
class TokenizerStyle:
    """Special tokens (ids 0.. in this order) and the roles of a tiny tokenizer; ``add_bos``: the tokenizer puts
    ``bos`` before every text (a post-processor, so ``tok(text)`` adds it and ``add_special_tokens=False`` not)."""

    specials: tuple[str, ...]
    bos: str
    eos: str
    pad: str
    unk: str
    add_bos: bool = False


TOKENIZER_STYLES: dict[str, TokenizerStyle] = {
    # GPT-2-like: one <|endoftext|> for BOS/EOS/UNK, a separate pad; nothing added to the text
    "gpt2": TokenizerStyle((EOS_TOKEN, PAD_TOKEN), bos=EOS_TOKEN, eos=EOS_TOKEN, pad=PAD_TOKEN, unk=EOS_TOKEN),
    # SmolLM2-135M-Instruct: <|endoftext|> 0, <|im_start|> 1 (BOS), <|im_end|> 2 (EOS = pad); no BOS added
    "smollm2": TokenizerStyle(("<|endoftext|>", "<|im_start|>", "<|im_end|>"), bos="<|im_start|>",
                              eos="<|im_end|>", pad="<|im_end|>", unk="<|endoftext|>"),
    # Gemma 3: <pad> 0, <eos> 1, <bos> 2 (added before every text), <unk> 3, then the turn markers
    "gemma": TokenizerStyle(("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"),
                            bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>", add_bos=True),
}
ARCH_TOKENIZER = {"gpt2": "gpt2", "opt": "gpt2", "bloom": "gpt2", "llama": "smollm2", "gemma3": "gemma"}
SLIDING_WINDOW = 4  # tiny Gemma 3: window of its sliding-attention layers (tests use inputs far longer)

BUILD_DEFAULTS: dict[str, Any] = {
    "hidden_size": 64,
    "num_layers": 2,
    "num_heads": 2,
    "vocab_size": 1000,
    "max_positions": 1024,
    "seed": 0,
}


def train_tokenizer(texts: Iterable[str], vocab_size: int, max_length: int = 1024, style: str = "gpt2"):
    """Byte-level BPE (GPT-2 style) trained on ``texts``; the special tokens of ``style`` (:data:`TOKENIZER_STYLES`)
    take the lowest ids (``gpt2``: 0/1 are the EOS(=BOS=UNK) and PAD tokens).

    Lower ids are more frequent: the special tokens and the 256 byte symbols come first, then merges in the order
    learned (by frequency), which is what the soft prompt's ``init_vocab_size`` sampling relies on.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if style not in TOKENIZER_STYLES:
        raise ValueError(f"unknown tokenizer style {style!r}; expected one of {', '.join(TOKENIZER_STYLES)}")
    st = TOKENIZER_STYLES[style]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=int(vocab_size),
        min_frequency=2,
        special_tokens=list(st.specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    if st.add_bos:
        bos_id = tok.token_to_id(st.bos)
        tok.post_processor = processors.TemplateProcessing(single=f"{st.bos} $A", pair=f"{st.bos} $A $B",
                                                           special_tokens=[(st.bos, bos_id)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=st.bos,
        eos_token=st.eos,
        unk_token=st.unk,
        pad_token=st.pad,
        model_max_length=int(max_length),
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    return fast


def make_config(architecture: str, vocab_size: int, hidden_size: int, num_layers: int, num_heads: int,
                max_positions: int, eos_id: int = 0, pad_id: int = 1, bos_id: int | None = None,
                sliding_window: int = SLIDING_WINDOW):
    """A transformers config for a tiny random model of the given family (dropout off: the base is frozen).

    ``llama`` and ``gemma3`` follow SmolLM2 / Gemma 3: tied embeddings, grouped-query attention (half as many
    key/value heads as query heads when the count is even), RoPE; ``gemma3`` alternates sliding-window
    (``sliding_window``) and full-attention layers, starting with a sliding one (Gemma 3 270M: five sliding
    layers, then one full), and scales its embeddings by ``sqrt(hidden_size)`` inside the embedding module.
    """
    from transformers import BloomConfig, Gemma3TextConfig, GPT2Config, LlamaConfig, OPTConfig

    if hidden_size % num_heads:
        raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
    bos_id = eos_id if bos_id is None else bos_id
    common = dict(vocab_size=vocab_size, bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id)
    kv_heads = num_heads // 2 if num_heads % 2 == 0 else 1
    head_dim = hidden_size // num_heads
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
    if architecture == "llama":
        return LlamaConfig(hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=num_layers,
                           num_attention_heads=num_heads, num_key_value_heads=kv_heads, head_dim=head_dim,
                           max_position_embeddings=max_positions, rms_norm_eps=1e-5, tie_word_embeddings=True,
                           attention_dropout=0.0, rope_parameters={"rope_type": "default", "rope_theta": 1e5},
                           **common)
    if architecture == "gemma3":
        layer_types = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(num_layers)]
        return Gemma3TextConfig(hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                                num_hidden_layers=num_layers, num_attention_heads=num_heads,
                                num_key_value_heads=kv_heads, head_dim=head_dim, query_pre_attn_scalar=head_dim,
                                max_position_embeddings=max_positions, sliding_window=int(sliding_window),
                                layer_types=layer_types, tie_word_embeddings=True, attention_dropout=0.0,
                                final_logit_softcapping=None, attn_logit_softcapping=None, **common)
    raise ValueError(f"unknown architecture {architecture!r}; expected one of {', '.join(ARCHITECTURES)}")


def build_tiny_model(texts: Sequence[str], out_dir: str | os.PathLike[str], architecture: str,
                     hidden_size: int = 64, num_layers: int = 2, num_heads: int = 2, vocab_size: int = 1000,
                     max_positions: int = 1024, seed: int = 0, init_std: float | None = None,
                     sliding_window: int = SLIDING_WINDOW) -> Path:
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
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; expected one of {', '.join(ARCHITECTURES)}")
    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(texts, vocab_size, max_length=max_positions, style=ARCH_TOKENIZER[architecture])
    eos_id, pad_id, bos_id = tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id
    # the real vocabulary may be smaller than asked when the text is small: size the embeddings to it
    config = make_config(architecture, len(tokenizer), hidden_size, num_layers, num_heads, max_positions,
                         eos_id=eos_id, pad_id=pad_id, bos_id=bos_id, sliding_window=sliding_window)
    if init_std is not None:
        config.initializer_range = float(init_std)
    torch.manual_seed(int(seed))
    model = AutoModelForCausalLM.from_config(config)
    model.eval()
    model.generation_config.pad_token_id = pad_id
    model.generation_config.eos_token_id = eos_id
    model.generation_config.bos_token_id = bos_id

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    chmod_default(tmp, directory=True)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "build.json").write_text(json.dumps({
            "architecture": architecture, "hidden_size": hidden_size, "num_layers": num_layers,
            "num_heads": num_heads, "vocab_size_requested": vocab_size, "vocab_size": len(tokenizer),
            "max_positions": max_positions, "seed": seed, "n_texts": len(texts),
            **({"sliding_window": sliding_window} if architecture == "gemma3" else {})},
            indent=2, sort_keys=True) + "\n")
        for f in tmp.iterdir():  # save_pretrained writes the weights 0600
            chmod_default(f)
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
