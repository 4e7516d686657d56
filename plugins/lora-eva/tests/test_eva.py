"""EVA's own behaviour: what initialisation changes, rank-0 layers, determinism, clear errors."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import peft_core
from peft_core import LoraConfig, get_peft_model
from peft_core.conformance.models import convnet, tiny_llama
from peft_core.errors import ConfigError
from peft_core_lora_eva import EvaConfig, get_eva_state_dict, initialize_lora_eva_weights
from peft_core_lora_eva.load import shortest_distinguishing_suffixes

torch.set_num_threads(1)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TARGETS = ["q_proj", "v_proj", "o_proj", "down_proj"]


def batches(n=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(0, 97, (4, 12), generator=gen)} for _ in range(n)]


def eva_model(**eva):
    config = LoraConfig(r=4, target_modules=TARGETS, init_lora_weights="eva", eva_config=EvaConfig(**eva))
    return get_peft_model(tiny_llama(), config)


def test_exported_from_peft_core():
    assert peft_core.EvaConfig is EvaConfig
    assert peft_core.initialize_lora_eva_weights is initialize_lora_eva_weights
    assert peft_core.get_eva_state_dict is get_eva_state_dict


def test_initialisation_writes_a_and_keeps_the_model_unchanged():
    model = eva_model(tau=0.9)
    inputs = batches(1, seed=5)[0]
    before = model(**inputs).logits
    kaiming = model.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"].weight.clone()
    initialize_lora_eva_weights(model, batches(), show_progress_bar=False)
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    a = layer.lora_A["default"].weight
    assert a.shape != kaiming.shape or not torch.allclose(a, kaiming)
    # rows of A are orthonormal principal directions (whiten=False)
    torch.testing.assert_close(a @ a.T, torch.eye(a.shape[0]), atol=1e-5, rtol=0)
    assert torch.equal(layer.lora_B["default"].weight, torch.zeros_like(layer.lora_B["default"].weight))
    torch.testing.assert_close(model(**inputs).logits, before)
    assert all(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)


def test_deterministic_for_the_same_batches():
    first, second = eva_model(tau=0.9), eva_model(tau=0.9)
    initialize_lora_eva_weights(first, batches(), show_progress_bar=False)
    torch.manual_seed(1234)  # the global RNG does not matter: EVA's randomised SVD has its own seed
    initialize_lora_eva_weights(second, batches(), show_progress_bar=False)
    a = {k: v for k, v in first.state_dict().items() if "lora_A" in k}
    b = {k: v for k, v in second.state_dict().items() if "lora_A" in k}
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_rank_zero_removes_the_adapter_and_other_ranks_resize():
    model = eva_model()
    names = [n for n, m in model.named_modules() if hasattr(m, "lora_A")]
    state = {n: torch.zeros(0, model.get_submodule(n).lora_A["default"].in_features) for n in names[:1]}
    q = torch.linalg.qr(torch.randn(32, 6))[0].T  # 6 orthonormal rows
    state.update({n: q for n in names[1:] if model.get_submodule(n).lora_A["default"].in_features == 32})
    down = [n for n in names[1:] if n not in state]
    state.update({n: torch.linalg.qr(torch.randn(64, 4))[0].T for n in down})
    initialize_lora_eva_weights(model, eva_state_dict=state)
    assert type(model.get_submodule(names[0])) is nn.Linear  # the plain module is back
    config = model.peft_config["default"]
    stripped = [n.removeprefix("base_model.model.") for n in names]
    assert stripped[0] not in config.target_modules
    assert sorted(config.target_modules) == sorted(stripped[1:])
    resized = [n for n in names[1:] if n not in down]
    assert {k: v for k, v in config.rank_pattern.items()} == {n.removeprefix("base_model.model."): 6 for n in resized}
    # adjust_scaling_factors keeps alpha / r: alpha grows with the rank
    assert all(config.alpha_pattern[k] == pytest.approx(8 * 6 / 4) for k in config.rank_pattern)
    layer = model.get_submodule(resized[0])
    assert layer.r["default"] == 6 and layer.scaling["default"] == pytest.approx(8 / 4)
    torch.testing.assert_close(layer.lora_A["default"].weight, q)


def test_state_dict_keys_of_a_plain_model_load_into_the_peft_model():
    config = LoraConfig(r=4, target_modules=TARGETS, init_lora_weights="eva", eva_config=EvaConfig(tau=0.9))
    state = get_eva_state_dict(tiny_llama(), batches(), config, show_progress_bar=False)
    assert all(not k.startswith("base_model") for k in state)
    model = get_peft_model(tiny_llama(), config)
    initialize_lora_eva_weights(model, eva_state_dict=state)
    key = next(iter(state))
    torch.testing.assert_close(model.get_submodule("base_model.model." + key).lora_A["default"].weight, state[key])


def test_clear_errors():
    with pytest.raises(ConfigError, match="PeftModel"):
        initialize_lora_eva_weights(tiny_llama(), batches())
    plain = get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules=TARGETS))
    with pytest.raises(ConfigError, match="init_lora_weights='eva'"):
        initialize_lora_eva_weights(plain, batches())
    with pytest.raises(ConfigError, match="dataloader"):
        initialize_lora_eva_weights(eva_model())
    with pytest.raises(ConfigError, match="empty"):
        initialize_lora_eva_weights(eva_model(), [])
    with pytest.raises(ConfigError, match="peft_config"):
        get_eva_state_dict(tiny_llama(), batches())
    with pytest.raises(ConfigError, match="rho"):
        EvaConfig(rho=0.5)
    with pytest.raises(ConfigError, match="tau"):
        EvaConfig(tau=1.5)
    with pytest.raises(ConfigError, match="unknown fields"):
        EvaConfig.coerce({"rho": 2.0, "rhoo": 1})
    with pytest.raises(ConfigError, match="lora_bias"):
        get_peft_model(tiny_llama(), LoraConfig(target_modules=TARGETS, init_lora_weights="eva", lora_bias=True))
    with pytest.raises(ConfigError, match="conv"):
        get_peft_model(convnet(), LoraConfig(target_modules=["conv0"], init_lora_weights="eva"))


def test_config_dict_and_defaults():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = get_peft_model(tiny_llama(), LoraConfig(target_modules=TARGETS, init_lora_weights="eva"))
    assert isinstance(model.peft_config["default"].eva_config, EvaConfig)
    assert any("EvaConfig() defaults" in str(w.message) for w in caught)
    model = get_peft_model(tiny_llama(), LoraConfig(target_modules=TARGETS, init_lora_weights="eva",
                                                    eva_config={"rho": 1.0}))
    assert model.peft_config["default"].eva_config == EvaConfig(rho=1.0)


def test_shortest_distinguishing_suffixes():
    targets = [f"layers.{i}.attn.q_proj" for i in range(3)] + ["layers.0.mlp.up"]
    others = ["layers.0.attn", "layers.0.mlp.down", "head.q_proj"]
    # "q_proj" alone would also select head.q_proj; "attn.q_proj" covers the three layers and nothing else
    assert sorted(shortest_distinguishing_suffixes(targets, others)) == ["attn.q_proj", "up"]
