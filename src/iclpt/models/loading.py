"""Loading a frozen causal LM (hub id or local folder) and the forward calls shared by training and decoding.

One code path for every method: the caller builds ``inputs_embeds`` / ``attention_mask`` / ``position_ids`` with
:func:`iclpt.engine.soft_prompt.assemble_inputs` and calls :func:`lm_forward` (decoding, full logits) or
:func:`target_logits` (training: the LM head runs only on the positions that predict a target token).
"""

from __future__ import annotations

import inspect
import os
import random
import re
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from iclpt.artifacts import check_model_dir, looks_local
from iclpt.devices import cpu_has_bf16
from iclpt.engine.soft_prompt import freeze
from iclpt.io import DataError

# families whose logits are exactly lm_head(base_model(...).last_hidden_state) (no scaling / soft-capping), so the
# training loss may apply the head to the target positions only
_PLAIN_HEAD = {"gpt2", "opt", "bloom", "llama", "mistral", "qwen2", "qwen3", "gpt_neox", "gptj", "gpt_neo",
               "phi", "phi3", "falcon", "stablelm", "olmo", "olmo2", "smollm3"}
# families whose logits are tanh soft-capped by ``config.final_logit_softcapping`` when it is set (Gemma 2 / 3;
# Gemma 3 270M has none): the fast path applies the same cap. Gemma 3's 262k-entry vocabulary makes the full
# logits of a training batch several GB, so this path matters most there.
_SOFTCAP_HEAD = {"gemma2", "gemma3_text"}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``cpu`` / ``cuda`` / ``cuda:N``; ``auto``: CUDA when torch sees a device. A job started by a rule gets its
    device from :func:`iclpt.devices.job_device` instead (``auto`` follows the rule's GPU request there); a
    ``cuda`` request without CUDA fails here, never falls back to the CPU."""
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        from iclpt.devices import check_cuda

        check_cuda(1)
    return torch.device(device)


#: the lowest CUDA compute capability with native bf16 (Ampere); V100 (7.0) and T4 (7.5) emulate it, and
#: ``torch.cuda.is_bf16_supported()`` says True there, so it cannot decide
BF16_MIN_CAPABILITY = (8, 0)
PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device, capability: tuple[int, int] | None = None) -> str:
    """``fp32``, ``bf16`` or ``fp16`` (autocast; the soft prompt and its optimizer stay float32).

    ``auto``: on CUDA bf16 where the GPU has it natively (compute capability >= 8.0), else fp16 (training then
    scales the loss, :func:`iclpt.engine.training.train_step`); on a CPU bf16 with AMX / AVX512-BF16, else
    fp32. fp16 needs CUDA. ``capability`` overrides the GPU's (tests)."""
    if precision not in (*PRECISIONS, "auto"):
        raise ValueError(f"unknown precision {precision!r}; expected auto, {', '.join(PRECISIONS)}")
    if device.type != "cuda":
        if precision == "fp16":
            raise ValueError("precision fp16 needs a CUDA device (CPUs have no fast fp16 matmul); use bf16 or fp32")
        if precision == "auto":
            return "bf16" if cpu_has_bf16() else "fp32"
        return precision
    if precision != "auto":
        return precision
    cap = capability or torch.cuda.get_device_capability(device)
    return "bf16" if tuple(cap) >= BF16_MIN_CAPABILITY else "fp16"


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype the matmuls of ``precision`` run in."""
    return _DTYPES.get(precision, torch.float32)


def autocast(device: torch.device, precision: str):
    """bf16 / fp16 autocast context (the soft prompt stays float32), or a no-op for fp32."""
    if precision in _DTYPES:
        return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])
    return nullcontext()


def seed_everything(seed: int, deterministic: bool = True, device: torch.device | None = None) -> None:
    """Seed python, torch and numpy; ``deterministic``: torch's deterministic algorithms (an op without one warns
    in the job's log), and on CUDA (:func:`cuda_determinism`) cuBLAS's fixed workspace and cuDNN without
    autotuning."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % (2**32))
    except ImportError:  # pragma: no cover
        pass
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        if device is not None and device.type == "cuda":
            cuda_determinism()


def cuda_determinism() -> None:
    """Deterministic CUDA: ``CUBLAS_WORKSPACE_CONFIG`` (set by :func:`iclpt.devices.lease_gpus` before CUDA starts;
    here too, effective while no cuBLAS handle exists yet), cuDNN deterministic without benchmarking."""
    from iclpt.devices import CUBLAS_WORKSPACE

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def deterministic_attention(device: torch.device):
    """A context in which ``scaled_dot_product_attention`` runs its math backend on CUDA: the flash,
    memory-efficient and cuDNN kernels accumulate the backward pass with atomics (a soft prompt's gradient would
    differ run to run). Training runs its forward passes in it (the backward follows the kernel the forward
    chose); decoding (no backward) keeps the fast kernels. A no-op on the CPU. BLOOM computes attention itself
    (``baddbmm``) and needs none."""
    if device.type != "cuda":
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def load_model(path: str, device: str | torch.device = "cpu", precision: str = "fp32"):
    """(model, tokenizer) from a hub id or folder; the model is frozen, in eval mode, on ``device``.

    The tokenizer gets a pad token (EOS) when it has none; padding is always done by this package (left).
    The weights are loaded straight onto ``device`` in the dtype they compute in (:func:`load_weights`): no
    float32 copy of the model on the host or the device. ``precision="bf16"`` / ``"fp16"`` stores the matmul
    weights in that dtype (:func:`precast_for_autocast`): the model must then be called under :func:`autocast`,
    and computes exactly what autocast computes with float32 weights.
    """
    from transformers import AutoTokenizer

    check_model_source(path)
    device = torch.device(device) if isinstance(device, str) else device
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = load_weights(path, device, compute_dtype(precision))
    except (OSError, ValueError) as e:
        where = "local folder" if os.path.isdir(path) else "hub id (no local folder of that name)"
        raise DataError(f"model {path!r} ({where}) could not be loaded: {e}") from e
    freeze(model)
    if precision in _DTYPES:
        precast_for_autocast(model, compute_dtype(precision))
    return model, tokenizer


def load_weights(path: str, device: torch.device, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The causal LM at ``path`` with its weights read straight onto ``device``: the matmul weights
    (:func:`matmul_parameters`) in ``dtype``, every other parameter (embeddings, norms) in float32, as
    :func:`precast_for_autocast` would leave them. ``transformers`` casts each checkpoint tensor as it reads it
    (one tensor at a time on the host), keeping the parameters its ``_keep_in_fp32_modules_strict`` names in
    float32: a subclass of the model's class names the non-matmul ones (found on a weightless meta-device copy)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    where = f"cuda:{device.index or 0}" if device.type == "cuda" else str(device)  # a job's leased GPU is cuda:0
    kw: dict[str, Any] = {"device_map": {"": where}}
    if dtype == torch.float32:
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **kw)
    config = AutoConfig.from_pretrained(path)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    keep = {n for n, _ in skeleton.named_parameters()} - set(matmul_parameters(skeleton))
    cls = type(skeleton)
    mixed = type(cls.__name__, (cls,), {"_keep_in_fp32_modules_strict": [f"^{re.escape(n)}$" for n in sorted(keep)],
                                       "__module__": cls.__module__})
    return mixed.from_pretrained(path, config=config, dtype=dtype, **kw)


def matmul_parameters(model: nn.Module) -> list[str]:
    """Names of the parameters of the matmul layers (``nn.Linear``, GPT-2's ``Conv1D``): those autocast runs in
    bf16 / fp16 and :func:`precast_for_autocast` stores so."""
    kinds = _matmul_kinds()
    return [f"{mn}.{pn}" if mn else pn for mn, mod in model.named_modules() if isinstance(mod, kinds)
            for pn, _ in mod.named_parameters(recurse=False)]


def _matmul_kinds() -> tuple[type, ...]:
    try:
        from transformers.pytorch_utils import Conv1D

        return (nn.Linear, Conv1D)
    except ImportError:  # pragma: no cover
        return (nn.Linear,)


def check_model_source(path: str) -> None:
    """A local folder must hold a complete model (:func:`iclpt.artifacts.check_model_dir`: the missing or truncated
    file is named); a path-like value that is no folder is a DataError, not a malformed hub id."""
    if os.path.isdir(os.path.expanduser(path)):
        check_model_dir(os.path.expanduser(path))
    elif os.path.exists(path):
        raise DataError(f"model path {path} is a file; expected a model folder (config.json, weights, tokenizer)")
    elif looks_local(path):
        raise DataError(f"model folder {path} does not exist (as a hub id it would have to be 'org/name')")


def precast_for_autocast(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """Store the weights of the matmul layers (``nn.Linear``, GPT-2's ``Conv1D``) in ``dtype`` once.

    Autocast casts float32 weights to bf16 at *every* call unless they require grad (its cache only keeps leaf
    tensors that require grad), and a frozen base requires none: that re-cast reads and writes the whole model
    on every forward, which dominates decoding (a few tokens per step). Rounding once gives the same bf16 values,
    so results are unchanged. Embeddings and norms stay float32 (autocast leaves them alone); an LM head tied to
    the input embeddings is untied into a bf16 copy, the input embeddings stay float32.
    """
    kinds = _matmul_kinds()
    emb = model.get_input_embeddings().weight
    for mod in model.modules():
        if not isinstance(mod, kinds):
            continue
        for name, p in list(mod.named_parameters(recurse=False)):
            if p.dtype == dtype:
                continue
            # a parameter shared with the input embeddings (tied head) gets its own copy
            new = nn.Parameter(p.detach().to(dtype), requires_grad=False)
            setattr(mod, name, new)
    if emb.dtype != torch.float32:  # pragma: no cover - defensive
        raise RuntimeError("input embeddings must stay float32")
    return model


def _accepts(module: nn.Module, name: str) -> bool:
    cache = module.__dict__.setdefault("_iclpt_sig", {})
    if name not in cache:
        cache[name] = name in inspect.signature(module.forward).parameters
    return cache[name]


def lm_forward(model: nn.Module, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
               position_ids: torch.Tensor, cache: Any = None, use_cache: bool = False,
               last_only: bool = False):
    """Full causal-LM forward through ``inputs_embeds``; returns the model output (``.logits``, ``.cache``).

    ``position_ids`` is passed to families that take it (GPT-2 would otherwise count positions from the left
    edge, padding included); ALiBi families (BLOOM) derive positions from the attention mask themselves.
    """
    kw: dict[str, Any] = dict(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=use_cache)
    if _accepts(model, "position_ids"):
        kw["position_ids"] = position_ids
    if cache is not None:
        kw["cache" if _accepts(model, "cache") else "past_key_values"] = cache
    if last_only and _accepts(model, "logits_to_keep"):
        kw["logits_to_keep"] = 1
    return model(**kw)


def output_cache(out: Any) -> Any:
    c = getattr(out, "cache", None)
    return c if c is not None else getattr(out, "past_key_values", None)


def target_logits(model: nn.Module, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                  position_ids: torch.Tensor, predict_mask: torch.Tensor) -> torch.Tensor:
    """Logits ``[N, V]`` at the positions where ``predict_mask`` ``[B, S]`` is true (row-major order).

    For plain-head families the head runs on those positions only (the LM head is a large share of the
    FLOPs: ~30% of GPT-2 small); other families take the full forward and are sliced.
    """
    mt = getattr(model.config, "model_type", "")
    head = model.get_output_embeddings()
    if (mt in _PLAIN_HEAD or mt in _SOFTCAP_HEAD) and head is not None:
        base = model.base_model
        kw: dict[str, Any] = dict(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False)
        if _accepts(base, "position_ids"):
            kw["position_ids"] = position_ids
        hidden = base(**kw).last_hidden_state
        logits = head(hidden[predict_mask])
        cap = getattr(model.config, "final_logit_softcapping", None) if mt in _SOFTCAP_HEAD else None
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits
    out = lm_forward(model, inputs_embeds, attention_mask, position_ids)
    return out.logits[predict_mask]


def model_info(model: nn.Module) -> dict[str, Any]:
    cfg = model.config
    return {
        "model_type": getattr(cfg, "model_type", None),
        "hidden_size": int(model.get_input_embeddings().weight.shape[1]),
        "vocab_size": int(model.get_input_embeddings().weight.shape[0]),
        "n_params": int(sum(p.numel() for p in model.parameters())),
        "max_positions": max_positions(model),
    }


def max_positions(model: nn.Module) -> int | None:
    """The model's context length (None for ALiBi models without a fixed limit)."""
    cfg = model.config
    for name in ("n_positions", "max_position_embeddings", "seq_length"):
        v = getattr(cfg, name, None)
        if isinstance(v, int) and v > 0:
            return v
    return None
