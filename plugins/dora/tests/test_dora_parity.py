"""DoRA against Hugging Face PEFT (peft==0.21.2): same files, same numbers, both ways.

Adapters have random factors and a perturbed magnitude (so neither the direction nor the
magnitude is at its initial value); outputs must agree to 1e-5 in fp32 in both directions,
and ``merge_and_unload`` must give the same weights.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from peft_core import LoraConfig, PeftModel, get_peft_model
from peft_core.conformance.models import convnet, mlp, tiny_gpt2, tiny_llama, token_batch

peft = pytest.importorskip("peft")

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

ATOL = 1e-5


def _tokens():
    return {"input_ids": token_batch()}


def _images():
    gen = torch.Generator().manual_seed(0)
    return {"pixel_values": torch.randn(2, 3, 8, 8, generator=gen), "labels": torch.tensor([1, 7])}


CASES = {
    "llama": (tiny_llama, _tokens, {"target_modules": ["q_proj", "v_proj", "down_proj", "gate_proj"], "r": 4,
                                    "lora_alpha": 8}),
    "llama_all_linear_rslora": (tiny_llama, _tokens, {"target_modules": "all-linear", "r": 2, "use_rslora": True}),
    "mlp_embedding_conv1d": (mlp, _tokens, {"target_modules": ["emb", "lin0", "conv1d"], "r": 3, "lora_alpha": 5}),
    "convnet_conv2d_embedding": (convnet, _images, {"target_modules": ["conv0", "conv1", "emb", "head"], "r": 2,
                                                    "lora_alpha": 7}),
    "gpt2_conv1d": (tiny_gpt2, _tokens, {"target_modules": ["c_attn", "c_fc"], "r": 4, "fan_in_fan_out": True}),
}


def _out(model, inputs):
    with torch.no_grad():
        out = model(**inputs)
    return out if isinstance(out, torch.Tensor) else out.logits


def _randomize(model, seed):
    """Move every trainable tensor (factors and magnitudes) off its initial value."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * 0.2)
                if "lora_magnitude_vector" in name:
                    p.mul_(1.5)


def _ours(build, kwargs):
    model = get_peft_model(build(), LoraConfig(use_dora=True, init_lora_weights=False, **kwargs))
    _randomize(model, 1)
    return model.eval()


def _theirs(build, kwargs):
    model = peft.get_peft_model(build(), peft.LoraConfig(use_dora=True, init_lora_weights=False, **kwargs))
    _randomize(model, 2)
    return model.eval()


@pytest.mark.parametrize("case", sorted(CASES))
def test_peft_saved_dora_loads_here_identically(case, tmp_path):
    build, inputs, kwargs = CASES[case]
    theirs = _theirs(build, kwargs)
    theirs.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert any(k.endswith("lora_magnitude_vector") for k in state)
    ours = PeftModel.from_pretrained(build(), tmp_path).eval()
    x = inputs()
    expected = _out(theirs, x)
    assert not torch.allclose(expected, _out(build(), x), atol=1e-3)  # the adapter really does something
    torch.testing.assert_close(_out(ours, x), expected, atol=ATOL, rtol=0)
    # merged: the same weights in both libraries
    ours_merged = ours.merge_and_unload().state_dict()
    theirs_merged = theirs.merge_and_unload().state_dict()
    assert set(ours_merged) == set(theirs_merged)
    for key, value in theirs_merged.items():
        torch.testing.assert_close(ours_merged[key], value, atol=ATOL, rtol=0, msg=key)


@pytest.mark.parametrize("case", sorted(CASES))
def test_our_dora_loads_in_peft_identically(case, tmp_path):
    build, inputs, kwargs = CASES[case]
    ours = _ours(build, kwargs)
    ours.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["use_dora"] is True and config["peft_type"] == "LORA"
    theirs = peft.PeftModel.from_pretrained(build(), tmp_path).eval()
    x = inputs()
    expected = _out(ours, x)
    torch.testing.assert_close(_out(theirs, x), expected, atol=ATOL, rtol=0)
    # the same keys and shapes PEFT itself writes for this config
    ours_state = load_file(str(tmp_path / "adapter_model.safetensors"))
    ref = _theirs(build, kwargs)
    ref.save_pretrained(tmp_path / "ref")
    ref_state = load_file(str(tmp_path / "ref" / "adapter_model.safetensors"))
    assert {k: tuple(v.shape) for k, v in ours_state.items()} == {k: tuple(v.shape) for k, v in ref_state.items()}


def test_same_seed_same_adapter_as_peft():
    """Created from the same seed, both libraries build the same factors and magnitudes (init included)."""
    build, _, kwargs = CASES["convnet_conv2d_embedding"]
    torch.manual_seed(5)
    ours = get_peft_model(build(), LoraConfig(use_dora=True, init_lora_weights=False, **kwargs))
    torch.manual_seed(5)
    theirs = peft.get_peft_model(build(), peft.LoraConfig(use_dora=True, init_lora_weights=False, **kwargs))
    from peft import get_peft_model_state_dict as peft_state

    from peft_core import get_peft_model_state_dict

    a, b = get_peft_model_state_dict(ours), peft_state(theirs)
    assert set(a) == set(b)
    for key in b:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-6, msg=key)


def test_magnitude_shapes_match_peft_format():
    model = _ours(convnet, {"target_modules": ["conv0", "emb", "head"], "r": 2})
    from peft_core import get_peft_model_state_dict

    shapes = {k: tuple(v.shape) for k, v in get_peft_model_state_dict(model).items() if "magnitude" in k}
    assert shapes == {"base_model.model.conv0.lora_magnitude_vector": (1, 8, 1, 1),
                      "base_model.model.emb.lora_magnitude_vector": (8,),
                      "base_model.model.head.lora_magnitude_vector": (10,)}
