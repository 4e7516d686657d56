"""Saving and loading adapters in the Hugging Face PEFT layout, and the task wrappers around them."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from peft_core import (
    LoadError,
    LoraConfig,
    PeftConfig,
    PeftModel,
    PeftModelForCausalLM,
    PeftModelForFeatureExtraction,
    PeftModelForQuestionAnswering,
    PeftModelForSeq2SeqLM,
    PeftModelForSequenceClassification,
    PeftModelForTokenClassification,
    get_peft_model,
    get_peft_model_state_dict,
)
from peft_core.conformance.models import VOCAB, tiny_llama, tiny_llama_seq_cls, tiny_t5, token_batch
from peft_core.layer import AdapterLayer
from peft_core.wrappers import ModulesToSaveWrapper

X = token_batch()
LORA_KEYS = {f"base_model.model.model.layers.{i}.self_attn.{m}.lora_{f}.weight"
             for i in (0, 1) for m in ("q_proj", "v_proj") for f in "AB"}


def _config(**kwargs) -> LoraConfig:
    kwargs.setdefault("target_modules", ["q_proj", "v_proj"])
    kwargs.setdefault("r", 4)
    kwargs.setdefault("init_lora_weights", False)
    return LoraConfig(**kwargs)


def _lora_model(seed: int = 0, **kwargs):
    torch.manual_seed(seed + 100)  # init_lora_weights=False: random, non-identity factors
    return get_peft_model(tiny_llama(), _config(**kwargs))


def _snapshot(model: nn.Module):
    """Everything that a failed load must leave as it was."""
    return (
        [(n, type(m).__name__) for n, m in model.named_modules()],
        {n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()},
    )


def _assert_same(model: nn.Module, snapshot) -> None:
    modules, params = snapshot
    assert [(n, type(m).__name__) for n, m in model.named_modules()] == modules
    now = dict(model.named_parameters())
    assert set(now) == set(params)
    for name, (value, flag) in params.items():
        assert now[name].requires_grad == flag, name
        assert torch.equal(now[name].detach(), value), name


# -- what is written ---------------------------------------------------------------------------


def test_save_pretrained_files(tmp_path):
    model = _lora_model(task_type="CAUSAL_LM")
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    with safe_open(str(tmp_path / "adapter_model.safetensors"), "pt") as fh:
        assert fh.metadata() == {"format": "pt"}
        keys = set(fh.keys())
    assert keys == LORA_KEYS
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["inference_mode"] is True and config["task_type"] == "CAUSAL_LM"
    assert config["auto_mapping"] is None  # only written when task_type is None
    assert "library_name: peft" in (tmp_path / "README.md").read_text()
    # the live model keeps training mode in its own config
    assert model.peft_config["default"].inference_mode is False


def test_auto_mapping_without_task_type(tmp_path):
    _lora_model().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["auto_mapping"] == {"base_model_class": "LlamaForCausalLM",
                                      "parent_library": "transformers.models.llama.modeling_llama"}


def test_saved_tensors_are_the_adapter_and_keys_have_no_adapter_name(tmp_path):
    model = _lora_model()
    model.add_adapter("other", _config(r=2))
    state = get_peft_model_state_dict(model, adapter_name="other")
    assert set(state) == LORA_KEYS
    assert not any("other" in k or "default" in k for k in state)
    live = dict(model.named_parameters())
    for key, tensor in state.items():
        live_key = key.replace(".weight", ".other.weight")
        assert torch.equal(tensor, live[live_key])
        assert tensor.shape[0 if ".lora_A." in key else 1] == 2


def test_several_adapters_layout_and_selected_adapters(tmp_path):
    model = _lora_model()
    model.add_adapter("second", _config(r=2))
    model.add_adapter("third", _config(target_modules=["o_proj"]))
    model.save_pretrained(tmp_path / "all")
    assert (tmp_path / "all" / "adapter_model.safetensors").is_file()
    for name in ("second", "third"):
        assert sorted(p.name for p in (tmp_path / "all" / name).iterdir()) == [
            "README.md", "adapter_config.json", "adapter_model.safetensors"]
    third = load_file(str(tmp_path / "all" / "third" / "adapter_model.safetensors"))
    assert set(third) == {f"base_model.model.model.layers.{i}.self_attn.o_proj.lora_{f}.weight" for i in (0, 1) for f in "AB"}
    model.save_pretrained(tmp_path / "some", selected_adapters=["second"])
    assert sorted(p.name for p in (tmp_path / "some").iterdir()) == ["second"]
    from peft_core import AdapterNameError

    with pytest.raises(AdapterNameError, match="unknown adapters \\['nope'\\]"):
        model.save_pretrained(tmp_path / "x", selected_adapters=["nope"])


# -- loading -----------------------------------------------------------------------------------


def test_round_trip_from_pretrained(tmp_path):
    model = _lora_model()
    expected = model(X).logits
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(tiny_llama(), tmp_path)
    assert type(loaded) is PeftModel  # task_type None: the plain wrapper
    torch.testing.assert_close(loaded(X).logits, expected, atol=0, rtol=0)
    assert loaded.peft_config["default"].inference_mode is True


def test_bin_serialization_round_trip(tmp_path):
    model = _lora_model()
    expected = model(X).logits
    model.save_pretrained(tmp_path, safe_serialization=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "adapter_config.json", "adapter_model.bin"]
    state = torch.load(tmp_path / "adapter_model.bin", weights_only=True)
    assert set(state) == LORA_KEYS
    loaded = PeftModel.from_pretrained(tiny_llama(), tmp_path)
    torch.testing.assert_close(loaded(X).logits, expected, atol=0, rtol=0)


def test_bin_with_pickled_code_is_refused(tmp_path):
    _lora_model().save_pretrained(tmp_path, safe_serialization=False)
    torch.save({"x": torch.zeros(1), "evil": object()}, tmp_path / "adapter_model.bin")
    model = tiny_llama()
    before = _snapshot(model)
    with pytest.raises(LoadError, match="cannot read adapter weights"):
        PeftModel.from_pretrained(model, tmp_path)
    _assert_same(model, before)


def test_from_pretrained_with_adapter_name_and_load_adapter(tmp_path):
    first, second = _lora_model(seed=0), _lora_model(seed=1, r=2, target_modules=["k_proj"])
    out_first, out_second = first(X).logits, second(X).logits
    first.save_pretrained(tmp_path / "a")
    second.save_pretrained(tmp_path / "b")
    model = PeftModel.from_pretrained(tiny_llama(), tmp_path / "a", adapter_name="alpha")
    assert list(model.peft_config) == ["alpha"] and model.active_adapter == "alpha"
    torch.testing.assert_close(model(X).logits, out_first, atol=0, rtol=0)
    result = model.load_adapter(tmp_path / "b", adapter_name="beta")
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert model.active_adapter == "alpha"  # loading does not activate
    torch.testing.assert_close(model(X).logits, out_first, atol=0, rtol=0)
    model.set_adapter("beta")
    torch.testing.assert_close(model(X).logits, out_second, atol=1e-6, rtol=0)
    # saving again writes both, each in the PEFT layout
    model.save_pretrained(tmp_path / "both")
    assert set(load_file(str(tmp_path / "both" / "alpha" / "adapter_model.safetensors"))) == LORA_KEYS


def test_is_trainable(tmp_path):
    _lora_model().save_pretrained(tmp_path)
    frozen = PeftModel.from_pretrained(tiny_llama(), tmp_path)
    assert not any(p.requires_grad for p in frozen.parameters())
    assert not frozen.training
    trainable = PeftModel.from_pretrained(tiny_llama(), tmp_path, is_trainable=True)
    names = {n for n, p in trainable.named_parameters() if p.requires_grad}
    assert names and all(".lora_" in n for n in names) and len(names) == len(LORA_KEYS)
    assert trainable.peft_config["default"].inference_mode is False
    model = _lora_model()
    model.load_adapter(tmp_path, adapter_name="inference")
    model.load_adapter(tmp_path, adapter_name="trainable", is_trainable=True)
    model.set_adapter("inference")
    assert not any(p.requires_grad for p in model.parameters())
    model.set_adapter("trainable")
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n.replace("lora_A.", "lora_A.trainable.").replace("lora_B.", "lora_B.trainable.") for n in LORA_KEYS}


@pytest.mark.parametrize("name", ["training", "keys", "forward", "a.b", "../up", "lora_x", "__base__"])
def test_unusable_adapter_names_are_rejected_before_anything_changes(tmp_path, name):
    from peft_core import AdapterNameError

    _lora_model().save_pretrained(tmp_path)
    model = _lora_model()
    before = _snapshot(model)
    with pytest.raises(AdapterNameError, match=repr(name).replace(".", r"\.")):
        model.load_adapter(tmp_path, adapter_name=name)
    _assert_same(model, before)
    assert list(model.peft_config) == ["default"]


def test_wrong_shapes_raise_and_leave_a_plain_model_untouched(tmp_path):
    _lora_model(r=4).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    config["r"] = 2
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    model = tiny_llama()
    model.model.embed_tokens.weight.requires_grad_(False)  # the user's own flags come back too
    before = _snapshot(model)
    with pytest.raises(LoadError) as info:
        PeftModel.from_pretrained(model, tmp_path)
    message = str(info.value)
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in message
    assert "(4, 32)" in message and "(2, 32)" in message
    _assert_same(model, before)


def test_wrong_shapes_in_load_adapter_leave_the_peft_model_untouched(tmp_path):
    _lora_model(r=4).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    config["r"] = 8
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    model = _lora_model(target_modules=["q_proj", "o_proj"], modules_to_save=["lm_head"])
    model.get_base_model().model.norm.weight.requires_grad_(True)  # a base parameter the user unfroze
    before = _snapshot(model)
    with pytest.raises(LoadError, match=r"checkpoint \(4, 32\) vs model \(8, 32\)"):
        model.load_adapter(tmp_path, adapter_name="bad")
    _assert_same(model, before)
    assert list(model.peft_config) == ["default"] and model.active_adapter == "default"


def test_missing_and_unexpected_keys_reported(tmp_path):
    _lora_model().save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "adapter_model.safetensors"))
    dropped = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"
    del state[dropped]
    state["base_model.model.model.layers.0.mlp.up_proj.lora_A.weight"] = torch.zeros(4, 32)
    save_file(state, str(tmp_path / "adapter_model.safetensors"), metadata={"format": "pt"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = PeftModel.from_pretrained(tiny_llama(), tmp_path)
    text = " ".join(str(w.message) for w in caught)
    assert dropped in text and "up_proj.lora_A.weight" in text
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = model.load_adapter(tmp_path, adapter_name="again")
    assert result.missing_keys == [dropped]
    assert result.unexpected_keys == ["base_model.model.model.layers.0.mlp.up_proj.lora_A.weight"]


def test_missing_weights_file(tmp_path):
    LoraConfig(target_modules=["q_proj"]).save_pretrained(tmp_path)
    model = tiny_llama()
    before = _snapshot(model)
    with pytest.raises(LoadError, match="no adapter_model.safetensors or adapter_model.bin"):
        PeftModel.from_pretrained(model, tmp_path)
    _assert_same(model, before)


# -- task wrappers -----------------------------------------------------------------------------


def _head_model(kind: str) -> nn.Module:
    from transformers import LlamaForQuestionAnswering, LlamaForTokenClassification

    config = tiny_llama().config
    config.num_labels = 3
    config.pad_token_id = 0
    torch.manual_seed(0)
    if kind == "token":
        return LlamaForTokenClassification(config).eval()
    return LlamaForQuestionAnswering(config).eval()


def test_causal_lm_wrapper_generates(tmp_path):
    model = _lora_model(task_type="CAUSAL_LM")
    assert type(model) is PeftModelForCausalLM
    out = model.generate(input_ids=X, max_new_tokens=4, do_sample=False)
    assert out.shape == (2, X.shape[1] + 4)
    with model.disable_adapter():
        base_out = model.generate(input_ids=X, max_new_tokens=4, do_sample=False)
    merged = model.merge_and_unload()
    torch.testing.assert_close(merged.generate(input_ids=X, max_new_tokens=4, do_sample=False), out)
    assert not torch.equal(out, base_out)


def test_seq_cls_wrapper_saves_the_head_under_its_own_name(tmp_path):
    torch.manual_seed(3)
    model = get_peft_model(tiny_llama_seq_cls(), _config(task_type="SEQ_CLS"))
    assert type(model) is PeftModelForSequenceClassification
    inner = model.get_base_model()
    assert isinstance(inner.score, ModulesToSaveWrapper)
    assert inner.score.modules_to_save["default"].weight.requires_grad
    with torch.no_grad():  # "train" the head copy
        inner.score.modules_to_save["default"].weight.add_(0.5)
    expected = model(X).logits
    model.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert set(state) == LORA_KEYS | {"base_model.model.score.weight"}
    assert json.loads((tmp_path / "adapter_config.json").read_text())["modules_to_save"] == ["classifier", "score"]
    loaded = PeftModel.from_pretrained(tiny_llama_seq_cls(), tmp_path)
    assert type(loaded) is PeftModelForSequenceClassification
    torch.testing.assert_close(loaded(X).logits, expected, atol=0, rtol=0)


@pytest.mark.parametrize("kind, klass, head", [
    ("token", PeftModelForTokenClassification, "score"),
    ("qa", PeftModelForQuestionAnswering, "qa_outputs"),
])
def test_token_cls_and_qa_wrappers(tmp_path, kind, klass, head):
    task = "TOKEN_CLS" if kind == "token" else "QUESTION_ANS"
    torch.manual_seed(4)
    model = get_peft_model(_head_model(kind), _config(task_type=task))
    assert type(model) is klass
    assert isinstance(getattr(model.get_base_model(), head), ModulesToSaveWrapper)
    out = model(input_ids=X)
    expected = out.logits if kind == "token" else out.start_logits
    model.save_pretrained(tmp_path)
    assert f"base_model.model.{head}.weight" in load_file(str(tmp_path / "adapter_model.safetensors"))
    loaded = PeftModel.from_pretrained(_head_model(kind), tmp_path)
    assert type(loaded) is klass
    out = loaded(input_ids=X)
    torch.testing.assert_close(out.logits if kind == "token" else out.start_logits, expected, atol=0, rtol=0)


def test_feature_extraction_wrapper(tmp_path):
    torch.manual_seed(5)
    model = get_peft_model(tiny_llama().model, _config(task_type="FEATURE_EXTRACTION"))
    assert type(model) is PeftModelForFeatureExtraction
    expected = model(input_ids=X).last_hidden_state
    model.save_pretrained(tmp_path)
    assert set(load_file(str(tmp_path / "adapter_model.safetensors"))) == {
        k.replace("base_model.model.model.", "base_model.model.") for k in LORA_KEYS}
    loaded = PeftModel.from_pretrained(tiny_llama().model, tmp_path)
    assert type(loaded) is PeftModelForFeatureExtraction
    torch.testing.assert_close(loaded(input_ids=X).last_hidden_state, expected, atol=0, rtol=0)


def test_seq2seq_wrapper_with_t5(tmp_path):
    torch.manual_seed(6)
    model = get_peft_model(tiny_t5(), LoraConfig(r=4, target_modules=["q", "v"], init_lora_weights=False,
                                                 task_type="SEQ_2_SEQ_LM"))
    assert type(model) is PeftModelForSeq2SeqLM
    labels = token_batch(length=5, seed=1)
    out = model(input_ids=X, labels=labels)
    assert out.loss.ndim == 0
    generated = model.generate(input_ids=X, max_new_tokens=3, do_sample=False)
    assert generated.shape[0] == 2
    model.save_pretrained(tmp_path)
    keys = set(load_file(str(tmp_path / "adapter_model.safetensors")))
    assert "base_model.model.encoder.block.0.layer.0.SelfAttention.q.lora_A.weight" in keys
    assert "base_model.model.decoder.block.1.layer.1.EncDecAttention.v.lora_B.weight" in keys
    loaded = PeftModel.from_pretrained(tiny_t5(), tmp_path)
    assert type(loaded) is PeftModelForSeq2SeqLM
    torch.testing.assert_close(loaded(input_ids=X, labels=labels).logits, out.logits, atol=0, rtol=0)
    torch.testing.assert_close(loaded.generate(input_ids=X, max_new_tokens=3, do_sample=False), generated)


def test_config_round_trip_through_save(tmp_path):
    model = _lora_model(task_type="CAUSAL_LM", lora_alpha=16, rank_pattern={"v_proj": 2})
    model.save_pretrained(tmp_path)
    config = PeftConfig.from_pretrained(tmp_path)
    assert config.rank_pattern == {"v_proj": 2} and config.lora_alpha == 16 and config.r == 4
    assert config.target_modules == {"q_proj", "v_proj"}
    assert VOCAB == 97  # the tiny models' vocabulary, used in shapes above
