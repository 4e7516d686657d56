"""Helpers: rescale_adapter_scale, check_if_peft_model, forward/generate signature updates."""

from __future__ import annotations

import inspect
import json

import pytest
import torch

from peft_core import (
    ConfigError,
    LoraConfig,
    MergeError,
    PeftModel,
    PeftModelForCausalLM,
    UnsupportedOperation,
    check_if_peft_model,
    get_peft_model,
    prepare_model_for_compiled_hotswap,
    rescale_adapter_scale,
    update_forward_signature,
    update_generate_signature,
    update_signature,
)
from peft_core.conformance.models import mlp, tiny_llama, token_batch

X = token_batch(2, 5)


def lora_mlp(targets=("lin1",)):
    torch.manual_seed(0)
    return get_peft_model(mlp(), LoraConfig(r=4, target_modules=list(targets), init_lora_weights=False))


def run(model):
    with torch.no_grad():
        return model(X)


# -- rescale_adapter_scale ------------------------------------------------------------------------


@pytest.mark.parametrize("multiplier", [0.0, 0.5, 2, -1.0])
def test_rescale_interpolates_the_adapter_delta(multiplier):
    model = lora_mlp()  # only the output layer: the delta scales linearly at the output
    with model.disable_adapter():
        base = run(model)
    full = run(model)
    with rescale_adapter_scale(model, multiplier):
        torch.testing.assert_close(run(model), base + multiplier * (full - base), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(run(model), full)


def test_rescale_restores_after_an_error_and_keeps_tensor_scalings():
    model = lora_mlp()
    prepare_model_for_compiled_hotswap(model)  # scalings become tensors
    layer = model.base_model.model.lin1
    scaling = layer.scaling["default"]
    full = run(model)
    with pytest.raises(RuntimeError):
        with rescale_adapter_scale(model, 0.1):
            raise RuntimeError("boom")
    assert layer.scaling["default"] is scaling
    torch.testing.assert_close(run(model), full)


def test_rescale_refusals():
    model = lora_mlp()
    with pytest.raises(ConfigError):
        with rescale_adapter_scale(model, "2"):
            pass
    with pytest.raises(UnsupportedOperation):
        with rescale_adapter_scale(mlp(), 0.5):
            pass
    model.merge_adapter()
    with pytest.raises(MergeError):
        with rescale_adapter_scale(model, 0.5):
            pass


# -- check_if_peft_model ------------------------------------------------------------------------


def test_check_if_peft_model(tmp_path):
    lora_mlp().save_pretrained(tmp_path / "adapter")
    assert check_if_peft_model(tmp_path / "adapter") is True
    assert check_if_peft_model(str(tmp_path / "adapter")) is True
    assert check_if_peft_model(tmp_path / "missing") is False
    assert check_if_peft_model(tmp_path) is False  # a directory without adapter_config.json
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "adapter_config.json").write_text("{not json")
    assert check_if_peft_model(bad) is False
    (bad / "adapter_config.json").write_text(json.dumps({"peft_type": "NO_SUCH_METHOD"}))
    assert check_if_peft_model(bad) is False
    # a Hub id is never looked up: it is not a local directory
    assert check_if_peft_model("some-user/some-adapter") is False


# -- signatures ---------------------------------------------------------------------------------


def test_update_forward_signature_copies_the_base_signature_for_this_model_only():
    model = get_peft_model(tiny_llama(), LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    other = get_peft_model(tiny_llama(), LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    assert "input_ids" not in inspect.signature(model.forward).parameters
    update_forward_signature(model)
    params = inspect.signature(model.forward).parameters
    assert "input_ids" in params and "attention_mask" in params
    assert model.forward.__doc__ == type(model.get_base_model()).forward.__doc__
    assert "input_ids" not in inspect.signature(other.forward).parameters  # the class is untouched
    assert "input_ids" not in inspect.signature(PeftModelForCausalLM.forward).parameters
    ids = token_batch(1, 4)
    with torch.no_grad():  # still our forward, with routing support
        torch.testing.assert_close(model(input_ids=ids).logits, model(input_ids=ids, adapter_names=["default"]).logits)


def test_update_generate_signature_and_update_signature():
    model = get_peft_model(tiny_llama(), LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    update_generate_signature(model)
    assert "generation_config" in inspect.signature(model.generate).parameters
    model2 = get_peft_model(tiny_llama(), LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    update_signature(model2, "all")
    assert "input_ids" in inspect.signature(model2.forward).parameters
    assert "generation_config" in inspect.signature(model2.generate).parameters
    with pytest.raises(ConfigError):
        update_signature(model2, "backward")
    plain = lora_mlp()
    assert isinstance(plain, PeftModel)
    update_generate_signature(plain)  # base has no generate: nothing to copy, no error
    update_forward_signature(plain)
    assert "input_ids" in inspect.signature(plain.forward).parameters
