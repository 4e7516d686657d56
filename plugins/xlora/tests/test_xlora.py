"""X-LoRA's own behaviour: the scaling pass, the per-token mixing, top-k, helpers and refusals."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from peft_core import PeftModel, get_peft_model
from peft_core.conformance.models import tiny_llama, token_batch
from peft_core.errors import ConfigError, UnsupportedOperation
from peft_core_lora.layer import LoraLayer
from peft_core_xlora import XLoraConfig
from peft_core_xlora.conformance import saved_experts

IDS = token_batch(batch=2, length=6, seed=1)


def base() -> torch.nn.Module:
    return tiny_llama(use_cache=False)


def xlora(**fields) -> PeftModel:
    torch.manual_seed(3)
    return get_peft_model(base(), XLoraConfig(adapters=saved_experts(), **fields)).eval()


def fix_classifier(model: PeftModel, bias: list[float]) -> None:
    """Make the classifier ignore the hidden states and give every token the logits ``bias``."""
    last = model.base_model.internal_xlora_classifier.layers[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor(bias))


def experts_as_lora(scales: dict[str, float]) -> PeftModel:
    """Both experts as plain LoRA adapters, each layer's scaling multiplied by ``scales[name]``."""
    paths = saved_experts()
    model = PeftModel.from_pretrained(base(), paths["expert_a"], adapter_name="expert_a")
    model.load_adapter(paths["expert_b"], "expert_b")
    model.set_adapter(list(paths))
    for _, layer in model.base_model.adapter_layers():
        for name, scale in scales.items():
            if layer.has_adapter(name):
                layer.set_scale(name, scale)
    return model.eval()


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


def test_uniform_weights_equal_the_experts_at_half_scale() -> None:
    model = xlora()
    fix_classifier(model, [0.0, 0.0])  # softmax -> 1/2 each, every token and layer
    torch.testing.assert_close(logits(model), logits(experts_as_lora({"expert_a": 0.5, "expert_b": 0.5})),
                               atol=1e-6, rtol=1e-6)
    model.set_global_scaling_weight(2.0)  # the full sum of both experts
    torch.testing.assert_close(logits(model), logits(experts_as_lora({"expert_a": 1.0, "expert_b": 1.0})),
                               atol=1e-6, rtol=1e-6)


def test_top_k_keeps_the_strongest_expert_only() -> None:
    model = xlora(enable_softmax=False, top_k_lora=1)
    fix_classifier(model, [0.3, 0.7])
    torch.testing.assert_close(logits(model), logits(experts_as_lora({"expert_a": 0.0, "expert_b": 0.7})),
                               atol=1e-6, rtol=1e-6)
    model.set_topk_lora(None)  # dense again: both experts at their raw logits
    assert model.peft_config["default"].top_k_lora is None
    torch.testing.assert_close(logits(model), logits(experts_as_lora({"expert_a": 0.3, "expert_b": 0.7})),
                               atol=1e-6, rtol=1e-6)


def test_the_classifier_reads_the_scaling_pass_hidden_state() -> None:
    model = xlora(xlora_depth=2, xlora_size=8)
    seen = []
    model.base_model.internal_xlora_classifier.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    logits(model)
    with torch.no_grad():  # scaling_pass_value=0: the experts add nothing, so this is the base model's state
        expected = base()(input_ids=IDS, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(seen[0], expected, atol=1e-6, rtol=1e-6)
    model.set_scaling_pass_value(None)  # 1 / n_experts: now the experts shape the classifier's input
    assert model.peft_config["default"].scaling_pass_value == 0.5
    logits(model)
    assert (seen[1] - expected).abs().max() > 1e-4


def test_weights_are_per_token_and_per_layer_and_logged() -> None:
    model = xlora(layerwise_scalings=True)
    model.enable_scalings_logging()
    logits(model)
    with torch.no_grad():
        model(input_ids=IDS[:, :4])
    weights = model.get_latest_scalings()
    n_layers = sum(isinstance(m, LoraLayer) for m in model.modules())
    assert weights.shape == (2, 4, n_layers, 2)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, n_layers))
    assert (weights[0, 0] - weights[0, 1]).abs().max() > 0  # tokens differ
    assert (weights[0, 0, 0] - weights[0, 0, 1]).abs().max() > 0  # layers differ
    model.disable_scalings_logging()
    logits(model)
    buckets = model.get_bucketed_scalings_log()
    assert sorted(buckets) == [4, 6] and buckets[6][0] == [0] and buckets[4][0] == [1]
    model.clear_scalings_log()
    assert model.get_scalings_log() == []


def test_only_the_classifier_trains_unless_experts_are_trainable() -> None:
    trainable = [n for n, p in xlora().named_parameters() if p.requires_grad]
    assert trainable and all("internal_xlora_classifier" in n for n in trainable)
    trainable = [n for n, p in xlora(use_trainable_adapters=True).named_parameters() if p.requires_grad]
    assert any(".lora_A." in n for n in trainable) and any("internal_xlora_classifier" in n for n in trainable)


def test_generate_recomputes_weights_over_the_whole_sequence() -> None:
    model = xlora()
    out = model.generate(input_ids=IDS[:1, :3], attention_mask=torch.ones(1, 3, dtype=torch.long),
                         max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 6)
    assert model.get_latest_scalings().shape[1] == 5  # the last step saw every token but the new one


def test_saved_directory_holds_the_config_and_classifier_only(tmp_path: Path) -> None:
    model = xlora(xlora_depth=2, xlora_size=4)
    expected = logits(model)
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    assert json.loads((tmp_path / "adapter_config.json").read_text())["adapters"] == saved_experts()
    assert set(model.peft_config) == {"default"} and model.active_adapters == ["default"]
    # the experts are found through config.adapters; another location can be given with config=
    moved = tmp_path / "moved"
    for name, path in saved_experts().items():
        shutil.copytree(path, moved / name)
    config = XLoraConfig.from_pretrained(tmp_path)
    config.adapters = {name: str(moved / name) for name in config.adapters}
    reloaded = PeftModel.from_pretrained(base(), tmp_path, config=config)
    torch.testing.assert_close(logits(reloaded), expected, atol=0, rtol=0)


def test_refusals_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no saved LoRA adapter"):
        get_peft_model(base(), XLoraConfig(adapters={"x": str(tmp_path / "missing")}))
    with pytest.raises(ConfigError, match="adapters is empty"):
        get_peft_model(base(), XLoraConfig(adapters={}))
    with pytest.raises(ConfigError, match="like one of its experts"):
        get_peft_model(base(), XLoraConfig(adapters=saved_experts()), adapter_name="expert_a")
    with pytest.raises(ConfigError, match="hidden size"):
        get_peft_model(base(), XLoraConfig(adapters=saved_experts(), hidden_size=48))
    with pytest.raises(ConfigError, match="xlora_depth"):
        XLoraConfig(xlora_depth=0)
    model = xlora()
    with pytest.raises(UnsupportedOperation, match="merg"):
        model.merge_and_unload()
    with pytest.raises(UnsupportedOperation):
        model.set_adapter("expert_a")
    with pytest.raises(UnsupportedOperation, match="KV cache"):
        model(input_ids=IDS, use_cache=True)


def test_a_model_with_a_cache_is_switched_off_it_with_a_warning() -> None:
    model = tiny_llama()  # use_cache=True by default
    with pytest.warns(UserWarning, match="use_cache"):
        get_peft_model(model, XLoraConfig(adapters=saved_experts()))
    assert model.config.use_cache is False


def test_dora_experts_are_refused(tmp_path: Path) -> None:
    pytest.importorskip("peft_core_dora")
    from peft_core_lora.config import LoraConfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        get_peft_model(base(), LoraConfig(target_modules=["q_proj"], use_dora=True)).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="DoRA"):
        get_peft_model(base(), XLoraConfig(adapters={"d": str(tmp_path)}))
