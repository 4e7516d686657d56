"""Behaviour of the initialisations the shared suite does not pin down: the math, seeds, refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import peft_core
from peft_core import LoftQConfig, LoraConfig, get_peft_model
from peft_core.conformance.models import mlp, tiny_llama, token_batch
from peft_core.conformance.parity import load_quantized, model_output, perturb_trainable
from peft_core.errors import ConfigError, PluginNotInstalledError, UnsupportedOperation
from peft_core.weights import dense_weight
from peft_core_lora_inits.loftq import loftq_decompose, quantize_roundtrip

INPUTS = {"input_ids": token_batch()}


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(12, 10)
        self.conv = nn.Conv1d(10, 10, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.lin(x).unsqueeze(-1)).squeeze(-1)


def _layer(model, init, r=4, alpha=8, **kwargs):
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules=["lin"],
                                                  init_lora_weights=init, **kwargs))
    return peft_model, peft_model.base_model.model.lin


def test_pissa_takes_the_principal_part_and_leaves_the_residual():
    original = Net().lin.weight.detach().clone()
    _, layer = _layer(Net(), "pissa")
    A, B, s = layer.lora_A["default"].weight, layer.lora_B["default"].weight, layer.scaling["default"]
    U, S, Vh = torch.linalg.svd(original)
    torch.testing.assert_close(s * B @ A, U[:, :4] @ torch.diag(S[:4]) @ Vh[:4], atol=1e-5, rtol=0)
    torch.testing.assert_close(dense_weight(layer) + s * B @ A, original, atol=1e-6, rtol=0)
    # the residual keeps exactly the minor singular values
    torch.testing.assert_close(torch.linalg.svdvals(dense_weight(layer))[:6], S[4:], atol=1e-5, rtol=0)


def test_olora_factors_are_orthonormal_q_and_upper_triangular_r():
    original = Net().lin.weight.detach().clone()
    _, layer = _layer(Net(), "olora")
    A, B, s = layer.lora_A["default"].weight, layer.lora_B["default"].weight, layer.scaling["default"]
    torch.testing.assert_close(B.T @ B, torch.eye(4), atol=1e-5, rtol=0)
    assert torch.equal(A[:, :4], torch.triu(A[:, :4]))
    torch.testing.assert_close(dense_weight(layer) + s * B @ A, original, atol=1e-6, rtol=0)


def test_orthogonal_starts_at_zero_product_with_nonzero_factors_and_keeps_the_base():
    original = Net().lin.weight.detach().clone()
    _, layer = _layer(Net(), "orthogonal")
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    assert A.abs().min() > 0 or A.abs().max() > 1e-3
    assert B.abs().max() > 1e-3
    torch.testing.assert_close(B @ A, torch.zeros(10, 12), atol=1e-6, rtol=0)
    assert torch.equal(dense_weight(layer), original)


@pytest.mark.parametrize("init", ["pissa_niter_2", "orthogonal"])
def test_random_inits_are_deterministic_under_a_seed(init):
    first = _layer(Net(), init)[1].lora_A["default"].weight.detach().clone()
    again = _layer(Net(), init)[1].lora_A["default"].weight.detach().clone()
    assert torch.equal(first, again)
    torch.manual_seed(99)
    other = get_peft_model(Net(), LoraConfig(r=4, target_modules=["lin"], init_lora_weights=init))
    assert not torch.equal(other.base_model.model.lin.lora_A["default"].weight, first)


def test_loftq_rounds_lower_the_error_and_the_base_holds_quantized_values():
    torch.manual_seed(0)
    weight = torch.randn(32, 64)
    quantization_error = (weight - quantize_roundtrip(weight, 4)).norm()
    errors = []
    for iters in (1, 4):
        base, A, B = loftq_decompose(weight, bits=4, rank=8, iters=iters)
        assert torch.equal(quantize_roundtrip(base, 4), base)  # a fixed point: already NF4 values
        errors.append((weight - base - B @ A).norm())
    assert errors[0] < quantization_error and errors[1] < errors[0]


def test_loftq_config_is_exported_validated_and_required():
    assert peft_core.LoftQConfig is LoftQConfig
    assert peft_core.replace_lora_weights_loftq.__module__ == "peft_core_lora_inits.loftq"
    with pytest.raises(ConfigError, match="loftq_bits"):
        LoftQConfig(loftq_bits=3)
    with pytest.raises(ConfigError, match="loftq_config"):
        _layer(Net(), "loftq")
    with pytest.raises(ConfigError, match="loftq_iter"):
        _layer(Net(), "loftq", loftq_config={"loftq_bits": 4, "loftq_iter": 0})
    with pytest.raises(ConfigError, match="init_lora_weights='loftq'"):
        _layer(Net(), True, loftq_config=LoftQConfig())
    model, _ = _layer(Net(), "loftq", loftq_config=LoftQConfig(loftq_bits=8, loftq_iter=2))
    assert model.peft_config["default"].loftq_config == {"loftq_bits": 8, "loftq_iter": 2}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"init_lora_weights": "orthogonal", "r": 3}, "even"),
    ({"init_lora_weights": "orthogonal", "rank_pattern": {"lin": 5}}, "even"),
    ({"init_lora_weights": "pissa_niter_x"}, "pissa_niter_<iterations>"),
    ({"init_lora_weights": "pissa", "r": 11}, "lower r"),
    ({"init_lora_weights": "olora", "target_modules": ["conv"]}, "linear layers only"),
])
def test_bad_settings_are_refused_before_the_model_changes(kwargs, message):
    model = Net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = {"r": 4, "target_modules": ["lin"], **kwargs}
    with pytest.raises(ConfigError, match=message):
        get_peft_model(model, LoraConfig(**config))
    if "target_modules" not in kwargs and "r" not in kwargs:  # refused by validation: nothing touched
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_embeddings_get_loras_own_init_as_in_peft():
    torch.manual_seed(0)
    model = get_peft_model(mlp(), LoraConfig(r=2, target_modules=["emb", "lin0"], init_lora_weights="pissa"))
    emb = model.base_model.model.emb
    assert torch.equal(emb.lora_embedding_A["default"], torch.zeros_like(emb.lora_embedding_A["default"]))
    assert torch.equal(emb.base_layer.weight, mlp().emb.weight)


def test_conversion_needs_the_initial_adapter_and_a_converting_plugin(tmp_path):
    torch.manual_seed(0)
    model = get_peft_model(tiny_llama(), LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights="pissa"))
    with pytest.raises(ConfigError, match="no adapter_config.json"):
        model.save_pretrained(tmp_path / "out", path_initial_model_for_weight_conversion=str(tmp_path / "missing"))
    ia3 = get_peft_model(tiny_llama(), peft_core.IA3Config(target_modules=["q_proj"], feedforward_modules=[]))
    with pytest.raises(UnsupportedOperation, match="no installed plugin converts IA3"):
        ia3.save_pretrained(tmp_path / "ia3", path_initial_model_for_weight_conversion=str(tmp_path / "missing"))


def test_converted_pissa_applies_to_the_original_base(tmp_path):
    torch.manual_seed(0)
    model = get_peft_model(tiny_llama(), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                                    init_lora_weights="pissa", rank_pattern={"v_proj": 4}))
    model.save_pretrained(tmp_path / "init")
    perturb_trainable(model, seed=3)
    trained = model_output(model, INPUTS)
    model.save_pretrained(tmp_path / "lora", path_initial_model_for_weight_conversion=str(tmp_path / "init"))
    loaded = peft_core.PeftModel.from_pretrained(tiny_llama(), tmp_path / "lora")
    config = loaded.peft_config["default"]
    assert (config.r, config.lora_alpha, config.rank_pattern, config.init_lora_weights) == (4, 8, {"v_proj": 8}, True)
    torch.testing.assert_close(model_output(loaded, INPUTS), trained, atol=1e-5, rtol=0)


def test_loftq_without_bitsandbytes_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "bitsandbytes.functional", None)
    with pytest.raises(PluginNotInstalledError, match=r"peft-core-lora-inits\[loftq\]"):
        quantize_roundtrip(torch.randn(4, 64), 4)


def test_a_missing_plugin_is_named_in_the_install_hint():
    from peft_core.known import distribution_for_name

    assert distribution_for_name("LoftQConfig") == "peft-core-lora-inits"
    assert distribution_for_name("replace_lora_weights_loftq") == "peft-core-lora-inits"


def test_quantized_bases_pissa_and_loftq_refuse_olora_works(tmp_path):
    tiny_llama().save_pretrained(tmp_path)
    model = load_quantized(tmp_path, 4)
    for init, extra in (("pissa", {}), ("loftq", {"loftq_config": LoftQConfig()})):
        with pytest.raises(ConfigError, match="quantize"):
            get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=init, **extra))
    before = model_output(model, INPUTS)
    olora = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights="olora"))
    after = model_output(olora, INPUTS)
    # the residual is requantized (NF4 rounding), so the output moves a little, not a lot
    assert torch.isfinite(after).all() and 0 < (after - before).abs().max() < 0.5
