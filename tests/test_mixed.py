"""Mixed-method models: training, refusals, partial merges, deletion (the conformance pair check covers the rest)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from peft_core import PeftMixedModel, PeftModel, get_peft_model
from peft_core.errors import MergeError, UnsupportedOperation
from peft_core.layer import AdapterLayer

LoraConfig = pytest.importorskip("peft_core_lora").LoraConfig
IA3Config = pytest.importorskip("peft_core_ia3").IA3Config
OFTConfig = pytest.importorskip("peft_core_oft").OFTConfig


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, vocab_size=64))


def test_mixed_model_trains_both_methods_and_not_the_base():
    model = get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]), "lora", mixed=True)
    assert isinstance(model, PeftMixedModel)
    model.add_adapter("ia3", IA3Config(target_modules=["v_proj", "down_proj"], feedforward_modules=["down_proj"]))
    model.set_adapter(["lora", "ia3"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n or ".ia3_" in n for n in trainable)
    assert any(".ia3_" in n for n in trainable) and any(".lora_" in n for n in trainable)
    base = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    torch.manual_seed(1)
    ids = torch.randint(0, 64, (4, 12))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0] - 0.05, losses
    for name, p in model.named_parameters():
        if name in start:
            assert not torch.equal(p, start[name]), f"{name} (adapter) did not train"
        else:
            assert torch.equal(p, base[name]), f"{name} (base) changed"
    # v_proj carries both methods: the later one (IA³) wraps LoRA's layer
    v = model.base_model.model.model.layers[0].self_attn.v_proj
    assert v.method == "IA3" and isinstance(v.base_layer, AdapterLayer) and v.base_layer.method == "LORA"


def test_plain_peft_model_mixes_too_and_refuses_methods_that_cannot():
    model = get_peft_model(tiny_llama(), LoraConfig(r=2, target_modules=["q_proj"]), "lora")
    assert type(model) is PeftModel
    model.add_adapter("oft", OFTConfig(r=0, oft_block_size=8, target_modules=["q_proj"]))  # mixing is the core's
    adalora = pytest.importorskip("peft_core_adalora").AdaLoraConfig
    with pytest.raises(UnsupportedOperation, match="ADALORA"):
        model.add_adapter("ada", adalora(target_modules=["q_proj"], total_step=10))
    with pytest.raises(UnsupportedOperation, match="mixed model.*ADALORA.*LoRA's tensor names"):
        get_peft_model(tiny_llama(), adalora(target_modules=["q_proj"], total_step=10), mixed=True)


def test_merging_a_rotation_over_unmerged_lora_is_refused_and_full_merge_is_exact():
    model = get_peft_model(tiny_llama(), LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False), "lora",
                           mixed=True)
    model.add_adapter("oft", OFTConfig(r=0, oft_block_size=8, target_modules=["q_proj"]))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "oft_R" in n:
                p.normal_(0, 0.1)
    model.set_adapter(["lora", "oft"])
    model.eval()
    ids = torch.randint(0, 64, (2, 7))
    with torch.no_grad():
        expected = model(ids).logits
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(MergeError, match="merge those first"):
        model.merge_adapter(["oft"])  # OFT (outer) would rotate W alone, not W + BA
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    model.merge_adapter()
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, expected, atol=1e-5, rtol=1e-5)
    model.unmerge_adapter()
    plain = model.merge_and_unload()
    assert not any(isinstance(m, AdapterLayer) for m in plain.modules())
    with torch.no_grad():
        torch.testing.assert_close(plain(ids).logits, expected, atol=1e-5, rtol=1e-5)


def test_deleting_the_inner_method_unwraps_it_from_under_the_outer_one():
    model = get_peft_model(tiny_llama(), LoraConfig(r=2, target_modules=["q_proj"]), "lora", mixed=True)
    model.add_adapter("ia3", IA3Config(target_modules=["q_proj"], feedforward_modules=[]))
    model.delete_adapter("lora")
    q = model.base_model.model.model.layers[0].self_attn.q_proj
    assert q.method == "IA3" and isinstance(q.base_layer, nn.Linear)
    assert list(model.peft_config) == ["ia3"]
