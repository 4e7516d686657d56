"""Hot-swapping adapters in place, with and without ``torch.compile`` (no recompilation allowed)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from peft_core import (
    ConfigError,
    LoadError,
    LoraConfig,
    MergeError,
    MethodSpec,
    PeftModel,
    UnsupportedOperation,
    get_peft_model,
    hookimpl,
    hotswap_adapter,
    prepare_model_for_compiled_hotswap,
)
from peft_core.conformance.models import mlp, token_batch
from peft_core.hotswap import check_hotswap_configs_compatible
from peft_core.plugins import register_plugin, unregister_plugin
from peft_core.registry import LAYER_METHOD_CAPABILITIES

X = token_batch(3, 6)
ALL = ["emb", "lin0", "conv1d", "lin1"]


def saved(tmp_path, name, r=4, alpha=8, targets=ALL, seed=0, **kw):
    """Save an adapter and return (path, its output on X)."""
    torch.manual_seed(seed)
    model = get_peft_model(mlp(), LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, init_lora_weights=False, **kw))
    path = tmp_path / name
    model.save_pretrained(path)
    with torch.no_grad():
        return path, model(X)


def loaded(path) -> PeftModel:
    return PeftModel.from_pretrained(mlp(), path)


def run(model):
    with torch.no_grad():
        return model(X)


def snapshot(model):
    return [id(m) for m in model.modules()], [id(p) for p in model.parameters()]


def test_swap_replaces_weights_in_place(tmp_path):
    p0, y0 = saved(tmp_path, "a0")
    p1, y1 = saved(tmp_path, "a1", seed=1, alpha=32)  # different alpha: scaling is swapped too
    model = loaded(p0)
    torch.testing.assert_close(run(model), y0)
    before = snapshot(model)
    hotswap_adapter(model, p1, adapter_name="default", torch_device="cpu")
    torch.testing.assert_close(run(model), y1)
    assert snapshot(model) == before  # no module or parameter was created or replaced
    assert model.base_model.model.lin0.scaling["default"] == 32 / 4


def test_smaller_rank_is_zero_padded_in_place(tmp_path):
    p0, _ = saved(tmp_path, "a0", r=8)
    p1, y1 = saved(tmp_path, "a1", r=2, alpha=3, seed=2)
    model = loaded(p0)
    hotswap_adapter(model, p1, adapter_name="default")
    torch.testing.assert_close(run(model), y1, rtol=1e-5, atol=1e-6)
    A = model.base_model.model.lin0.lora_A["default"].weight
    assert A.shape[0] == 8 and torch.count_nonzero(A[2:]) == 0


def test_larger_rank_needs_preparation(tmp_path):
    p0, y0 = saved(tmp_path, "a0", r=2)
    p1, _ = saved(tmp_path, "a1", r=8, seed=1)
    model = loaded(p0)
    with pytest.raises(LoadError, match="prepare_model_for_compiled_hotswap"):
        hotswap_adapter(model, p1, adapter_name="default")
    torch.testing.assert_close(run(model), y0)  # nothing was written


def test_new_target_modules_are_refused_and_nothing_changes(tmp_path):
    p0, y0 = saved(tmp_path, "a0", targets=["lin0"])
    p1, _ = saved(tmp_path, "a1", targets=["lin0", "lin1"], seed=1)
    model = loaded(p0)
    with pytest.raises(LoadError, match="lin1"):
        hotswap_adapter(model, p1, adapter_name="default")
    torch.testing.assert_close(run(model), y0)


def test_fewer_target_modules_zero_the_rest(tmp_path):
    p0, _ = saved(tmp_path, "a0", targets=["lin0", "lin1"])
    p1, y1 = saved(tmp_path, "a1", targets=["lin1"], seed=1)
    model = loaded(p0)
    hotswap_adapter(model, p1, adapter_name="default")
    torch.testing.assert_close(run(model), y1, rtol=1e-5, atol=1e-6)


def test_incompatible_configs_and_merged_adapters_are_refused(tmp_path):
    p0, y0 = saved(tmp_path, "a0")
    p1, _ = saved(tmp_path, "a1", use_rslora=True)
    model = loaded(p0)
    with pytest.raises(ConfigError, match="use_rslora"):
        hotswap_adapter(model, p1, adapter_name="default")
    model.merge_adapter()
    p2, _ = saved(tmp_path, "a2", seed=3)
    with pytest.raises(MergeError, match="unmerge"):
        hotswap_adapter(model, p2, adapter_name="default")
    model.unmerge_adapter()
    torch.testing.assert_close(run(model), y0, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError):
        check_hotswap_configs_compatible(LoraConfig(lora_dropout=0.0), LoraConfig(lora_dropout=0.1))


def test_swap_into_a_second_named_adapter(tmp_path):
    p0, y0 = saved(tmp_path, "a0")
    p1, y1 = saved(tmp_path, "a1", seed=1)
    model = loaded(p0)
    model.load_adapter(p0, adapter_name="other")
    hotswap_adapter(model, p1, adapter_name="other")
    torch.testing.assert_close(run(model), y0)  # the active adapter is untouched
    model.set_adapter("other")
    torch.testing.assert_close(run(model), y1)


def test_prepare_pads_without_changing_outputs(tmp_path):
    p0, y0 = saved(tmp_path, "a0", r=2)
    model = loaded(p0)
    prepare_model_for_compiled_hotswap(model, target_rank=6, config=model.peft_config)
    torch.testing.assert_close(run(model), y0, rtol=1e-5, atol=1e-6)
    layers = dict(model.base_model.adapter_layers())
    assert layers["lin0"].lora_A["default"].weight.shape == (6, 16)
    assert layers["lin0"].lora_B["default"].weight.shape == (24, 6)
    assert layers["lin0"].lora_A["default"].out_features == 6
    assert layers["conv1d"].lora_A["default"].weight.shape[0] == 6
    assert layers["emb"].lora_embedding_A["default"].shape[0] == 6
    assert all(isinstance(layer.scaling["default"], torch.Tensor) for layer in layers.values())
    assert model.peft_config["default"].r == 6
    with pytest.raises(ConfigError, match="target_rank"):
        prepare_model_for_compiled_hotswap(model, target_rank=3)


def test_prepare_refuses_compiled_models_and_bad_arguments(tmp_path):
    p0, _ = saved(tmp_path, "a0")
    model = loaded(p0)
    compiled = torch.compile(model, backend="eager")
    with pytest.raises(ConfigError, match="before torch.compile"):
        prepare_model_for_compiled_hotswap(compiled, target_rank=8)
    with pytest.warns(UserWarning, match="before torch.compile"):
        prepare_model_for_compiled_hotswap(compiled, target_rank=8, check_compiled="warn")
    with pytest.raises(ConfigError):
        prepare_model_for_compiled_hotswap(model, check_compiled="sometimes")
    with pytest.raises(ConfigError):
        prepare_model_for_compiled_hotswap(model, target_rank=0)


def test_compiled_hotswap_of_other_rank_and_alpha_does_not_recompile(tmp_path):
    p0, y0 = saved(tmp_path, "a0", r=4, alpha=8)
    p1, y1 = saved(tmp_path, "a1", r=8, alpha=32, seed=1)
    p2, y2 = saved(tmp_path, "a2", r=2, alpha=2, seed=2, use_rslora=False)
    model = loaded(p0)
    prepare_model_for_compiled_hotswap(model, target_rank=8)
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model, backend="eager")
    torch.testing.assert_close(run(compiled), y0, rtol=1e-5, atol=1e-6)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1
    hotswap_adapter(compiled, p1, adapter_name="default")
    torch.testing.assert_close(run(compiled), y1, rtol=1e-5, atol=1e-6)
    hotswap_adapter(compiled, p2, adapter_name="default")
    torch.testing.assert_close(run(compiled), y2, rtol=1e-5, atol=1e-6)
    assert counters["stats"]["unique_graphs"] == graphs  # the same graph served all three adapters
    torch._dynamo.reset()


def test_without_preparation_an_alpha_change_recompiles(tmp_path):
    # the control for the test above: the counter does see recompilations
    p0, _ = saved(tmp_path, "a0", alpha=8)
    p1, y1 = saved(tmp_path, "a1", alpha=32, seed=1)
    model = loaded(p0)
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model, backend="eager")
    run(compiled)
    graphs = counters["stats"]["unique_graphs"]
    hotswap_adapter(compiled, p1, adapter_name="default")
    torch.testing.assert_close(run(compiled), y1, rtol=1e-5, atol=1e-6)
    assert counters["stats"]["unique_graphs"] > graphs
    torch._dynamo.reset()


# -- a method that does not declare HOTSWAP --------------------------------------------------------


@dataclasses.dataclass
class NoSwapConfig(LoraConfig):
    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = "NOSWAPLR"


def _layer(target, description, config, adapter_name, module_name=""):
    from peft_core_lora.layer import create_lora_layer

    layer = create_lora_layer(target, description, config, adapter_name, module_name=module_name)
    layer.method = "NOSWAPLR"
    return layer


class _NoSwapPlugin:
    @hookimpl
    def peft_core_register_methods(self, registry):
        registry.register(MethodSpec(name="NOSWAPLR", config_class=NoSwapConfig, prefix="noswaplr_",
                                     layer_factory=_layer, capabilities=LAYER_METHOD_CAPABILITIES))


def test_method_without_hotswap_capability_raises_unsupported(tmp_path):
    register_plugin(_NoSwapPlugin(), name="noswap-test-plugin")
    try:
        model = get_peft_model(mlp(), NoSwapConfig(r=4, target_modules=["lin0"]))
        model.save_pretrained(tmp_path / "x")
        with pytest.raises(UnsupportedOperation, match="hotswap"):
            hotswap_adapter(model, tmp_path / "x", adapter_name="default")
        with pytest.raises(UnsupportedOperation, match="hotswap"):
            prepare_model_for_compiled_hotswap(model, target_rank=8)
    finally:
        unregister_plugin("noswap-test-plugin")
