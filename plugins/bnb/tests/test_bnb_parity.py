"""QLoRA parity with Hugging Face PEFT (test-only oracle) on the same quantized base."""

from __future__ import annotations

import peft  # test-only oracle, pinned in requirements-test.txt
import pytest
import torch

import peft_core
from peft_core.conformance.models import token_batch
from peft_core.layer import AdapterLayer


pytestmark = pytest.mark.parity
X = token_batch(2, 9, seed=3)


def out(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=X).logits


def train_briefly(model, steps: int = 3) -> None:
    x = token_batch(4, 12)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    model.train()
    for _ in range(steps):
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


@pytest.mark.parametrize("bits", [4, 8])
def test_adapter_trained_here_loads_in_peft_with_the_same_outputs(load_quantized, tmp_path, bits):
    ours = peft_core.get_peft_model(
        peft_core.prepare_model_for_kbit_training(load_quantized(bits), use_gradient_checkpointing=False),
        peft_core.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    train_briefly(ours)
    expected = out(ours)
    ours.save_pretrained(tmp_path)
    base = peft.prepare_model_for_kbit_training(load_quantized(bits), use_gradient_checkpointing=False)
    theirs = peft.PeftModel.from_pretrained(base, tmp_path).eval()
    assert type(theirs.base_model.model.model.layers[0].mlp.up_proj).__module__.startswith("peft.tuners.lora.bnb")
    assert torch.equal(out(theirs), expected)


@pytest.mark.parametrize("bits", [4, 8])
def test_peft_adapter_loads_here_with_the_same_outputs(load_quantized, tmp_path, bits):
    theirs = peft.get_peft_model(
        load_quantized(bits), peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in theirs.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
    theirs.eval()
    expected = out(theirs)
    theirs.save_pretrained(tmp_path)
    ours = peft_core.PeftModel.from_pretrained(load_quantized(bits), tmp_path)
    assert sum(isinstance(m, AdapterLayer) for m in ours.modules()) == 14
    assert torch.equal(out(ours), expected)

    # merging into the quantized weights rounds exactly as PEFT does: same codes, same scales
    theirs.merge_adapter()
    ours.merge_adapter()
    ours_layers = dict(ours.base_model.model.named_modules())
    for name, module in theirs.base_model.model.named_modules():
        if hasattr(module, "base_layer") and name in ours_layers:
            a, b = ours_layers[name].base_layer, module.base_layer
            assert torch.equal(a.weight.data, b.weight.data), name
            if bits == 4:
                assert torch.equal(a.weight.quant_state.absmax, b.weight.quant_state.absmax), name
    assert torch.equal(out(ours), out(theirs))


def test_trainable_parameter_counts_match_peft(load_quantized):
    config = {"r": 8, "lora_alpha": 16, "target_modules": "all-linear", "task_type": "CAUSAL_LM"}
    ours = peft_core.get_peft_model(load_quantized(4), peft_core.LoraConfig(**config))
    theirs = peft.get_peft_model(load_quantized(4), peft.LoraConfig(**config))
    assert ours.get_nb_trainable_parameters() == theirs.get_nb_trainable_parameters()
    ours_targets = {n for n, m in ours.named_modules() if isinstance(m, AdapterLayer)}
    theirs_targets = {n for n, m in theirs.named_modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer")}
    assert ours_targets == theirs_targets
