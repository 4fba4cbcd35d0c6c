"""Decoding matmuls through oneDNN with each weight packed once (CPU inference only).

A decode step multiplies a handful of rows (the batch) by every weight matrix of the model. For such skinny
products PyTorch's default CPU kernel (``F.linear`` on a row-major weight) runs far below the machine's peak: on
a 2-CPU EPYC, [16, 576] x [576, 1536] took 422 us against 210 us with the weight pre-packed into oneDNN's
blocked layout (``torch.ops.mkldnn._reorder_linear_weight``, the layout Inductor's CPU freezing uses), and
SmolLM2's LM head [16, 576] x [576, 49152] 17.5 ms against 5.5 ms (benchmarks/README.md). bf16 products are
bit-equal to ``F.linear``'s; fp32 ones differ in the last bits (another summation order, as any other batch
shape would give).

:func:`packed_linears` routes every plain ``nn.Linear`` of a model through the packed kernel for the duration of
a block, when the inputs need no gradient and sit on a CPU; anything else (CUDA, autograd, other dtypes, other
module classes, bf16 on a CPU without oneDNN's bf16 kernel) takes the module's own forward. The packed copy is
kept on the module (keyed by the weight's storage and version, so a changed weight is packed again): one extra
copy of the matmul weights in memory (SmolLM2-135M decoding 16 rows: peak RSS 1,520 against 976 MiB in fp32,
1,575 against 1,226 MiB in bf16).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

_ATTR = "_iclpt_packed"
_DTYPES = (torch.float32, torch.bfloat16)


def packing_available() -> bool:
    """Whether this PyTorch build has the oneDNN packed-linear kernels."""
    ops = getattr(torch.ops, "mkldnn", None)
    return bool(torch.backends.mkldnn.is_available() and ops is not None
                and hasattr(ops, "_linear_pointwise") and hasattr(ops, "_reorder_linear_weight"))


def packable_dtypes() -> tuple[torch.dtype, ...]:
    """The dtypes this CPU can pack: float32 always (when :func:`packing_available`), bfloat16 only where oneDNN
    has a bf16 kernel (AVX512-BW/VL/DQ or AVX-NE-CONVERT; an AVX2-only CPU raises on a bf16 reorder)."""
    if not packing_available():
        return ()
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return _DTYPES if probe is not None and probe() else (torch.float32,)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype ``F.linear`` would multiply in: autocast's CPU dtype when autocast is on, else the input's."""
    if torch.is_autocast_enabled("cpu"):
        return torch.get_autocast_dtype("cpu")
    return x.dtype


def _packed_weight(mod: nn.Linear, dtype: torch.dtype) -> torch.Tensor:
    w = mod.weight
    key = (w.data_ptr(), w._version, dtype)
    hit = mod.__dict__.get(_ATTR)
    if hit is None or hit[0] != key:
        dense = w.detach().to(dtype).contiguous()
        hit = (key, torch.ops.mkldnn._reorder_linear_weight(dense, 16))
        mod.__dict__[_ATTR] = hit
    return hit[1]


def _forward(mod: nn.Linear, original: Any, dtypes: tuple[torch.dtype, ...], x: torch.Tensor) -> torch.Tensor:
    dtype = _compute_dtype(x)
    if (x.device.type != "cpu" or dtype not in dtypes or x.dtype not in _DTYPES or torch.is_grad_enabled()
            or (mod.weight.dtype != dtype and not torch.is_autocast_enabled("cpu"))):
        return original(x)
    bias = None if mod.bias is None else mod.bias.detach().to(dtype)
    return torch.ops.mkldnn._linear_pointwise(x.to(dtype).contiguous(), _packed_weight(mod, dtype), bias,
                                              "none", [], "")


@contextlib.contextmanager
def packed_linears(model: nn.Module, enabled: bool = True) -> Iterator[int]:
    """Within the block, the model's CPU ``nn.Linear`` layers run through packed oneDNN weights (no-grad only);
    yields how many layers were routed (0 when disabled, unavailable or the model is not on a CPU)."""
    mods = [m for m in model.modules() if type(m) is nn.Linear and m.weight.device.type == "cpu"]
    dtypes = packable_dtypes() if enabled else ()
    if not dtypes:
        mods = []
    for m in mods:
        m.forward = functools.partial(_forward, m, m.forward, dtypes)  # an instance attribute shadows the class method
    try:
        yield len(mods)
    finally:
        for m in mods:
            m.__dict__.pop("forward", None)
