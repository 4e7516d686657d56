"""LN tuning's own behaviour: the copy stands in for the module, merging swaps, one adapter at a time."""

from __future__ import annotations

import pytest
import torch

from peft_core import get_peft_model
from peft_core.conformance.models import mlp, tiny_llama, token_batch
from peft_core.conformance.parity import max_diff, model_output, perturb_trainable
from peft_core.errors import MergeError, PeftCoreError, UnsupportedOperation
from peft_core.plugins import registry
from peft_core.serialization import get_peft_model_state_dict
from peft_core_ln_tuning import LNTuningConfig, LNTuningLayer


def _two_adapters():
    model = get_peft_model(mlp(), LNTuningConfig(target_modules=["norm"]), adapter_name="a")
    model.add_adapter("b", LNTuningConfig(target_modules=["norm"]))
    perturb_trainable(model, seed=0, scale=0.5, only="ln_tuning_layers")
    return model.eval(), model.base_model.model.norm


def test_each_adapter_is_a_trained_copy_and_only_the_copy_trains():
    model = get_peft_model(mlp(), LNTuningConfig(target_modules=["norm"]))
    layer = model.base_model.model.norm
    assert isinstance(layer, LNTuningLayer)
    copy = layer.ln_tuning_layers["default"]
    assert type(copy) is torch.nn.LayerNorm and copy is not layer.base_layer
    assert torch.equal(copy.weight, layer.base_layer.weight) and copy.weight.data_ptr() != layer.base_layer.weight.data_ptr()
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        "base_model.model.norm.ln_tuning_layers.default.weight", "base_model.model.norm.ln_tuning_layers.default.bias"]
    assert sorted(get_peft_model_state_dict(model)) == ["base_model.model.norm.ln_tuning_layers.bias",
                                                       "base_model.model.norm.ln_tuning_layers.weight"]


def test_merge_swaps_the_copy_in_and_unmerge_swaps_the_original_back():
    model, layer = _two_adapters()
    original, copy_a = layer.base_layer, layer.ln_tuning_layers["a"]
    x = token_batch(batch=3)
    expected = model_output(model, {"input_ids": x})
    model.merge_adapter()
    assert layer.base_layer is copy_a and layer.ln_tuning_layers["a"] is original
    assert max_diff(model_output(model, {"input_ids": x}), expected) == 0
    # saving while merged still saves the trained copy, not the original sitting in its slot
    saved = get_peft_model_state_dict(model, adapter_name="a")
    assert torch.equal(saved["base_model.model.norm.ln_tuning_layers.weight"], copy_a.weight)
    model.unmerge_adapter()
    assert layer.base_layer is original and layer.ln_tuning_layers["a"] is copy_a
    # merging b while a is merged puts the original back first
    model.merge_adapter(adapter_names=["a"])
    model.merge_adapter(adapter_names=["b"])
    assert layer.merged_adapters == ["b"] and layer.ln_tuning_layers["a"] is copy_a
    model.unmerge_adapter()
    assert layer.base_layer is original


def test_one_adapter_at_a_time_but_mixed_batches_work():
    model, layer = _two_adapters()
    with pytest.raises(UnsupportedOperation, match="one module can only be replaced by one copy"):
        model.set_adapter(["a", "b"])
    with pytest.raises(MergeError, match="one adapter at a time"):
        model.merge_adapter(adapter_names=["a", "b"])
    assert not layer.merged
    x = token_batch(batch=3)
    mixed = model_output(model, {"input_ids": x, "adapter_names": ["b", "__base__", "a"]})
    per = {}
    for name in ("a", "b"):
        model.set_adapter(name)
        per[name] = model_output(model, {"input_ids": x})
    with model.disable_adapter():
        per["__base__"] = model_output(model, {"input_ids": x})
    for row, name in enumerate(["b", "__base__", "a"]):
        torch.testing.assert_close(mixed[row], per[name][row])
    assert max_diff(per["a"], per["b"]) > 1e-3


def test_adding_an_adapter_while_merged_is_refused():
    model, _ = _two_adapters()
    model.merge_adapter()
    with pytest.raises(MergeError, match="unmerge first"):
        model.add_adapter("c", LNTuningConfig(target_modules=["norm"]))
    assert "c" not in model.peft_config


def test_bf16_base_keeps_an_fp32_copy_and_merges_at_base_precision():
    model = get_peft_model(tiny_llama().to(torch.bfloat16), LNTuningConfig())
    perturb_trainable(model, seed=1, scale=0.3)
    layer = model.base_model.model.model.norm
    assert layer.ln_tuning_layers["default"].weight.dtype == torch.float32
    x = {"input_ids": token_batch()}
    out = model_output(model, x)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    model.merge_adapter()
    assert layer.base_layer.weight.dtype == torch.bfloat16
    assert max_diff(model_output(model, x), out) < 0.1  # the copy rounded to bf16, as any merge into bf16
    model.unmerge_adapter()
    assert layer.ln_tuning_layers["default"].weight.dtype == torch.float32
    assert layer.base_layer.weight.dtype == torch.bfloat16


def test_defaults_validation_and_registration():
    model = get_peft_model(tiny_llama(), LNTuningConfig())
    assert model.peft_config["default"].target_modules == {"input_layernorm", "post_attention_layernorm", "norm"}
    assert sum(isinstance(m, LNTuningLayer) for m in model.modules()) == 5
    with pytest.raises(PeftCoreError, match="target_modules is not set"):
        get_peft_model(mlp(), LNTuningConfig())
    with pytest.raises(PeftCoreError, match="cannot adapt"):
        get_peft_model(tiny_llama(), LNTuningConfig(target_modules=["self_attn"]))
    spec = registry().get("LN_TUNING")
    assert spec.paper == "https://arxiv.org/abs/2312.11420"
    assert {c.value for c in spec.unsupported} >= {"multi_active", "weighted_combine"}
    from peft_core import LNTuningConfig as exported
    from peft_core import LNTuningModel

    assert exported is LNTuningConfig and LNTuningModel is spec.exports["LNTuningModel"]
