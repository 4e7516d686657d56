"""AdaLoRA behaviour: config, layer math, the rank allocator, the loss penalty, saving an allocation."""

from __future__ import annotations

import dataclasses
import json
import warnings

import pytest
import torch

from peft_core import ConfigError, MethodSpec, PeftModel, UnsupportedOperation, get_peft_model
from peft_core.conformance.models import mlp, tiny_llama, token_batch
from peft_core.errors import DuplicateMethodError
from peft_core.plugins import registry
from peft_core.registry import MethodRegistry
from peft_core_adalora import AdaLoraConfig, AdaLoraLinear, AdaLoraModel

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore::FutureWarning")]

TARGETS = ["q_proj", "v_proj", "down_proj"]


def _config(**kw):
    base = dict(target_modules=TARGETS, init_r=6, target_r=2, total_step=30, tinit=3, tfinal=5, lora_alpha=8,
                task_type="CAUSAL_LM")
    base.update(kw)
    return AdaLoraConfig(**base)


def _layers(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, AdaLoraLinear)]


def _train(model, steps, lr=1e-2, allocate=True, seed=0):
    torch.manual_seed(seed)
    ids = torch.randint(0, 97, (2, 10))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    kept = []
    model.train()
    for step in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        if allocate:
            model.base_model.update_and_allocate(step)
        opt.zero_grad()
        pattern = model.peft_config["default"].rank_pattern
        kept.append(sum(sum(mask) for mask in pattern.values()) if pattern else None)
    model.eval()
    return kept


# -- config ---------------------------------------------------------------------------------


def test_config_defaults_and_json_match_peft():
    import peft

    ours, theirs = AdaLoraConfig(total_step=10), peft.AdaLoraConfig(total_step=10)
    assert ours.peft_type == "ADALORA"
    theirs_dict = {k: (v.value if hasattr(v, "value") else v) for k, v in theirs.to_dict().items()}
    ours_dict = ours.to_dict()
    assert set(ours_dict) == set(theirs_dict)
    for name in ("init_r", "target_r", "tinit", "tfinal", "deltaT", "beta1", "beta2", "orth_reg_weight",
                 "total_step", "rank_pattern", "lora_alpha", "r", "lora_dropout", "init_lora_weights"):
        assert ours_dict[name] == theirs_dict[name], name


@pytest.mark.parametrize("kwargs", [
    {}, {"total_step": 0}, {"total_step": 10, "tinit": 6, "tfinal": 4}, {"total_step": 10, "init_r": 0},
    {"total_step": 10, "beta2": 1.5}, {"total_step": 10, "orth_reg_weight": -1.0}, {"total_step": 10, "use_dora": True},
    {"total_step": 10, "rank_pattern": {"x.lora_E": [1, 2]}},
])
def test_invalid_configs_raise(kwargs):
    with pytest.raises(ConfigError):
        AdaLoraConfig(**kwargs)


def test_r_is_ignored_with_a_warning():
    with pytest.warns(UserWarning, match="init_r"):
        config = AdaLoraConfig(total_step=10, r=4)
    model = get_peft_model(mlp(), dataclasses.replace(config, target_modules=["lin0"]))
    assert model.base_model.model.lin0.lora_A["default"].shape == (12, 16)


# -- layer ----------------------------------------------------------------------------------


def test_keys_shapes_and_identity_at_init():
    base = tiny_llama()
    ids = token_batch()
    with torch.no_grad():
        expected = base(input_ids=ids).logits
    model = get_peft_model(tiny_llama(), _config())
    state = model.state_dict()
    keys = [k for k in state if ".lora_" in k]
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default" in keys
    assert not any("ranknum" in k for k in state)
    layer = model.base_model.model.model.layers[0].mlp.down_proj
    assert layer.lora_A["default"].shape == (6, 64) and layer.lora_E["default"].shape == (6, 1)
    assert layer.lora_B["default"].shape == (32, 6)
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, expected)


def test_forward_and_delta_follow_the_svd_formula():
    model = get_peft_model(mlp(), AdaLoraConfig(target_modules=["lin0"], init_r=3, lora_alpha=5, total_step=10))
    layer = model.base_model.model.lin0
    torch.manual_seed(1)
    with torch.no_grad():
        for p in layer.adapter_parameters("default"):
            p.normal_()
    A, E, B = layer.lora_A["default"], layer.lora_E["default"], layer.lora_B["default"]
    delta = B @ (A * E) * 5 / (3 + 1e-5)
    torch.testing.assert_close(layer.get_delta_weight("default"), delta)
    x = torch.randn(4, 16)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), layer.base_layer(x) + x @ delta.T)


def test_second_adapter_is_refused_clearly():
    model = get_peft_model(mlp(), AdaLoraConfig(target_modules=["lin0"], total_step=10))
    with pytest.raises(UnsupportedOperation, match="one AdaLoRA adapter"):
        model.add_adapter("other", AdaLoraConfig(target_modules=["lin0"], total_step=10))


# -- the loss penalty ------------------------------------------------------------------------


def test_orthogonal_regularisation_is_added_to_the_loss():
    ids = token_batch()
    plain = get_peft_model(tiny_llama(), _config(orth_reg_weight=0.0))
    reg = get_peft_model(tiny_llama(), _config(orth_reg_weight=0.3))
    torch.manual_seed(3)
    with torch.no_grad():
        for (_, a), (_, b) in zip(_layers(plain), _layers(reg)):
            for pa, pb in zip(a.adapter_parameters("default"), b.adapter_parameters("default")):
                pb.copy_(pa.normal_())
    base_loss = plain(input_ids=ids, labels=ids).loss
    norms = []
    for _, layer in _layers(reg):
        A, B = layer.lora_A["default"], layer.lora_B["default"]
        norms += [torch.linalg.norm(A @ A.T - torch.eye(6)), torch.linalg.norm(B.T @ B - torch.eye(6))]
    expected = base_loss + 0.3 * torch.stack(norms).mean()
    out = reg(input_ids=ids, labels=ids)
    torch.testing.assert_close(out.loss, expected)
    assert out[0] is out.loss or torch.equal(out[0], out.loss)
    out.loss.backward()  # the penalty reaches A and B
    assert all(layer.lora_A["default"].grad is not None for _, layer in _layers(reg))
    with torch.no_grad():  # no labels: no loss, nothing added
        assert reg(input_ids=ids).loss is None


# -- the rank allocator ----------------------------------------------------------------------


def test_training_reallocates_ranks_to_the_target_budget(tmp_path):
    config = _config(total_step=20, tinit=2, tfinal=4, deltaT=2)
    model = get_peft_model(tiny_llama(), config)
    assert isinstance(model.base_model.update_and_allocate, object)
    layers = _layers(model)
    init_budget, target_budget = 6 * len(layers), 2 * len(layers)
    kept = _train(model, steps=20)
    assert kept[:3] == [None] * 3  # warm-up (steps 0..tinit): no allocation yet
    masked = [k for k in kept if k is not None]
    assert all(a >= b for a, b in zip(masked, masked[1:])), kept  # the budget only shrinks
    assert init_budget > masked[0] and masked[-1] == target_budget, kept
    pattern = model.peft_config["default"].rank_pattern
    assert sorted(pattern) == sorted(f"{n}.lora_E" for n, _ in _layers(model.base_model.model))
    assert sum(sum(mask) for mask in pattern.values()) == target_budget
    ranks = {k: sum(v) for k, v in pattern.items()}
    assert len(set(ranks.values())) > 1, ranks  # allocated unevenly: that is the point of AdaLoRA
    for name, layer in _layers(model.base_model.model):
        keep = torch.tensor(pattern[f"{name}.lora_E"])
        assert torch.all(layer.lora_E["default"][~keep] == 0)

    ids = token_batch()
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["rank_pattern"] == pattern
    from safetensors.torch import load_file

    tensors = load_file(str(tmp_path / "adapter_model.safetensors"))
    for key, mask in pattern.items():
        assert tensors[f"base_model.model.{key}"].shape == (sum(mask), 1)  # pruned triplets are cut out
        assert tensors[f"base_model.model.{key[:-6]}lora_B"].shape[1] == sum(mask)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no missing/unexpected-key warnings
        loaded = PeftModel.from_pretrained(tiny_llama(), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, expected, atol=1e-6, rtol=1e-6)


def test_final_phase_keeps_the_allocation_masked():
    model = get_peft_model(tiny_llama(), _config(total_step=12, tinit=1, tfinal=4))
    _train(model, steps=12)
    pattern = model.peft_config["default"].rank_pattern
    # E entries the allocation dropped stay zero through the final fine-tuning steps
    for name, layer in _layers(model.base_model.model):
        keep = torch.tensor(pattern[f"{name}.lora_E"])
        assert torch.all(layer.lora_E["default"][~keep] == 0)
        assert torch.any(layer.lora_E["default"][keep] != 0) or not keep.any()


def test_update_and_allocate_is_on_the_tuner_and_needs_a_trainable_adapter(tmp_path):
    model = get_peft_model(tiny_llama(), _config())
    assert callable(model.base_model.update_and_allocate)
    assert isinstance(AdaLoraModel.update_and_allocate, object)
    model.save_pretrained(tmp_path)
    frozen = PeftModel.from_pretrained(tiny_llama(), tmp_path)  # inference mode
    with pytest.raises(ConfigError, match="trainable AdaLoRA adapter"):
        frozen.base_model.update_and_allocate(0)
    with pytest.raises(AttributeError):
        model.base_model.no_such_method  # noqa: B018


def test_saved_pattern_masks_full_size_tensors_on_load(tmp_path):
    """A pattern next to untruncated tensors (a foreign writer) is applied by masking E."""
    model = get_peft_model(mlp(), AdaLoraConfig(target_modules=["lin0"], init_r=3, total_step=10))
    with torch.no_grad():
        for p in model.base_model.model.lin0.adapter_parameters("default"):
            p.normal_()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    config["rank_pattern"] = {"lin0.lora_E": [True, False, True]}
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    loaded = PeftModel.from_pretrained(mlp(), tmp_path)
    E = loaded.base_model.model.lin0.lora_E["default"]
    assert E[1, 0] == 0 and E[0, 0] == model.base_model.model.lin0.lora_E["default"][0, 0]


# -- the registry rule that lets AdaLoRA reuse LoRA's prefix ---------------------------------


def test_prefix_sharing_must_be_declared():
    specs = {s.name: s for s in registry()}
    assert specs["ADALORA"].prefix == specs["LORA"].prefix == "lora_"
    reg = MethodRegistry()
    reg.register(specs["LORA"])
    reg.register(specs["ADALORA"])  # declared: allowed
    undeclared = MethodSpec(name="OTHER", config_class=AdaLoraConfig, prefix="lora_x")
    with pytest.raises(DuplicateMethodError, match="overlaps"):
        reg.register(undeclared)
