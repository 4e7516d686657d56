"""Mixed-method models against Hugging Face PEFT's ``PeftMixedModel`` (LoRA + OFT, LoRA + LoHa).

PEFT's mixed model cannot save, so a mix there is built from adapters each saved by a
plain PEFT model; the same directories load here, and the directories our mixed model saves
load there. Both orders of adding the two methods are compared, since the later method's
layer wraps the earlier one's on a module both target.
"""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import peft_core
from peft_core.plugins import registry

peft = pytest.importorskip("peft")
pytestmark = pytest.mark.parity

TARGETS = ["q_proj", "v_proj", "up_proj"]


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=101)
    return LlamaForCausalLM(config).eval()


def hf_config(kind: str):
    if kind == "lora":
        return peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False)
    if kind == "oft":
        return peft.OFTConfig(r=0, oft_block_size=8, target_modules=TARGETS)
    if kind == "loha":
        return peft.LoHaConfig(r=4, alpha=8, target_modules=TARGETS, init_weights=False)
    raise ValueError(kind)


def saved_by_peft(tmp_path, kind: str, seed: int):
    """A non-trivial adapter of ``kind`` saved by a plain PEFT model; its directory."""
    torch.manual_seed(seed)
    model = peft.get_peft_model(tiny_llama(), hf_config(kind))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=gen) * 0.1)
    out = tmp_path / f"peft-{kind}"
    model.save_pretrained(out)
    return out


def peft_mix(dirs, first: str, second: str):
    """PEFT's mixed model holding the adapters saved in ``dirs``, ``first`` added first.

    Built with ``get_peft_model(..., mixed=True)`` and PEFT's state-dict loader because its
    ``PeftMixedModel.from_pretrained`` refuses OFT; each adapter's weights go in right after it
    is added, while its layers are still the outermost (the keys of a saved adapter name the
    module, not a stacking position).
    """
    from safetensors.torch import load_file

    model = None
    for name in (first, second):
        config = peft.PeftConfig.from_pretrained(dirs[name])
        config.inference_mode = True
        if model is None:
            model = peft.get_peft_model(tiny_llama(), config, adapter_name=name, mixed=True)
        else:
            model.add_adapter(name, config)
        peft.set_peft_model_state_dict(model, load_file(dirs[name] / "adapter_model.safetensors"), adapter_name=name)
    model.set_adapter([first, second])
    return model.eval()


INPUT = torch.tensor([[5, 17, 3, 99, 42, 7], [1, 2, 3, 4, 5, 6]])

PAIRS = [("lora", "oft"), ("oft", "lora"), ("lora", "loha"), ("loha", "lora")]


def _need(*kinds: str) -> None:
    for kind in kinds:
        if kind.upper() not in registry():
            pytest.skip(f"the {kind} plugin is not installed")  # LoHa ships in its own distribution


@pytest.mark.parametrize(("first", "second"), PAIRS)
def test_peft_saved_adapters_mix_here_as_in_peft(tmp_path, first, second):
    _need(first, second)
    dirs = {first: saved_by_peft(tmp_path, first, 1), second: saved_by_peft(tmp_path, second, 2)}

    theirs = peft_mix(dirs, first, second)
    ours = peft_core.PeftMixedModel.from_pretrained(tiny_llama(), dirs[first], adapter_name=first)
    ours.load_adapter(dirs[second], adapter_name=second)
    ours.set_adapter([first, second])

    with torch.no_grad():
        expected, got = theirs(INPUT).logits, ours(INPUT).logits
        base = tiny_llama()(INPUT).logits
    assert (expected - base).abs().max() > 1e-3  # the mix does something
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)

    merged = ours.merge_and_unload()
    with torch.no_grad():
        torch.testing.assert_close(merged(INPUT).logits, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("first", "second"), PAIRS)
def test_our_saved_mix_loads_in_peft(tmp_path, first, second):
    _need(first, second)
    dirs = {first: saved_by_peft(tmp_path, first, 3), second: saved_by_peft(tmp_path, second, 4)}
    ours = peft_core.PeftMixedModel.from_pretrained(tiny_llama(), dirs[first], adapter_name=first, is_trainable=True)
    ours.load_adapter(dirs[second], adapter_name=second, is_trainable=True)
    ours.set_adapter([first, second])
    with torch.no_grad():  # train-like change so the saved tensors are ours, not PEFT's
        for param in ours.parameters():
            if param.requires_grad:
                param.mul_(1.5)
    ours.eval()
    ours.save_pretrained(tmp_path / "ours")

    theirs = peft_mix({k: tmp_path / "ours" / k for k in (first, second)}, first, second)
    with torch.no_grad():
        torch.testing.assert_close(theirs(INPUT).logits, ours(INPUT).logits, atol=1e-5, rtol=1e-5)
