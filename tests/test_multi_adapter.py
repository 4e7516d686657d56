"""Several adapters on one model: management, status reports, mixed batches, merging into the base."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from peft_core import (
    AdapterNameError,
    LoraConfig,
    MergeError,
    PeftModel,
    get_layer_status,
    get_model_status,
    get_peft_model,
)
from peft_core.conformance.models import mlp, tiny_llama, tiny_llama_seq_cls, tiny_t5, token_batch
from peft_core.layer import AdapterLayer


def lora(**kw) -> LoraConfig:
    kw.setdefault("r", 4)
    kw.setdefault("init_lora_weights", False)  # non-zero B: every adapter changes the output
    kw.setdefault("target_modules", ["lin0", "lin1"])
    return LoraConfig(**kw)


def two_adapters(targets=("lin0", "lin1"), **kw):
    torch.manual_seed(0)
    model = get_peft_model(mlp(), lora(target_modules=list(targets), **kw), adapter_name="a")
    model.add_adapter("b", lora(target_modules=list(targets), lora_alpha=16, **kw))
    return model


X = token_batch(4, 6)


def out(model, **kw):
    with torch.no_grad():
        return model(X, **kw)


# -- management ------------------------------------------------------------------------------


def test_add_adapter_does_not_activate_and_set_adapter_switches():
    model = two_adapters()
    assert model.active_adapter == "a" and model.active_adapters == ["a"]
    assert list(model.peft_config) == ["a", "b"]
    y_a = out(model)
    model.set_adapter("b")
    assert model.active_adapter == "b"
    y_b = out(model)
    assert not torch.allclose(y_a, y_b)
    model.set_adapter("a")
    torch.testing.assert_close(out(model), y_a)


def test_only_active_adapter_trains():
    model = two_adapters()
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    assert all(v for n, v in grads.items() if ".a." in n or n.endswith(".a"))
    assert not any(v for n, v in grads.items() if ".b." in n)
    assert not any(v for n, v in grads.items() if "lora_" not in n)
    model.set_adapter("b")
    assert all(p.requires_grad for n, p in model.named_parameters() if ".b." in n)
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".a." in n)
    model.set_adapter("b", inference_mode=True)
    assert not any(p.requires_grad for p in model.parameters())


def test_set_requires_grad_leaves_activity_alone():
    model = two_adapters()
    model.set_requires_grad("b", True)
    assert all(p.requires_grad for n, p in model.named_parameters() if ".b." in n)
    assert model.active_adapters == ["a"]
    model.set_requires_grad(["a", "b"], False)
    assert not any(p.requires_grad for p in model.parameters())
    with pytest.raises(AdapterNameError):
        model.set_requires_grad("nope")


def test_several_active_adapters_sum_their_deltas():
    # only the output layer is adapted, so the deltas add up exactly at the model output
    model = two_adapters(targets=("lin1",))
    with model.disable_adapter():
        base = out(model)
    y_a = out(model)
    model.set_adapter("b")
    y_b = out(model)
    model.set_adapter(["a", "b"])
    assert model.active_adapters == ["a", "b"] and model.active_adapter == ["a", "b"]
    torch.testing.assert_close(out(model), base + (y_a - base) + (y_b - base))
    assert all(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)


def test_set_adapter_rejects_unknown_and_empty():
    model = two_adapters()
    with pytest.raises(AdapterNameError, match="nope"):
        model.set_adapter("nope")
    with pytest.raises(AdapterNameError):
        model.set_adapter([])
    assert model.active_adapters == ["a"]


def test_disable_adapter_context_and_layer_switches():
    base = out(mlp())
    model = two_adapters()
    y = out(model)
    with model.disable_adapter():
        torch.testing.assert_close(out(model), base)
    torch.testing.assert_close(out(model), y)
    model.disable_adapter_layers()
    torch.testing.assert_close(out(model), base)
    assert get_model_status(model).enabled is False
    model.enable_adapter_layers()
    torch.testing.assert_close(out(model), y)


def test_disable_adapter_restores_even_after_an_error():
    model = two_adapters()
    y = out(model)
    with pytest.raises(RuntimeError):
        with model.disable_adapter():
            raise RuntimeError("boom")
    torch.testing.assert_close(out(model), y)


def test_delete_active_adapter_moves_activity_deterministically():
    torch.manual_seed(0)
    model = get_peft_model(mlp(), lora(), adapter_name="zeta")
    model.add_adapter("beta", lora())
    model.add_adapter("alpha", lora())
    with pytest.warns(UserWarning, match="'alpha' is now active"):
        model.delete_adapter("zeta")
    assert model.active_adapters == ["alpha"]  # sorted first remaining, as PEFT chooses
    assert sorted(model.peft_config) == ["alpha", "beta"]
    assert not any("zeta" in n for n, _ in model.named_parameters())


def test_delete_inactive_adapter_keeps_the_active_one():
    model = two_adapters()
    y = out(model)
    model.delete_adapter("b")
    assert model.active_adapters == ["a"] and list(model.peft_config) == ["a"]
    torch.testing.assert_close(out(model), y)
    with pytest.raises(AdapterNameError):
        model.delete_adapter("b")


def test_delete_merged_adapter_raises_and_changes_nothing():
    model = two_adapters()
    model.merge_adapter()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(MergeError, match="unmerge"):
        model.delete_adapter("a")
    assert list(model.peft_config) == ["a", "b"]
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    model.unmerge_adapter()
    with pytest.warns(UserWarning, match="now active"):
        model.delete_adapter("a")
    assert model.active_adapters == ["b"]


def test_delete_last_adapter_leaves_the_plain_model():
    model = get_peft_model(mlp(), lora(), adapter_name="a")
    model.delete_adapter("a")
    assert model.peft_config == {} and model.active_adapters == []
    assert not any(isinstance(m, AdapterLayer) for m in model.modules())
    torch.testing.assert_close(out(model), out(mlp()))


def test_load_adapter_next_to_existing_and_trainability(tmp_path):
    src = two_adapters()
    src.save_pretrained(tmp_path)  # default-less: both go to subfolders
    src.set_adapter("b")
    y_b = out(src)
    torch.manual_seed(1)
    model = get_peft_model(mlp(), lora(), adapter_name="mine")
    model.load_adapter(tmp_path / "b", adapter_name="other")
    assert model.active_adapters == ["mine"]
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".other." in n)
    model.set_adapter("other")
    torch.testing.assert_close(out(model), y_b)
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".other." in n)  # loaded frozen
    model.load_adapter(tmp_path / "a", adapter_name="train_me", is_trainable=True)
    model.set_adapter("train_me")
    assert all(p.requires_grad for n, p in model.named_parameters() if ".train_me." in n)


# -- status ----------------------------------------------------------------------------------


def test_layer_status_fields():
    model = two_adapters()
    status = get_layer_status(model)
    assert [s.name for s in status] == ["model.lin0", "model.lin1"]  # relative to the tuner, as in PEFT
    s = status[0]
    assert s.module_type == "lora.LoraLinear"
    assert s.enabled is True and s.active_adapters == ["a"] and s.merged_adapters == []
    assert s.requires_grad == {"a": True, "b": False}
    assert s.available_adapters == ["a", "b"]
    assert s.devices == {"a": ["cpu"], "b": ["cpu"]}
    assert s.quantization_backend is None
    assert model.get_layer_status() == status


def test_model_status_fields_and_irregular_states():
    model = two_adapters()
    st = model.get_model_status()
    assert st.base_model_type == "MLP"
    assert st.adapter_model_type == "AdapterModel"
    assert st.peft_types == {"a": "LORA", "b": "LORA"}
    assert st.num_adapter_layers == 2
    assert (st.trainable_params, st.total_params) == model.get_nb_trainable_parameters()
    assert st.enabled is True and st.active_adapters == ["a"] and st.merged_adapters == []
    assert st.requires_grad == {"a": True, "b": False}
    assert st.available_adapters == ["a", "b"] and st.devices == {"a": ["cpu"], "b": ["cpu"]}
    assert st.quantization_backend is None

    lin0 = model.base_model.model.lin0
    lin0.merge(adapter_names=["a"])  # merged in one layer only
    assert get_model_status(model).merged_adapters == "irregular"
    lin0.unmerge()
    model.merge_adapter()
    assert get_model_status(model).merged_adapters == ["a"]
    model.unmerge_adapter()
    lin0.enable_adapters(False)
    assert get_model_status(model).enabled == "irregular"
    lin0.enable_adapters(True)
    lin0.set_adapter("b")
    assert get_model_status(model).active_adapters == "irregular"
    lin0.set_adapter("a")
    lin0.lora_A["b"].weight.requires_grad_(True)
    assert get_model_status(model).requires_grad["b"] == "irregular"


def test_status_on_model_without_adapters_raises():
    with pytest.raises(Exception, match="no adapter layers"):
        get_layer_status(mlp())


# -- mixed batches ---------------------------------------------------------------------------


def llama_pair():
    torch.manual_seed(0)
    model = get_peft_model(tiny_llama(), lora(target_modules=["q_proj", "v_proj", "down_proj"], task_type="CAUSAL_LM"),
                           adapter_name="a")
    model.add_adapter("b", lora(target_modules=["q_proj", "o_proj"], lora_alpha=32))
    return model


def per_row_reference(model, names, run):
    rows = []
    for i, name in enumerate(names):
        if name == "__base__":
            with model.disable_adapter():
                rows.append(run(i))
        else:
            model.set_adapter(name)
            rows.append(run(i))
    model.set_adapter("a")
    return torch.cat(rows)


def test_mixed_batch_forward_matches_per_adapter_rows():
    model = llama_pair()
    ids = token_batch(5, 7)
    names = ["a", "__base__", "b", "a", "b"]
    with torch.no_grad():
        mixed = model(input_ids=ids, adapter_names=names).logits
        ref = per_row_reference(model, names, lambda i: model(input_ids=ids[i : i + 1]).logits)
    torch.testing.assert_close(mixed, ref, rtol=1e-5, atol=1e-5)
    assert model.active_adapters == ["a"]
    with torch.no_grad():  # routing is gone after the call
        torch.testing.assert_close(model(input_ids=ids).logits[:1], ref[:1], rtol=1e-5, atol=1e-5)


def test_mixed_batch_with_modules_to_save_head():
    torch.manual_seed(0)
    model = get_peft_model(tiny_llama_seq_cls(), lora(target_modules=["q_proj"], task_type="SEQ_CLS"), adapter_name="a")
    model.add_adapter("b", lora(target_modules=["q_proj"], task_type="SEQ_CLS"))
    with torch.no_grad():
        for name in ("a", "b"):  # make the heads differ
            model.base_model.model.score.modules_to_save[name].weight.normal_()
    ids = token_batch(3, 6)
    names = ["b", "__base__", "a"]
    with torch.no_grad():
        mixed = model(input_ids=ids, adapter_names=names).logits
        ref = per_row_reference(model, names, lambda i: model(input_ids=ids[i : i + 1]).logits)
    torch.testing.assert_close(mixed, ref, rtol=1e-5, atol=1e-5)


def test_mixed_batch_generate_matches_per_adapter():
    # beams and several returned sequences: generate repeats every row; routing must follow
    kwargs = {"num_beams": 3, "num_return_sequences": 2}
    model = llama_pair()
    ids = token_batch(3, 5)
    names = ["b", "__base__", "a"]
    gen = dict(max_new_tokens=3, pad_token_id=0, do_sample=False, **kwargs)
    with torch.no_grad():
        mixed = model.generate(input_ids=ids, adapter_names=names, **gen)
        ref = per_row_reference(model, names, lambda i: model.generate(input_ids=ids[i : i + 1], **gen))
    assert mixed.shape[0] == 3 * kwargs.get("num_return_sequences", 1)
    assert torch.equal(mixed, ref)


def test_mixed_batch_sampling_with_several_return_sequences_routes_expanded_rows():
    model = llama_pair()
    ids = token_batch(2, 5)
    with torch.no_grad():
        out_ = model.generate(input_ids=ids, adapter_names=["a", "b"], max_new_tokens=3, pad_token_id=0,
                              do_sample=True, num_return_sequences=3)
    assert out_.shape == (6, 8)


def test_mixed_batch_generate_seq2seq_beams():
    torch.manual_seed(0)
    model = get_peft_model(tiny_t5(), lora(target_modules=["q", "v"], task_type="SEQ_2_SEQ_LM"), adapter_name="a")
    model.add_adapter("b", lora(target_modules=["q", "v"], lora_alpha=32))
    ids = token_batch(3, 6)
    names = ["a", "b", "__base__"]
    gen = dict(max_new_tokens=3, num_beams=2, do_sample=False)
    with torch.no_grad():
        mixed = model.generate(input_ids=ids, adapter_names=names, **gen)
        ref = per_row_reference(model, names, lambda i: model.generate(input_ids=ids[i : i + 1], **gen))
    assert torch.equal(mixed, ref)


def test_mixed_batch_errors_leave_no_routing_behind():
    model = llama_pair()
    ids = token_batch(2, 4)
    with pytest.raises(AdapterNameError, match="2 rows"):
        model(input_ids=ids, adapter_names=["a"])
    with pytest.raises(AdapterNameError, match="unknown"):
        model(input_ids=ids, adapter_names=["a", "zzz"])
    with pytest.raises(AdapterNameError, match="list"):
        model(input_ids=ids, adapter_names="ab")
    model.merge_adapter()
    with pytest.raises(MergeError):
        model(input_ids=ids, adapter_names=["a", "b"])
    model.unmerge_adapter()
    assert all(getattr(m, "_routing", None) is None for m in model.modules())


# -- merging into the base -------------------------------------------------------------------


def test_merge_unmerge_roundtrip_keeps_outputs():
    model = two_adapters()
    base_weights = {k: v.clone() for k, v in model.state_dict().items() if "base_layer" in k}
    y = out(model)
    model.merge_adapter()
    torch.testing.assert_close(out(model), y, rtol=1e-5, atol=1e-5)
    assert get_model_status(model).merged_adapters == ["a"]
    model.unmerge_adapter()
    assert get_model_status(model).merged_adapters == []
    torch.testing.assert_close(out(model), y, rtol=1e-5, atol=1e-5)
    for k, v in base_weights.items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=1e-5, atol=1e-6)


def test_merge_and_unload_returns_plain_model(capsys):
    model = two_adapters()
    model.set_adapter(["a", "b"])
    y = out(model)
    plain = model.merge_and_unload(progressbar=True)
    assert isinstance(plain, nn.Module) and not isinstance(plain, PeftModel)
    assert not any(isinstance(m, AdapterLayer) for m in plain.modules())
    assert type(plain.lin0) is nn.Linear
    with torch.no_grad():
        torch.testing.assert_close(plain(X), y, rtol=1e-5, atol=1e-5)
    assert "Unloading and merging" in capsys.readouterr().err


def test_merge_and_unload_selected_adapter_names():
    model = two_adapters()
    model.set_adapter("b")
    y_b = out(model)
    model.set_adapter("a")
    plain = model.merge_and_unload(adapter_names=["b"])
    with torch.no_grad():
        torch.testing.assert_close(plain(X), y_b, rtol=1e-5, atol=1e-5)


def test_safe_merge_refuses_nan_and_leaves_model_unchanged():
    model = two_adapters()
    with torch.no_grad():
        model.base_model.model.lin1.lora_B["a"].weight[0, 0] = float("nan")
    before = {k: v.clone() for k, v in model.state_dict().items() if "base_layer" in k}
    with pytest.raises(MergeError, match="NaN"):
        model.merge_and_unload(safe_merge=True)
    with pytest.raises(MergeError, match="NaN"):
        model.merge_adapter(safe_merge=True)
    for k, v in before.items():
        assert torch.equal(model.state_dict()[k], v), k
    assert isinstance(model.base_model.model.lin0, AdapterLayer)


def test_unload_gives_back_the_base_model():
    base = out(mlp())
    model = two_adapters()
    model.merge_adapter()
    plain = model.unload()  # unmerges first
    assert not any(isinstance(m, AdapterLayer) for m in plain.modules())
    with torch.no_grad():
        torch.testing.assert_close(plain(X), base, rtol=1e-5, atol=1e-5)


def test_injected_model_is_not_a_peft_model_but_reports_status():
    from peft_core import inject_adapter_in_model

    model = inject_adapter_in_model(lora(), mlp())
    st = get_model_status(model)
    assert st.adapter_model_type == "None" and st.peft_types == {"default": "LORA"}
    assert st.num_adapter_layers == 2 and st.base_model_type == "other"
    assert [s.name for s in get_layer_status(model)] == ["lin0", "lin1"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_layer_status(model)


def test_adding_and_deleting_inactive_adapters_leaves_the_others_flags_alone(tmp_path):
    """Only the added (or deleted) inactive adapter changes, as in PEFT; the active one keeps training."""
    model = get_peft_model(mlp(), lora())
    model.add_adapter("second", lora())
    model.save_pretrained(tmp_path)
    second = [p for n, p in model.named_parameters() if ".second." in n]
    for param in second:  # unusual but legal: the user trains an inactive adapter's tensors by hand
        param.requires_grad_(True)
    model.load_adapter(tmp_path / "second", adapter_name="third", is_trainable=True)
    model.delete_adapter("third")
    assert all(p.requires_grad for p in second)
    assert all(p.requires_grad for n, p in model.named_parameters() if ".default." in n)
    model.set_adapter("default")  # an explicit switch still sets every flag
    assert not any(p.requires_grad for p in second)
