"""Combining adapters: the public merge utilities and ``add_weighted_adapter`` for every combination type."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from peft_core import (
    AdapterNameError,
    ConfigError,
    LoraConfig,
    MergeError,
    MethodSpec,
    UnsupportedOperation,
    add_weighted_adapter,
    get_peft_model,
    hookimpl,
)
from peft_core.conformance.models import mlp, token_batch
from peft_core.merging import (
    COMBINATION_TYPES,
    Combination,
    calculate_majority_sign_mask,
    dare_linear,
    dare_ties,
    disjoint_merge,
    magnitude_prune,
    prune,
    svd_factors,
    task_arithmetic,
    ties,
)
from peft_core.plugins import register_plugin, unregister_plugin
from peft_core.registry import LAYER_METHOD_CAPABILITIES

T1 = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
T2 = torch.tensor([[-1.0, 4.0], [1.0, -0.25]])
W = torch.tensor([0.5, 2.0])


# -- math --------------------------------------------------------------------------------------


def test_task_arithmetic_is_the_weighted_sum():
    torch.testing.assert_close(task_arithmetic([T1, T2], W), 0.5 * T1 + 2.0 * T2)
    torch.testing.assert_close(task_arithmetic([T1, T2], torch.tensor([1.0, -1.0])), T1 - T2)


def test_prune_magnitude_keeps_the_largest_entries():
    torch.testing.assert_close(prune(T1, 0.5, "magnitude"), torch.tensor([[0.0, -2.0], [3.0, 0.0]]))
    assert torch.count_nonzero(prune(T1, 0.0, "magnitude")) == 0
    with pytest.warns(UserWarning, match="nothing is pruned"):
        assert prune(T1, 1.0, "magnitude") is T1
    with pytest.raises(ConfigError):
        prune(T1, -0.1, "magnitude")
    with pytest.raises(ConfigError):
        prune(T1, 0.5, "nope")


def test_prune_random_rescales_survivors():
    torch.manual_seed(0)
    t = torch.ones(2000)
    kept = prune(t, 0.25, "random", rescale=True)
    assert set(kept.unique().tolist()) <= {0.0, 4.0}
    assert 0.85 < kept.mean().item() < 1.15  # expectation preserved
    assert set(prune(t, 0.25, "random").unique().tolist()) <= {0.0, 1.0}


def test_majority_sign_mask_total_and_frequency():
    stacked = torch.tensor([[1.0, -1.0, 0.0], [1.0, -1.0, 3.0], [-5.0, 2.0, -1.0]])
    # total: column sums -3, 0, 2 -> signs -, +, +
    assert calculate_majority_sign_mask(stacked, "total").tolist() == [
        [False, False, False], [False, False, True], [True, True, False]]
    # frequency: votes -1+... -> column 0: +1+1-1 = 1 (+); column 1: -1-1+1 (-); column 2: 0+1-1 = 0 (+)
    assert calculate_majority_sign_mask(stacked, "frequency").tolist() == [
        [True, True, False], [True, True, True], [False, False, False]]
    with pytest.raises(ConfigError):
        calculate_majority_sign_mask(stacked, "median")


def test_disjoint_merge_averages_agreeing_values():
    stacked = torch.tensor([[2.0, -1.0], [4.0, 3.0]])
    mask = torch.tensor([[True, False], [True, True]])
    torch.testing.assert_close(disjoint_merge(stacked, mask), torch.tensor([3.0, 3.0]))
    torch.testing.assert_close(disjoint_merge(stacked, torch.zeros_like(mask)), torch.zeros(2))


def test_ties_trims_elects_and_averages():
    # density 1 → no trimming (warns); signs per entry elected by weighted mass
    with pytest.warns(UserWarning):
        got = ties([T1, T2], torch.tensor([1.0, 1.0]), density=1.0)
    expected = torch.tensor([[1.0, 4.0], [2.0, 0.5]])  # [-1 dropped]; [-2 dropped]; mean(3,1); [-0.25 dropped]
    torch.testing.assert_close(got, expected)
    got = ties([T1, T2], torch.tensor([1.0, 1.0]), density=0.5)
    # trimmed: T1 -> [[0,-2],[3,0]], T2 -> [[0,4],[1,0]]; elect +: col sums 2, 4
    torch.testing.assert_close(got, torch.tensor([[0.0, 4.0], [2.0, 0.0]]))


def test_magnitude_prune_and_dare_shapes_and_determinism():
    torch.testing.assert_close(
        magnitude_prune([T1, T2], W, 0.5), 0.5 * prune(T1, 0.5, "magnitude") + 2.0 * prune(T2, 0.5, "magnitude")
    )
    torch.manual_seed(3)
    a = dare_linear([T1, T2], W, 0.5)
    torch.manual_seed(3)
    b = dare_linear([T1, T2], W, 0.5)
    torch.testing.assert_close(a, b)
    torch.manual_seed(3)
    assert dare_ties([T1, T2], W, 0.5).shape == T1.shape


def test_svd_factors_reconstruct_and_pad():
    torch.manual_seed(0)
    delta = torch.randn(6, 3) @ torch.randn(3, 5)  # rank 3
    B, A = svd_factors(delta, 3)
    assert B.shape == (6, 3) and A.shape == (3, 5)
    torch.testing.assert_close(B @ A, delta, rtol=1e-4, atol=1e-5)
    B, A = svd_factors(delta, 8)  # more than min(6, 5): zero padded
    assert B.shape == (6, 8) and A.shape == (8, 5)
    torch.testing.assert_close(B @ A, delta, rtol=1e-4, atol=1e-5)
    B, A = svd_factors(delta, 3, clamp=0.5)
    high = torch.quantile(torch.cat([B.flatten(), A.flatten()]), 1.0)
    assert B.abs().max() <= high + 1e-6
    with pytest.raises(ValueError):
        svd_factors(torch.randn(2, 2, 2), 2)


def test_combination_rules():
    c = Combination(("a", "b"), (1.0, 1.0), "ties_svd", density=0.5)
    assert c.uses_svd and c.tensor_rule == "ties"
    c = Combination(("a", "b"), (1.0, 1.0), "svd")
    assert c.uses_svd and c.tensor_rule == "linear"
    torch.testing.assert_close(c.combine([T1, T2], [0.5, 2.0]), 0.5 * T1 + 2.0 * T2)


# -- add_weighted_adapter ------------------------------------------------------------------------

TARGETS = ["emb", "lin0", "conv1d", "lin1"]


def pair(r_b: int = 4, targets=TARGETS, **kw):
    torch.manual_seed(0)
    model = get_peft_model(mlp(), LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False, **kw),
                           adapter_name="a")
    model.add_adapter("b", LoraConfig(r=r_b, lora_alpha=16, target_modules=targets, init_lora_weights=False, **kw))
    return model


def layers(model):
    return dict(model.base_model.adapter_layers())


def deltas(model, name):
    return {path: layer.get_delta_weight(name) for path, layer in layers(model).items() if layer.has_adapter(name)}


@pytest.mark.parametrize("kind", ["cat", "svd"])
def test_exact_types_give_the_weighted_sum_of_deltas(kind):
    model = pair(r_b=2)
    w = [0.7, -1.3]  # negative weights subtract
    kw = {"svd_rank": 6} if kind == "svd" else {}
    model.add_weighted_adapter(["a", "b"], w, "m", combination_type=kind, **kw)
    da, db, dm = deltas(model, "a"), deltas(model, "b"), deltas(model, "m")
    for path in dm:
        torch.testing.assert_close(dm[path], w[0] * da[path] + w[1] * db[path], rtol=1e-4, atol=1e-5)
    cfg = model.peft_config["m"]
    assert cfg.r == 6 and cfg.lora_alpha == 6 and cfg.target_modules == set(TARGETS)
    assert model.base_model.model.lin0.lora_A["m"].weight.shape == (6, 16)


def test_new_adapter_is_inactive_and_frozen_and_usable():
    model = pair()
    y_a = model(token_batch())
    model.add_weighted_adapter(["a", "b"], [1.0, 1.0], "m", combination_type="cat")
    assert model.active_adapters == ["a"]
    torch.testing.assert_close(model(token_batch()), y_a)
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".m." in n)
    model.set_adapter("m")
    assert model(token_batch()).shape == y_a.shape


def test_single_adapter_combines_linearly_with_its_weight():
    model = pair()
    model.add_weighted_adapter(["b"], [0.5], "half_b", combination_type="svd")  # one adapter: always linear
    assert model.peft_config["half_b"].r == 4
    db, dh = deltas(model, "b"), deltas(model, "half_b")
    for path in dh:
        torch.testing.assert_close(dh[path], 0.5 * db[path], rtol=1e-5, atol=1e-6)


def test_linear_combines_factors_with_sqrt_weights():
    model = pair()
    model.add_weighted_adapter(["a", "b"], [2.0, -0.5], "m", combination_type="linear")
    layer = model.base_model.model.lin0
    sa, sb = layer.scaling["a"], layer.scaling["b"]
    expected_A = (2.0 * sa) ** 0.5 * layer.lora_A["a"].weight - (0.5 * sb) ** 0.5 * layer.lora_A["b"].weight
    expected_B = (2.0 * sa) ** 0.5 * layer.lora_B["a"].weight + (0.5 * sb) ** 0.5 * layer.lora_B["b"].weight
    torch.testing.assert_close(layer.lora_A["m"].weight, expected_A)
    torch.testing.assert_close(layer.lora_B["m"].weight, expected_B)
    assert layer.scaling["m"] == 1.0


@pytest.mark.parametrize("kind", sorted(set(COMBINATION_TYPES) - {"cat", "svd", "linear"}))
def test_every_pruning_type_builds_a_finite_adapter(kind):
    model = pair()
    torch.manual_seed(0)
    model.add_weighted_adapter(["a", "b"], [1.0, 0.5], f"m_{kind}", combination_type=kind, density=0.5)
    dm = deltas(model, f"m_{kind}")
    assert set(dm) == set(TARGETS)
    assert all(torch.isfinite(d).all() and d.abs().sum() > 0 for d in dm.values())
    if kind in ("ties", "magnitude_prune"):  # deterministic: factors follow the public rule exactly
        layer = model.base_model.model.lin0
        rule = Combination(("a", "b"), (1.0, 0.5), kind, density=0.5)
        weights = [(1.0 * layer.scaling["a"]) ** 0.5, (0.5 * layer.scaling["b"]) ** 0.5]
        expected = rule.combine([layer.lora_A["a"].weight, layer.lora_A["b"].weight], weights)
        torch.testing.assert_close(layer.lora_A[f"m_{kind}"].weight, expected)
        assert (expected == 0).any()


def test_svd_rank_defaults_to_max_rank_and_clamp_applies():
    model = pair(r_b=2)
    model.add_weighted_adapter(["a", "b"], [1.0, 1.0], "m", combination_type="svd")
    assert model.peft_config["m"].r == 4
    model.add_weighted_adapter(["a", "b"], [1.0, 1.0], "c", combination_type="svd", svd_clamp=0.5)
    layer = model.base_model.model.lin0
    A, B = layer.lora_A["c"].weight, layer.lora_B["c"].weight
    A0, B0 = layer.lora_A["m"].weight, layer.lora_B["m"].weight
    high = torch.quantile(torch.cat([B0.flatten(), A0.flatten()]), 0.5)
    torch.testing.assert_close(A, A0.clamp(-high, high))
    torch.testing.assert_close(B, B0.clamp(-high, high))
    assert not torch.equal(B, B0)


def test_rsLoRA_adapters_combine_to_scaling_one():
    model = pair(use_rslora=True)
    model.add_weighted_adapter(["a", "b"], [1.0, 1.0], "m", combination_type="cat")
    assert model.peft_config["m"].use_rslora is False
    da, db, dm = deltas(model, "a"), deltas(model, "b"), deltas(model, "m")
    for path in dm:
        torch.testing.assert_close(dm[path], da[path] + db[path], rtol=1e-4, atol=1e-5)


def test_different_target_modules_union_and_partial_layers():
    torch.manual_seed(0)
    model = get_peft_model(mlp(), LoraConfig(r=4, target_modules=["lin0"], init_lora_weights=False), adapter_name="a")
    model.add_adapter("b", LoraConfig(r=4, target_modules=["lin1"], init_lora_weights=False))
    model.add_weighted_adapter(["a", "b"], [1.0, 2.0], "m", combination_type="cat")
    assert model.peft_config["m"].target_modules == {"lin0", "lin1"}
    dm = deltas(model, "m")
    torch.testing.assert_close(dm["lin0"], deltas(model, "a")["lin0"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dm["lin1"], 2.0 * deltas(model, "b")["lin1"], rtol=1e-5, atol=1e-6)


def test_lora_bias_is_combined_exactly():
    model = pair(targets=["lin0", "lin1"], lora_bias=True)
    with torch.no_grad():
        for layer in layers(model).values():
            for name in ("a", "b"):
                layer.lora_B[name].bias.normal_()
    model.add_weighted_adapter(["a", "b"], [0.5, -1.0], "m", combination_type="cat")
    for layer in layers(model).values():
        expected = 0.5 * layer.get_delta_bias("a") - 1.0 * layer.get_delta_bias("b")
        torch.testing.assert_close(layer.get_delta_bias("m"), expected)


def test_modules_to_save_copy_comes_from_the_owner():
    torch.manual_seed(0)
    model = get_peft_model(mlp(), LoraConfig(r=4, target_modules=["lin0"], modules_to_save=["lin1"]), adapter_name="a")
    model.add_adapter("b", LoraConfig(r=4, target_modules=["lin0"]))
    with torch.no_grad():
        model.base_model.model.lin1.modules_to_save["a"].weight.fill_(0.25)
    model.add_weighted_adapter(["a", "b"], [1.0, 1.0], "m", combination_type="cat")
    assert torch.all(model.base_model.model.lin1.modules_to_save["m"].weight == 0.25)


# -- refusals ------------------------------------------------------------------------------------


def test_errors_for_bad_requests_leave_the_model_unchanged():
    model = pair(r_b=2)
    before = set(model.state_dict())
    with pytest.raises(AdapterNameError, match="nope"):
        model.add_weighted_adapter(["a", "nope"], [1, 1], "m")
    with pytest.raises(ConfigError, match="weights"):
        model.add_weighted_adapter(["a", "b"], [1.0], "m")
    with pytest.raises(ConfigError, match="same rank"):
        model.add_weighted_adapter(["a", "b"], [1, 1], "m", combination_type="linear")
    with pytest.raises(ConfigError, match="density"):
        model.add_weighted_adapter(["a", "b"], [1, 1], "m", combination_type="ties_svd")
    with pytest.raises(ConfigError, match="density"):
        model.add_weighted_adapter(["a", "b"], [1, 1], "m", combination_type="dare_ties_svd", density=1.5)
    with pytest.raises(ConfigError, match="combination_type"):
        model.add_weighted_adapter(["a", "b"], [1, 1], "m", combination_type="average")
    with pytest.raises(ConfigError, match="majority_sign_method"):
        model.add_weighted_adapter(["a", "b"], [1, 1], "m", combination_type="ties_svd", density=0.5,
                                   majority_sign_method="median")
    with pytest.raises(AdapterNameError):
        model.add_weighted_adapter([], [], "m")
    assert set(model.state_dict()) == before and "m" not in model.peft_config


def test_existing_name_warns_and_does_nothing():
    model = pair()
    with pytest.warns(UserWarning, match="already exists"):
        model.add_weighted_adapter(["a", "b"], [1, 1], "b", combination_type="cat")
    assert model.peft_config["b"].r == 4


def test_shared_modules_to_save_is_refused():
    model = get_peft_model(mlp(), LoraConfig(r=4, target_modules=["lin0"], modules_to_save=["lin1"]), adapter_name="a")
    model.add_adapter("b", LoraConfig(r=4, target_modules=["lin0"], modules_to_save=["lin1"]))
    with pytest.raises(MergeError, match="modules_to_save"):
        model.add_weighted_adapter(["a", "b"], [1, 1], "m", combination_type="cat")


def test_mixed_target_module_forms_are_refused():
    model = get_peft_model(mlp(), LoraConfig(r=4, target_modules=["lin0"]), adapter_name="a")
    model.add_adapter("b", LoraConfig(r=4, target_modules="lin.*"))
    with pytest.raises(ConfigError, match="mix"):
        model.add_weighted_adapter(["a", "b"], [1, 1], "m", combination_type="cat")
    assert "m" not in model.peft_config


def test_failure_half_way_rolls_back(monkeypatch):
    from peft_core_lora import combine

    model = pair()
    calls = []

    def fail_on_second(self, layer, adapter_name, sources):
        calls.append(layer)
        if len(calls) == 2:
            raise MergeError("boom")

    monkeypatch.setattr(combine.LoraCombiner, "combine", fail_on_second)
    with pytest.raises(MergeError, match="boom"):
        model.add_weighted_adapter(["a", "b"], [1, 1], "m", combination_type="cat")
    assert "m" not in model.peft_config
    assert not any(".m." in n for n, _ in model.named_parameters())


# -- methods without the capability --------------------------------------------------------------


@dataclasses.dataclass
class PlainConfig(LoraConfig):
    """LoRA's layers under another name that declares no combining or hot-swapping."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = "PLAINLR"


def _plain_layer(target, description, config, adapter_name, module_name=""):
    from peft_core_lora.layer import create_lora_layer

    layer = create_lora_layer(target, description, config, adapter_name, module_name=module_name)
    layer.method = "PLAINLR"
    return layer


class _PlainPlugin:
    @hookimpl
    def peft_core_register_methods(self, registry):
        registry.register(MethodSpec(name="PLAINLR", config_class=PlainConfig, prefix="plainlr_",
                                     layer_factory=_plain_layer, capabilities=LAYER_METHOD_CAPABILITIES))


@pytest.fixture
def plain_method():
    register_plugin(_PlainPlugin(), name="plain-test-plugin")
    yield
    unregister_plugin("plain-test-plugin")


def test_method_without_weighted_combine_raises_unsupported(plain_method):
    model = get_peft_model(mlp(), PlainConfig(r=4, target_modules=["lin0"]), adapter_name="a")
    model.add_adapter("b", PlainConfig(r=4, target_modules=["lin0"]))
    with pytest.raises(UnsupportedOperation, match="weighted_combine"):
        add_weighted_adapter(model, ["a", "b"], [1, 1], "m", combination_type="cat")
    assert "m" not in model.peft_config
