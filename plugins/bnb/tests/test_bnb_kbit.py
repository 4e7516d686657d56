"""``prepare_model_for_kbit_training`` on bitsandbytes models (the core function, the plugin's descriptions)."""

from __future__ import annotations

import functools

import bitsandbytes as bnb
import torch

from peft_core import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from peft_core.conformance.models import tiny_llama, token_batch
from peft_core.kbit import is_loaded_in_kbit, quantized_weights


def checkpoint_kwargs(model) -> dict:
    layer = model.model.layers[0]
    assert layer.gradient_checkpointing
    func = layer._gradient_checkpointing_func
    assert isinstance(func, functools.partial)
    return func.keywords


def test_bf16_4bit_model_is_frozen_upcast_and_checkpointed(load_quantized):
    model = load_quantized(4, dtype=torch.bfloat16, bnb_4bit_compute_dtype=torch.bfloat16,
                           bnb_4bit_quant_storage=torch.bfloat16)
    packed = {n: (p.dtype, p.data.view(torch.int16).clone()) for n, p in model.named_parameters() if isinstance(p, bnb.nn.Params4bit)}
    assert packed and all(dtype == torch.bfloat16 for dtype, _ in packed.values())  # 4-bit codes in a bf16 container
    assert model.model.norm.weight.dtype == torch.bfloat16
    assert is_loaded_in_kbit(model) and len(quantized_weights(model)) == 14

    assert prepare_model_for_kbit_training(model) is model
    params = dict(model.named_parameters())
    assert not any(p.requires_grad for p in params.values())
    for name, (dtype, data) in packed.items():  # quantized weights untouched, even in a bf16 container
        assert params[name].dtype == dtype and torch.equal(params[name].data.view(torch.int16), data)  # bitwise
    others = [p for n, p in params.items() if n not in packed]
    assert others and all(p.dtype == torch.float32 for p in others)  # norms, embeddings, head
    assert checkpoint_kwargs(model) == {"use_reentrant": True}  # PEFT's effective default, made explicit
    # reentrant checkpointing needs the embedding output to require grad
    assert model.get_input_embeddings()(token_batch()).requires_grad


def test_training_through_checkpointed_4bit_layers_reaches_the_first_layer(load_quantized):
    model = prepare_model_for_kbit_training(load_quantized(4, dtype=torch.bfloat16, bnb_4bit_compute_dtype=torch.bfloat16))
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    peft_model.train()
    x = token_batch(2, 8)
    peft_model(input_ids=x, labels=x).loss.backward()
    first = peft_model.base_model.model.model.layers[0].self_attn.q_proj
    assert first.lora_B["default"].weight.grad.abs().sum() > 0
    assert first.lora_A["default"].weight.dtype == torch.float32


def test_non_reentrant_checkpointing_is_passed_through(load_quantized):
    model = prepare_model_for_kbit_training(load_quantized(8), gradient_checkpointing_kwargs={"use_reentrant": False})
    assert checkpoint_kwargs(model) == {"use_reentrant": False}


def test_checkpointing_can_be_left_off(load_quantized):
    model = prepare_model_for_kbit_training(load_quantized(4), use_gradient_checkpointing=False)
    assert not model.model.layers[0].gradient_checkpointing
    assert not any(p.requires_grad for p in model.parameters())


def test_unquantized_model_is_only_frozen_and_upcast():
    model = tiny_llama().to(torch.float16)
    assert not is_loaded_in_kbit(model)
    prepare_model_for_kbit_training(model)
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in model.parameters())
    assert not model.model.layers[0].gradient_checkpointing  # as PEFT: only quantized models
