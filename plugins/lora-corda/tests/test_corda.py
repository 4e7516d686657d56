"""CorDA's own behaviour: the decomposition, the residual, caches, determinism, clear errors."""

from __future__ import annotations

import pytest
import torch

import peft_core
from peft_core import LoraConfig, get_peft_model
from peft_core.conformance.models import tiny_llama
from peft_core.errors import ConfigError
from peft_core_lora_corda import CordaConfig, preprocess_corda
from peft_core_lora_corda.corda import decompose

torch.set_num_threads(1)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TARGETS = ["q_proj", "down_proj"]


def calibration(model, n=4):
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 97, (1, 20), generator=gen) for _ in range(n)]
    return lambda: [model(input_ids=x) for x in batches]


def corda_model(method="ipm", **corda):
    model = tiny_llama()
    config = LoraConfig(r=4, target_modules=TARGETS, init_lora_weights="corda",
                        corda_config=CordaConfig(corda_method=method, **corda))
    preprocess_corda(model, config, run_model=calibration(model))
    return get_peft_model(model, config)


def test_exported_from_peft_core():
    assert peft_core.CordaConfig is CordaConfig and peft_core.preprocess_corda is preprocess_corda


def test_decomposition_reconstructs_the_weight_and_orders_by_the_covariance():
    gen = torch.Generator().manual_seed(0)
    weight, x = torch.randn(6, 5, generator=gen), torch.randn(40, 5, generator=gen)
    covariance = x.T @ x / 40
    full = decompose(weight, covariance, 5, "ipm")
    torch.testing.assert_close(full.U_WC * full.S_WC @ full.V_WC.T, weight, atol=1e-5, rtol=1e-5)
    assert torch.all(full.S_WC[:-1] >= full.S_WC[1:])
    kpm = decompose(weight, covariance, 2, "kpm")
    torch.testing.assert_close(kpm.S_WC, full.S_WC[-2:])  # kpm keeps the smallest directions


@pytest.mark.parametrize("method", ["ipm", "kpm"])
def test_residual_plus_adapter_is_the_original_model(method):
    model = corda_model(method)
    inputs = {"input_ids": torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(1))}
    torch.testing.assert_close(model(**inputs).logits, tiny_llama()(**inputs).logits, atol=1e-5, rtol=1e-5)
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    original = tiny_llama().model.layers[0].self_attn.q_proj.weight
    assert (layer.base_layer.weight - original).abs().max() > 1e-3  # the base really holds the residual
    torch.testing.assert_close(layer.base_layer.weight + layer.get_delta_weight("default"), original,
                               atol=1e-5, rtol=1e-5)
    assert not hasattr(layer.base_layer, "eigens")  # used up by the init


def test_deterministic_and_cached(tmp_path):
    first = corda_model("kpm", cache_file=str(tmp_path / "c.pt")).state_dict()
    second = corda_model("kpm").state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    model = tiny_llama()
    config = LoraConfig(r=4, target_modules=TARGETS, init_lora_weights="corda",
                        corda_config=CordaConfig(cache_file=str(tmp_path / "c.pt")))
    preprocess_corda(model, config)  # no run_model: the cache has everything
    third = get_peft_model(model, config).state_dict()
    assert all(torch.equal(first[k], third[k]) for k in first)


def test_prune_temporary_fields_false_keeps_the_covariance():
    model = tiny_llama()
    config = LoraConfig(r=4, target_modules=TARGETS, init_lora_weights="corda",
                        corda_config=CordaConfig(prune_temporary_fields=False))
    preprocess_corda(model, config, run_model=calibration(model, n=3))
    q = model.model.layers[0].self_attn.q_proj
    assert q.covariance_matrix.shape == (32, 32) and q.sample_count == 3


def test_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="preprocess_corda"):
        get_peft_model(tiny_llama(), LoraConfig(target_modules=TARGETS, init_lora_weights="corda"))
    with pytest.raises(ConfigError, match="run_model"):
        preprocess_corda(tiny_llama(), LoraConfig(target_modules=TARGETS, init_lora_weights="corda"))
    with pytest.raises(ConfigError, match="ipm"):
        CordaConfig(corda_method="xyz")
    with pytest.raises(ConfigError, match="never reached"):
        preprocess_corda(tiny_llama(), LoraConfig(target_modules=TARGETS, init_lora_weights="corda"),
                         run_model=lambda: None)
    model = tiny_llama()  # prepared for rank 4, adapter of rank 2
    config = LoraConfig(r=4, target_modules=TARGETS, init_lora_weights="corda")
    preprocess_corda(model, config, run_model=calibration(model))
    with pytest.raises(ConfigError, match="another model, rank"):
        get_peft_model(model, LoraConfig(r=2, target_modules=TARGETS, init_lora_weights="corda"))
    with pytest.raises(ConfigError, match="lora_bias"):
        get_peft_model(tiny_llama(), LoraConfig(target_modules=TARGETS, init_lora_weights="corda", lora_bias=True))


def test_quantized_base_is_refused():
    from types import SimpleNamespace

    from peft_core_lora_corda.plugin import peft_core_lora_init

    layer = SimpleNamespace(description=SimpleNamespace(kind="linear", quantized=True))
    with pytest.raises(ConfigError, match="unquantized"):
        peft_core_lora_init(layer=layer, adapter_name="default", config=None, init="corda")
