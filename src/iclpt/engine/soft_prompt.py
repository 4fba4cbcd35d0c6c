"""The soft prompt: ``n_virtual_tokens x hidden`` vectors (a float32 tensor; training makes it a bare
``nn.Parameter``) fed to a frozen causal LM through ``inputs_embeds``.

Layout of one batch (see :func:`assemble_inputs`): every row is ``[pad ... pad][P_1 .. P_n][t_1 .. t_m]``; the
prompt sits right before the row's first real token, so left padding never separates prompt and text, and the
position ids count from the first prompt vector (prompt at positions ``0..n-1``, text at ``n..``), exactly as a
single unpadded row ``[P][text]`` would see them. Rows without a prompt (ICL, ``n = 0``) go through the same path.

Files: ``prompt.safetensors`` holds one tensor ``"prompt"`` (float32, ``[n, hidden]``) plus string metadata;
:func:`export_peft` writes the same values as a PEFT prompt-tuning adapter (``adapter_config.json`` +
``adapter_model.safetensors`` with ``prompt_embeddings``) that ``peft.PeftModel.from_pretrained`` loads.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

INITS = ("vocab", "random", "text", "file")
PROMPT_KEY = "prompt"


# ---- initialisation ------------------------------------------------------------------------------
def embed_ids(model: nn.Module, ids: torch.Tensor | list[int]) -> torch.Tensor:
    """What the model's input-embedding module outputs for ``ids`` (float32, CPU, ``[len(ids), hidden]``).

    This, not a row of ``get_input_embeddings().weight``, is the vector a token contributes to the model's input:
    Gemma's ``Gemma3TextScaledWordEmbedding`` multiplies the looked-up row by ``sqrt(hidden)`` in its forward
    (so do Gemma 1/2), and a soft prompt is fed through ``inputs_embeds``, after that module. Initialising from
    the raw weight would start the prompt ``sqrt(hidden)`` times smaller than the text it precedes (25x for
    Gemma 3 270M). For plain ``nn.Embedding`` modules the two are bit-identical. PEFT's ``SAMPLE_VOCAB`` /
    ``TEXT`` initialisations call the module too.
    """
    emb = model.get_input_embeddings()
    dev = emb.weight.device
    ids = torch.as_tensor(ids, dtype=torch.long, device=dev)
    with torch.no_grad():
        return emb(ids).detach().float().cpu().clone()


#: a sentencepiece byte-fallback piece: one raw byte of a character the vocabulary lacks (not a word)
_BYTE_FALLBACK = re.compile(r"<0x[0-9A-Fa-f]{2}>")
#: added tokens that mark structure, not text, which some converted tokenizers leave unflagged (Gemma 3's GGUF
#: tokenizer: ``[multimodal]``, ``<start_of_image>``, ``<end_of_image>``); ``<|...|>`` chat markers likewise
_CONTROL_MARKER = re.compile(r"\[[a-z_]+\]|<\|[^<>]*\|>|<(start|end)_of_[a-z_]+>")


def control_token_ids(tokenizer: Any) -> set[int]:
    """Ids that are never a prompt initialisation: special and control tokens, and byte-fallback pieces.

    - ``tokenizer.all_special_ids`` (BOS / EOS / PAD / UNK ..., e.g. SmolLM2's ``<|im_end|>`` = EOS = pad);
    - every added token flagged special (SmolLM2's ids 0-16, Gemma's ``<start_of_turn>`` and ``<unusedN>``);
    - added tokens whose text is a control marker (:data:`_CONTROL_MARKER`) though not flagged special;
    - sentencepiece byte-fallback pieces ``<0xNN>`` (Gemma): single bytes of characters outside the vocabulary,
      not words, so not what "the most frequent tokens" of Lester et al. (2021) mean.
    """
    ids = {int(i) for i in tokenizer.all_special_ids}
    for i, tok in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(tok, "special", False) or _CONTROL_MARKER.fullmatch(str(tok)):
            ids.add(int(i))
    ids.update(int(i) for t, i in tokenizer.get_vocab().items() if _BYTE_FALLBACK.fullmatch(t))
    return ids


def frequent_token_ids(texts: Iterable[str], tokenizer: Any, k: int) -> list[int]:
    """The ``k`` most frequent token ids of ``texts`` (tokenised without special tokens), most frequent first
    (ties: lower id first), special / control / byte-fallback ids (:func:`control_token_ids`) left out.

    Fewer than ``k`` when the texts hold fewer distinct ids; the candidates of the ``vocab`` initialisation."""
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    texts = [t for t in texts if t]
    counts: Counter[int] = Counter()
    for ids in (tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []):
        counts.update(ids)
    banned = control_token_ids(tokenizer)
    ranked = sorted((i for i in counts if i not in banned), key=lambda i: (-counts[i], i))
    return [int(i) for i in ranked[: int(k)]]


def init_prompt(model: nn.Module, n_virtual_tokens: int, init: str = "vocab", seed: int = 0,
                vocab_ids: Sequence[int] | None = None, init_text: str | None = None, init_file: str | None = None,
                tokenizer: Any = None, init_vocab_size: int = 5000) -> torch.Tensor:
    """Initial prompt values ``[n, hidden]`` (float32, CPU).

    - ``vocab``: input embeddings (:func:`embed_ids`, so on the scale of the text) of ``n`` token ids drawn
      (seeded, without replacement while possible) from the candidates ``vocab_ids``: the most frequent tokens,
      Lester et al. (2021). The training job passes :func:`frequent_token_ids` of the task's training text
      (``init_vocab_size`` of them, never a special or control token). Without ``vocab_ids`` (callers that need
      a prompt of the text's scale only: timing, engine tests) the candidates are the ``init_vocab_size`` lowest
      ids, special ones included; the pipeline never takes that path.
    - ``random``: uniform in ``[-0.5, 0.5]`` (Lester et al.'s random-uniform baseline), seeded.
    - ``text``: the input embeddings of the tokens of ``init_text`` (no special tokens), repeated to fill ``n``,
      then cut. PEFT's TEXT init is the same except that it tokenises with the tokenizer's special tokens
      (a leading BOS for Gemma / OPT); here the BOS stays where the text part of every row has it.
    - ``file``: a saved prompt (``prompt.safetensors``); its length must be ``n``.
    """
    n = int(n_virtual_tokens)
    if n < 1:
        raise ValueError("a soft prompt needs at least one virtual token")
    vocab, hidden = (int(x) for x in model.get_input_embeddings().weight.shape)
    gen = torch.Generator().manual_seed(int(seed))
    if init == "vocab":
        pool = _vocab_candidates(vocab_ids, vocab, init_vocab_size)
        if n <= len(pool):
            picks = torch.randperm(len(pool), generator=gen)[:n]
        else:
            picks = torch.randint(len(pool), (n,), generator=gen)
        return embed_ids(model, pool[picks])
    if init == "random":
        return torch.rand(n, hidden, generator=gen) - 0.5
    if init == "text":
        if not init_text:
            raise ValueError("prompt init 'text' needs init_text")
        if tokenizer is None:
            raise ValueError("prompt init 'text' needs the tokenizer")
        ids = tokenizer(init_text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"init_text {init_text!r} has no tokens")
        ids = (ids * (n // len(ids) + 1))[:n]
        return embed_ids(model, ids)
    if init == "file":
        if not init_file:
            raise ValueError("prompt init 'file' needs init_file")
        weight, _ = load_prompt(init_file, hidden_size=hidden, length=n)
        return weight.clone()
    raise ValueError(f"unknown prompt init {init!r}; expected one of {', '.join(INITS)}")


def _vocab_candidates(vocab_ids: Sequence[int] | None, vocab: int, init_vocab_size: int) -> torch.Tensor:
    """The candidate ids of the ``vocab`` init as a tensor (checked against the embedding's ``vocab`` rows)."""
    if vocab_ids is None:
        return torch.arange(max(1, min(int(init_vocab_size), vocab)))
    pool = torch.as_tensor(list(vocab_ids), dtype=torch.long)
    if pool.numel() == 0:
        raise ValueError("prompt init 'vocab' got no candidate token ids (empty training text?)")
    bad = pool[(pool < 0) | (pool >= vocab)]
    if bad.numel():
        raise ValueError(f"prompt init 'vocab': candidate token id {int(bad[0])} is outside the model's "
                         f"{vocab} embedding rows (a tokenizer of another model?)")
    return pool


# ---- files ---------------------------------------------------------------------------------------
def save_prompt(path: str | os.PathLike[str], weight: torch.Tensor, metadata: dict[str, Any] | None = None) -> None:
    """Write ``{"prompt": weight}`` as safetensors (atomically); metadata values are stored as JSON strings."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {str(k): json.dumps(v, sort_keys=True) for k, v in (metadata or {}).items()}
    from iclpt.io import write_bytes_atomic

    write_bytes_atomic(path, safetensors_bytes({PROMPT_KEY: weight}, meta))


def safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """Serialise float32 tensors in the safetensors format with a key-sorted header.

    ``safetensors.torch.save_file`` writes the metadata in hash-map order, which changes from process to process;
    this writer makes the same prompt the same bytes (reproducible outputs), and ``safe_open`` reads it as usual.
    """
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in sorted(metadata.items())}
    blobs, offset = [], 0
    for name in sorted(tensors):
        data = tensors[name].detach().to(torch.float32).cpu().contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)
    return len(head).to_bytes(8, "little") + head + b"".join(blobs)


def load_prompt(path: str | os.PathLike[str], hidden_size: int | None = None,
                length: int | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """Read a prompt written by :func:`save_prompt`: (weight ``[n, hidden]`` float32, metadata).

    A truncated or corrupt file, a tensor that is not 2-D, and (when given) a width other than the model's
    ``hidden_size`` or a number of vectors other than ``length`` raise ValueError naming the file and both shapes."""
    from safetensors import safe_open

    from iclpt.artifacts import check_safetensors

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: prompt file not found")
    check_safetensors(path, "soft prompt: ")
    with safe_open(str(path), framework="pt") as fh:
        keys = list(fh.keys())
        key = PROMPT_KEY if PROMPT_KEY in keys else ("prompt_embeddings" if "prompt_embeddings" in keys else None)
        if key is None:
            raise ValueError(f"{path}: no 'prompt' tensor (keys: {keys})")
        weight = fh.get_tensor(key).float()
        raw = fh.metadata() or {}
    check_prompt_shape(weight, path, hidden_size, length)
    meta: dict[str, Any] = {}
    for k, v in raw.items():
        try:
            meta[k] = json.loads(v)
        except (TypeError, ValueError):
            meta[k] = v
    return weight, meta


def check_prompt_shape(weight: torch.Tensor, path: str | os.PathLike[str], hidden_size: int | None = None,
                       length: int | None = None) -> None:
    """ValueError naming the file unless ``weight`` is ``[length, hidden_size]`` (None: that side unchecked)."""
    shape = tuple(int(x) for x in weight.shape)
    if len(shape) != 2:
        raise ValueError(f"{path}: a soft prompt is [n_virtual_tokens, hidden]; got a tensor of shape {shape}")
    if hidden_size is not None and shape[1] != int(hidden_size):
        raise ValueError(f"{path}: prompt shape {shape} does not match the model: width {shape[1]}, the model's "
                         f"hidden size is {hidden_size} (a prompt trained on another model?)")
    if length is not None and shape[0] != int(length):
        raise ValueError(f"{path}: prompt shape {shape} does not match the prompt length: {shape[0]} vectors, "
                         f"expected {length}")


def export_peft(out_dir: str | os.PathLike[str], weight: torch.Tensor, model_config: Any,
                base_model_name_or_path: str | None = None) -> None:
    """Write the prompt as a PEFT prompt-tuning adapter (``peft.PeftModel.from_pretrained`` loads it).

    PEFT is not needed to write it: the two files follow PEFT's own ``save_pretrained`` output for
    ``PromptTuningConfig(task_type="CAUSAL_LM")``. PEFT places the prompt before *all* tokens of a row, so the
    adapter reproduces our logits for unpadded rows (and for right padding); see the module docstring.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n, hidden = (int(x) for x in weight.shape)
    cfg = {
        "auto_mapping": None,
        "base_model_name_or_path": base_model_name_or_path,
        "inference_mode": True,
        "modules_to_save": None,
        "num_attention_heads": _cfg_get(model_config, ("num_attention_heads", "n_head")),
        "num_layers": _cfg_get(model_config, ("num_hidden_layers", "n_layer", "num_layers")),
        "num_transformer_submodules": 1,
        "num_virtual_tokens": n,
        "peft_type": "PROMPT_TUNING",
        "prompt_tuning_init": "RANDOM",
        "prompt_tuning_init_text": None,
        "revision": None,
        "task_type": "CAUSAL_LM",
        "token_dim": hidden,
        "tokenizer_kwargs": None,
        "tokenizer_name_or_path": None,
    }
    from iclpt.io import write_bytes_atomic, write_json_atomic

    write_bytes_atomic(out_dir / "adapter_model.safetensors",
                       safetensors_bytes({"prompt_embeddings": weight}, {"format": "pt"}))

    write_json_atomic(out_dir / "adapter_config.json", cfg)


def _cfg_get(config: Any, names: tuple[str, ...]) -> int | None:
    for name in names:
        v = getattr(config, name, None)
        if v is not None:
            return int(v)
    return None


# ---- batch assembly ------------------------------------------------------------------------------
def assemble_inputs(model: nn.Module, prompt: torch.Tensor | None, input_ids: torch.Tensor,
                    token_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Embeddings, attention mask and position ids of ``[pad][P][tokens]`` rows.

    ``input_ids``/``token_mask``: ``[B, T]``, **left padded** (mask 1 on real tokens). ``prompt``: ``[n, H]``
    or None. Returns ``inputs_embeds [B, n+T, H]``, ``attention_mask [B, n+T]`` (long), ``position_ids
    [B, n+T]`` (0 on padding). The prompt of each row starts at that row's padding length, implemented as one
    gather so the gradient reaches the prompt without Python loops.
    """
    tok_emb = model.get_input_embeddings()(input_ids)
    B, T = input_ids.shape
    n = 0 if prompt is None else int(prompt.shape[0])
    mask = token_mask.to(torch.long)
    if n == 0:
        attn = mask
        src = tok_emb
    else:
        P = prompt.to(device=tok_emb.device, dtype=tok_emb.dtype)
        pad = (T - mask.sum(dim=1)).unsqueeze(1)  # [B, 1] left padding of each row
        j = torch.arange(n + T, device=input_ids.device).unsqueeze(0)  # [1, n+T]
        # source index into cat([P, tok_emb]) (length n+T): pad slots take a pad embedding (index n, valid when
        # the row has padding), prompt slots take P[j - pad], text slots take tok_emb[j - n] = source[j]
        idx = torch.where(j < pad, torch.full_like(j, n), torch.where(j < pad + n, j - pad, j))
        src_full = torch.cat([P.unsqueeze(0).expand(B, n, P.shape[1]), tok_emb], dim=1)
        src = torch.gather(src_full, 1, idx.unsqueeze(-1).expand(B, n + T, tok_emb.shape[-1]))
        attn = (j >= pad).to(torch.long)
    pos = (attn.cumsum(dim=1) - 1).clamp(min=0) * attn
    return src, attn, pos


def freeze(model: nn.Module) -> nn.Module:
    """Freeze every base parameter and switch to eval mode (no dropout)."""
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    return model
