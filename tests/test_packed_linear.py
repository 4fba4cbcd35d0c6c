"""Packed oneDNN linears for decoding (:mod:`iclpt.engine.packed_linear`): same products, same tokens, routed only
where it is safe, restored afterwards."""

from __future__ import annotations

import pytest
import torch
from tiny_engine import ARCHS, load
from torch import nn
from torch.nn import functional as F

from iclpt.engine import packed_linear
from iclpt.engine.generation import greedy_generate
from iclpt.engine.packed_linear import packable_dtypes, packed_linears, packing_available
from iclpt.engine.soft_prompt import init_prompt
from iclpt.models.loading import autocast

pytestmark = pytest.mark.skipif(not packing_available(), reason="this PyTorch build has no oneDNN packed linear")

TEXTS = ["a cat", "the old dog sleeps in the big house with a red bird", "fish", "the tree is new and green"]


def _net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(24, 40), nn.ReLU(), nn.Linear(40, 7, bias=False))


@pytest.mark.parametrize("shape", [(1, 24), (16, 24), (3, 5, 24), (2, 300, 24)])
def test_fp32_products_match_f_linear_to_rounding(shape):
    net = _net()
    x = torch.randn(*shape)
    with torch.no_grad():
        ref = net(x)
        with packed_linears(net) as n:
            out = net(x)
    assert n == 2
    assert out.shape == ref.shape and out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_bf16_under_autocast_is_bit_equal_to_autocast_f_linear():
    net = _net()
    x = torch.randn(16, 24)
    cpu = torch.device("cpu")
    with torch.no_grad(), autocast(cpu, "bf16"):
        ref = net(x)
        with packed_linears(net):
            out = net(x)
    assert out.dtype == ref.dtype == torch.bfloat16
    assert torch.equal(out, ref)


def test_forward_is_restored_and_autograd_takes_the_module_path():
    net = _net()
    x = torch.randn(4, 24, requires_grad=True)
    with packed_linears(net):
        assert "forward" in net[0].__dict__
        y = net(x)  # grad enabled: the module's own forward, so backward works
        y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert "forward" not in net[0].__dict__ and "_iclpt_packed" not in net[0].__dict__
    with packed_linears(net, enabled=False) as n:
        assert n == 0 and "forward" not in net[0].__dict__


def test_a_changed_weight_is_packed_again():
    net = _net()
    x = torch.randn(8, 24)
    with torch.no_grad(), packed_linears(net):
        before = net(x)
        net[2].weight.mul_(2.0)  # bumps the tensor's version: the cached packed copy is stale
        after = net(x)
    with torch.no_grad():
        ref = F.linear(torch.relu(net[0](x)), net[2].weight)
    torch.testing.assert_close(after, 2 * before, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(after, ref, atol=1e-5, rtol=1e-5)


def test_an_exception_inside_the_block_still_restores_the_layers():
    net = _net()
    with pytest.raises(RuntimeError, match="boom"), packed_linears(net):
        raise RuntimeError("boom")
    assert all("forward" not in m.__dict__ for m in net.modules())


def test_layers_off_the_cpu_are_left_alone_and_other_dtypes_take_the_module_path():
    on_meta = _net().to("meta")  # stands for CUDA: any non-CPU device
    with packed_linears(on_meta) as n:
        assert n == 0 and all("forward" not in m.__dict__ for m in on_meta.modules())
    net = _net().double()  # float64 has no packed kernel: F.linear's exact result, nothing cached
    x = torch.randn(5, 24, dtype=torch.float64)
    with torch.no_grad():
        ref = net(x)
        with packed_linears(net) as n:
            out = net(x)
    assert n == 2 and torch.equal(out, ref) and "_iclpt_packed" not in net[0].__dict__


def test_bf16_without_a_bf16_kernel_takes_f_linear_and_fp32_is_still_packed(monkeypatch):
    """An AVX2-only CPU has no oneDNN bf16 kernel (its reorder raises): bf16 products must take F.linear."""
    monkeypatch.setattr(packed_linear, "packable_dtypes", lambda: (torch.float32,))
    net = _net()
    x = torch.randn(6, 24)
    with torch.no_grad():
        with autocast(torch.device("cpu"), "bf16"):
            ref = net(x)
            with packed_linears(net) as n:
                out = net(x)
        assert n == 2 and torch.equal(out, ref) and "_iclpt_packed" not in net[0].__dict__
        with packed_linears(net):
            net(x)  # fp32: packed
            assert net[0].__dict__["_iclpt_packed"][0][2] == torch.float32


def test_packable_dtypes_follow_the_cpu():
    has_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert packable_dtypes() == ((torch.float32, torch.bfloat16) if has_bf16 else (torch.float32,))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_greedy_tokens_equal_with_and_without_packing(arch, precision):
    model, tok = load(arch, init_std=0.3)  # peaked logits: the argmax path is exercised
    prompt = init_prompt(model, 4, "random", seed=0)
    rows = [tok(t)["input_ids"] for t in TEXTS]
    pad = tok.pad_token_id
    packed = greedy_generate(model, prompt, rows, 12, pad, precision=precision)
    plain = greedy_generate(model, prompt, rows, 12, pad, precision=precision, packed=False)
    assert packed == plain
    assert len({tuple(r) for r in packed}) > 1
    assert all("forward" not in m.__dict__ for m in model.modules())
