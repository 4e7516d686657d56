"""The QLoRA workflow end to end on a tiny Llama quantized by bitsandbytes on the CPU.

BitsAndBytesConfig → quantized load → prepare_model_for_kbit_training → get_peft_model →
train → save → load → merge. LoRA has no bitsandbytes file: all of this goes through the
generic adapter layer and the bnb plugin's weight hooks.
"""

from __future__ import annotations

import dataclasses
import warnings

import bitsandbytes as bnb
import pytest
import torch
from torch import nn

from peft_core import (
    Capability,
    LoraConfig,
    MergeError,
    MethodSpec,
    PeftModel,
    UnsupportedOperation,
    get_peft_model,
    hookimpl,
    prepare_model_for_kbit_training,
)
from peft_core.conformance.models import token_batch
from peft_core.layer import AdapterLayer
from peft_core.plugins import register_plugin, unregister_plugin
from peft_core.registry import LAYER_METHOD_CAPABILITIES
from peft_core.weights import dense_weight
from peft_core_bnb import dequantize_model, is_quantized_model
from peft_core_bnb.quant import rounding_bound

QUANTIZED = (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
LINEAR_NAMES = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def lora(**kw) -> LoraConfig:
    return LoraConfig(**{"r": 4, "lora_alpha": 8, "target_modules": "all-linear", "task_type": "CAUSAL_LM", **kw})


def adapted(model: nn.Module, std: float = 0.05, seed: int = 0, **kw) -> PeftModel:
    """A LoRA model whose B factors are small seeded random values, like a trained adapter's."""
    peft_model = get_peft_model(model, lora(**kw))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if ".lora_B." in name:
                param.copy_(torch.randn(param.shape, generator=gen) * std)
    return peft_model


def train(model: nn.Module, steps: int = 6, lr: float = 2e-2) -> list[float]:
    x = token_batch(4, 16)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    model.eval()
    return losses


def quantized_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.data.clone() for n, p in model.named_parameters() if isinstance(p, (bnb.nn.Params4bit, bnb.nn.Int8Params))}


def logits(model: nn.Module, x: torch.Tensor | None = None) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=token_batch(2, 9, seed=1) if x is None else x).logits


@pytest.mark.parametrize("bits", [4, 8])
def test_qlora_workflow(load_quantized, tmp_path, bits):
    model = prepare_model_for_kbit_training(load_quantized(bits))
    peft_model = get_peft_model(model, lora())

    # all-linear found exactly the quantized linears, not the (unquantized) lm_head
    layers = {n: m for n, m in peft_model.named_modules() if isinstance(m, AdapterLayer)}
    assert len(layers) == 14 and {n.rsplit(".", 1)[-1] for n in layers} == LINEAR_NAMES
    assert all(isinstance(m.base_layer, QUANTIZED) and m.description.quantized for m in layers.values())
    assert isinstance(peft_model.get_base_model().lm_head, nn.Linear)

    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert all(p.dtype == torch.float32 for n, p in peft_model.named_parameters() if n in trainable)
    frozen = quantized_snapshot(peft_model)
    others = {n: p.detach().clone() for n, p in peft_model.named_parameters() if n not in trainable and n not in frozen}

    losses = train(peft_model)
    assert losses[-1] < losses[0] - 0.05, losses
    # gradients crossed the quantized layers: the first layer's adapters trained too
    first = peft_model.base_model.model.model.layers[0].self_attn.q_proj
    assert first.lora_B["default"].weight.abs().sum() > 0
    # only adapter parameters moved
    assert all(torch.equal(t, dict(peft_model.named_parameters())[n].data) for n, t in frozen.items())
    assert all(torch.equal(t, dict(peft_model.named_parameters())[n]) for n, t in others.items())

    # save / load round trip is exact, onto a freshly quantized base
    x = token_batch(2, 9, seed=1)
    expected = logits(peft_model, x)
    peft_model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(load_quantized(bits), tmp_path)
    assert torch.equal(logits(loaded, x), expected)
    saved = peft_model.get_base_model().state_dict()
    for name, param in loaded.named_parameters():
        if ".lora_" in name:
            assert torch.equal(param, saved[name.removeprefix("base_model.model.")])

    # merging requantizes: each weight lands within the documented rounding of W + ΔW
    wanted = {n: dense_weight(m.base_layer) + m.get_delta_weight("default") for n, m in layers.items()}
    peft_model.merge_adapter()
    for name, layer in layers.items():
        err = (dense_weight(layer.base_layer) - wanted[name]).abs()
        assert err.le(rounding_bound(layer.base_layer, wanted[name])).all(), name
    merged = logits(peft_model, x)
    # ... and the logits stay close (measured here: nf4 0.11, int8 0.018 on logits of size ~0.5;
    # quantizing the base itself moves them by 0.03 / 0.002). See the plugin README.
    tolerance = {4: 0.3, 8: 0.05}[bits]
    assert (merged - expected).abs().max() < tolerance
    assert not torch.equal(merged, expected)


def test_8bit_merge_and_unload_returns_a_quantized_model_without_adapter_layers(load_quantized):
    peft_model = adapted(load_quantized(8))
    expected = logits(peft_model)
    model = peft_model.merge_and_unload()
    assert not any(isinstance(m, AdapterLayer) for m in model.modules())
    assert isinstance(model.model.layers[0].self_attn.q_proj, bnb.nn.Linear8bitLt)
    assert (logits(model) - expected).abs().max() < 0.02


def test_safe_merge_refuses_a_broken_adapter_and_leaves_the_quantized_weights(load_quantized):
    peft_model = adapted(load_quantized(4))
    before = quantized_snapshot(peft_model)
    with torch.no_grad():
        peft_model.base_model.model.model.layers[1].mlp.down_proj.lora_B["default"].weight[0, 0] = float("nan")
    with pytest.raises(MergeError):
        peft_model.merge_and_unload(safe_merge=True)
    with pytest.raises(MergeError):
        peft_model.merge_adapter(safe_merge=True)
    assert all(torch.equal(t, dict(peft_model.named_parameters())[n].data) for n, t in before.items())


def test_dequantized_merge_is_exact_and_saves_as_a_plain_model(load_quantized, tmp_path):
    """``dequantize_model(peft_model).merge_and_unload()``: no requantization rounding at all."""
    peft_model = adapted(load_quantized(4))
    expected = logits(peft_model)
    model = dequantize_model(peft_model).merge_and_unload()
    assert not is_quantized_model(model) and not any(isinstance(m, AdapterLayer) for m in model.modules())
    assert type(model.model.layers[0].mlp.up_proj) is nn.Linear
    torch.testing.assert_close(logits(model), expected, atol=1e-5, rtol=1e-5)

    model.save_pretrained(tmp_path)
    from transformers import AutoModelForCausalLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert getattr(reloaded.config, "quantization_config", None) is None
    assert not is_quantized_model(reloaded)
    torch.testing.assert_close(logits(reloaded), expected, atol=1e-5, rtol=1e-5)


def test_dequantize_model_keeps_the_merged_state_then_merging_is_exact(load_quantized):
    peft_model = adapted(load_quantized(4))
    peft_model.merge_adapter()
    merged = logits(peft_model)
    dequantize_model(peft_model)
    torch.testing.assert_close(logits(peft_model), merged, atol=1e-5, rtol=1e-5)
    layer = peft_model.base_model.model.model.layers[0].self_attn.v_proj
    assert layer.merged and not layer.description.quantized and type(layer.base_layer) is nn.Linear
    peft_model.unmerge_adapter()
    unmerged = logits(peft_model)
    peft_model.merge_adapter()
    torch.testing.assert_close(logits(peft_model), unmerged, atol=1e-5, rtol=1e-5)


def test_nb_trainable_parameters_count_packed_4bit_weights(load_quantized):
    model = get_peft_model(load_quantized(4), lora())
    trainable, total = model.get_nb_trainable_parameters()
    # 14 adapted linears: r·(in + out) each
    shapes = [(32, 32), (32, 16), (32, 16), (32, 32), (32, 64), (32, 64), (64, 32)] * 2
    assert trainable == sum(4 * (i + o) for i, o in shapes)
    plain = 2 * 97 * 32 + 5 * 32  # embeddings, head, norms
    assert total == trainable + plain + sum(i * o for i, o in shapes)


# -- a method that does not declare Capability.QUANTIZED_BASE -------------------------------------


@dataclasses.dataclass
class NoQuantConfig(LoraConfig):
    """LoRA's layers under a name whose MethodSpec does not claim quantized bases."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = "NOQUANTLR"


class _NoQuantPlugin:
    @hookimpl
    def peft_core_register_methods(self, registry):
        from peft_core_lora.layer import create_lora_layer

        registry.register(MethodSpec(
            name="NOQUANTLR", config_class=NoQuantConfig, prefix="noquantlr_", layer_factory=create_lora_layer,
            capabilities=LAYER_METHOD_CAPABILITIES,
            unsupported={Capability.QUANTIZED_BASE: "its update needs the exact base weight at every step"},
        ))


def test_method_without_quantized_base_capability_is_refused_with_its_reason(load_quantized):
    register_plugin(_NoQuantPlugin(), name="noquant-test-plugin")
    try:
        model = load_quantized(4)
        with pytest.raises(UnsupportedOperation, match="exact base weight at every step"):
            get_peft_model(model, NoQuantConfig(r=4, target_modules=["q_proj"]))
        assert not any(isinstance(m, AdapterLayer) for m in model.modules())
    finally:
        unregister_plugin("noquant-test-plugin")
