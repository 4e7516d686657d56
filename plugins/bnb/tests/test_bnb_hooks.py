"""The weight hooks on bitsandbytes layers: description, dense read, requantizing write."""

from __future__ import annotations

import bitsandbytes as bnb
import pytest
import torch
from bitsandbytes.functional import _convert_weight_packed_for_cpu
from torch import nn

from peft_core.plugins import hook
from peft_core.weights import LINEAR, dense_weight, describe_layer, write_dense_weight
from peft_core_bnb.quant import rounding_bound

FOUR_BIT_CASES = [("nf4", False), ("nf4", True), ("fp4", False), ("fp4", True)]


def linear4(weight: torch.Tensor, quant_type: str, double_quant: bool, bias: bool = True,
            compute_dtype: torch.dtype = torch.bfloat16, blocksize: int = 64) -> nn.Module:
    out_f, in_f = weight.shape
    layer = bnb.nn.Linear4bit(in_f, out_f, bias=bias, compute_dtype=compute_dtype, quant_type=quant_type,
                              compress_statistics=double_quant)
    layer.weight = bnb.nn.Params4bit(weight.clone(), requires_grad=False, quant_type=quant_type,
                                     compress_statistics=double_quant, blocksize=blocksize)
    return layer.to("cpu")


def linear8(weight: torch.Tensor, threshold: float = 6.0) -> nn.Module:
    out_f, in_f = weight.shape
    layer = bnb.nn.Linear8bitLt(in_f, out_f, bias=False, has_fp16_weights=False, threshold=threshold)
    layer.weight = bnb.nn.Int8Params(weight.clone(), requires_grad=False, has_fp16_weights=False)
    return layer.to("cpu")


@pytest.fixture
def weight():
    torch.manual_seed(0)
    return torch.randn(64, 128) * 0.05


@pytest.mark.parametrize("quant_type,double_quant", FOUR_BIT_CASES)
def test_4bit_is_described_as_quantized_linear_in_compute_dtype(weight, quant_type, double_quant):
    desc = describe_layer(linear4(weight, quant_type, double_quant, blocksize=128))
    assert (desc.kind, desc.in_features, desc.out_features) == (LINEAR, 128, 64)
    assert desc.quantized and desc.dtype == torch.bfloat16 and not desc.fan_in_fan_out
    assert desc.extra == {"quantization_backend": "bitsandbytes", "bits": 4, "quant_type": quant_type, "blocksize": 128,
                          "double_quant": double_quant, "quant_storage": torch.uint8}


def test_8bit_is_described_as_quantized_linear(weight):
    desc = describe_layer(linear8(weight, threshold=4.0))
    assert (desc.kind, desc.in_features, desc.out_features, desc.quantized) == (LINEAR, 128, 64, True)
    assert desc.extra["bits"] == 8 and desc.extra["threshold"] == 4.0


def test_plain_layers_are_left_to_the_builtin_hooks():
    plain = nn.Linear(4, 3)
    assert describe_layer(plain).quantized is False
    impls = [i.plugin_name for i in hook().peft_core_describe_layer.get_hookimpls()]
    # ours must be called before the built-in trylast one (pluggy calls the last-listed first)
    assert impls.index("bnb") > impls.index("peft_core._builtin")
    from peft_core_bnb import plugin

    assert plugin.peft_core_dense_weight(module=plain) is None
    assert plugin.peft_core_write_dense_weight(module=plain, weight=plain.weight) is None


@pytest.mark.parametrize("quant_type,double_quant", FOUR_BIT_CASES)
def test_4bit_dense_weight_is_the_dequantized_weight(weight, quant_type, double_quant):
    layer = linear4(weight, quant_type, double_quant)
    dense = dense_weight(layer)
    assert dense.shape == (64, 128) and dense.dtype == torch.float32
    assert torch.equal(dense, bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state))
    assert (dense - weight).abs().le(rounding_bound(layer, weight)).all()
    x = torch.randn(3, 128)
    with torch.no_grad():
        expected = x.bfloat16() @ dense.bfloat16().T + layer.bias.bfloat16()
        torch.testing.assert_close(layer(x.bfloat16()), expected, atol=2e-2, rtol=2e-2)


def test_8bit_dense_weight_before_and_after_a_forward(weight):
    layer = linear8(weight)
    before = dense_weight(layer)
    assert before.shape == (64, 128) and (before - weight).abs().max() < weight.abs().max() / 127
    with torch.no_grad():
        layer(torch.randn(2, 128))  # moves the row scales from the weight to the layer state
    assert layer.weight.SCB is None
    assert torch.equal(dense_weight(layer), before)


@pytest.mark.parametrize("quant_type,double_quant", FOUR_BIT_CASES)
def test_4bit_write_keeps_settings_and_parameter_and_rounds_within_bound(weight, quant_type, double_quant):
    layer = linear4(weight, quant_type, double_quant, blocksize=128)
    param = layer.weight
    torch.manual_seed(1)
    target = dense_weight(layer) + torch.randn(64, 128) * 0.01
    write_dense_weight(layer, target)
    assert layer.weight is param and not param.requires_grad
    assert (param.quant_type, param.blocksize, param.compress_statistics) == (quant_type, 128, double_quant)
    assert param.quant_state.nested == double_quant and param.quant_state.blocksize == 128
    assert layer.compute_dtype == torch.bfloat16 and param.quant_state.dtype == torch.float32
    assert layer.quant_state is param.quant_state
    err = (dense_weight(layer) - target).abs()
    assert err.max() > 0  # it really was requantized ...
    assert err.le(rounding_bound(layer, target)).all()  # ... within the documented rounding


def test_4bit_writing_back_what_was_read_changes_nothing(weight):
    layer = linear4(weight, "nf4", double_quant=False)
    codes, absmax = layer.weight.data.clone(), layer.weight.quant_state.absmax.clone()
    write_dense_weight(layer, dense_weight(layer))
    assert torch.equal(layer.weight.data, codes) and torch.equal(layer.weight.quant_state.absmax, absmax)


def test_fp4_writing_back_what_was_read_only_moves_values_by_float_rounding(weight):
    # FP4 has two codes for zero and float-threshold rounding, so codes may flip, values hardly move
    layer = linear4(weight, "fp4", double_quant=False)
    before = dense_weight(layer)
    write_dense_weight(layer, before)
    assert (dense_weight(layer) - before).abs().max() < 1e-4 * before.abs().max()


def test_8bit_write_keeps_threshold_and_updates_the_forward(weight):
    layer = linear8(weight, threshold=5.0)
    x = torch.randn(2, 128)
    with torch.no_grad():
        layer(x)  # caches CB/SCB in the layer state: the write must invalidate that
    target = dense_weight(layer) * 0.5
    codes = layer.weight.data.clone()
    write_dense_weight(layer, target)
    assert layer.state.threshold == 5.0 and not layer.state.has_fp16_weights
    assert torch.equal(dense_weight(layer), target)  # halving is exact on the int8 grid
    assert torch.equal(layer.weight.data, codes)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), x @ target.T, atol=2e-2, rtol=2e-2)
    torch.manual_seed(2)
    target = target + torch.randn_like(target) * 0.01
    write_dense_weight(layer, target)
    err = (dense_weight(layer) - target).abs()
    assert err.max() > 0 and err.le(rounding_bound(layer, target)).all()


@pytest.mark.parametrize("double_quant", [False, True])
def test_cpu_packed_layout_is_read_without_changing_the_layer(weight, double_quant):
    """bitsandbytes repacks 4-bit weights in place on AVX512-BF16 CPUs; reads must see through it."""
    layer = linear4(weight, "nf4", double_quant)
    before = dense_weight(layer)
    layer.weight.data, layer.weight.quant_state = _convert_weight_packed_for_cpu(layer.weight.data, layer.weight.quant_state)
    packed = layer.weight.data.clone()
    dense = dense_weight(layer)
    assert torch.equal(layer.weight.data, packed)  # reading did not unpack the layer
    # the packed layout stores absmax in bfloat16: that rounding, and nothing else
    assert (dense - before).abs().le(before.abs() * 2**-8 + 1e-7).all()
    target = before + 0.01
    write_dense_weight(layer, target)
    assert not getattr(layer.weight.quant_state, "packing_format_for_cpu", False)
    assert layer.weight.quant_state.nested == double_quant
    assert (dense_weight(layer) - target).abs().le(rounding_bound(layer, target)).all()
