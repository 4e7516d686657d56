"""Trainable tokens' own behaviour: only the chosen rows train, merging writes rows, tied heads share them."""

from __future__ import annotations

import pytest
import torch

from peft_core import LoraConfig, get_peft_model
from peft_core.conformance.models import mlp, tiny_llama
from peft_core.errors import PeftCoreError
from peft_core.serialization import get_peft_model_state_dict
from peft_core_trainable_tokens import TrainableTokensConfig, TrainableTokensLayer

IDS = torch.tensor([[1, 5, 2, 7]])


def _step(model, inputs):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    model(**inputs).logits.float().pow(2).mean().backward()
    opt.step()


def test_only_the_chosen_rows_change_when_training():
    model = get_peft_model(tiny_llama(), TrainableTokensConfig(token_indices=[5, 7]))
    layer = model.base_model.model.model.embed_tokens
    assert isinstance(layer, TrainableTokensLayer) and model.peft_config["default"].target_modules == "model.embed_tokens"
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        "base_model.model.model.embed_tokens.trainable_tokens_delta.default"]
    base_rows = layer.base_layer.weight.detach().clone()
    _step(model, {"input_ids": IDS})
    assert torch.equal(layer.base_layer.weight, base_rows)  # the embedding itself is frozen
    model.merge_adapter()
    changed = (layer.base_layer.weight != base_rows).any(dim=1).nonzero().flatten().tolist()
    assert changed == [5, 7]  # merging wrote the two trained rows and nothing else
    model.unmerge_adapter()
    assert torch.equal(layer.base_layer.weight, base_rows)


def test_a_tied_head_uses_the_trained_rows_and_saves_them_under_both_names():
    model = get_peft_model(tiny_llama(tie_word_embeddings=True), TrainableTokensConfig(token_indices=[5, 7]))
    inner = model.base_model.model
    head, embedding = inner.lm_head, inner.model.embed_tokens
    assert isinstance(head, TrainableTokensLayer) and head.tied_to is embedding
    assert head.trainable_tokens_delta is embedding.trainable_tokens_delta
    with torch.no_grad():
        embedding.trainable_tokens_delta["default"].add_(1.0)
    x = torch.randn(1, 2, 32)
    rows = embedding.trainable_tokens_delta["default"]
    torch.testing.assert_close(head(x)[..., [5, 7]], x @ rows.T)
    assert sorted(get_peft_model_state_dict(model)) == ["base_model.model.lm_head.trainable_tokens_delta",
                                                       "base_model.model.model.embed_tokens.trainable_tokens_delta"]
    model.delete_adapter("default")
    assert not any(isinstance(m, TrainableTokensLayer) for m in model.modules())


def test_overlapping_active_adapters_are_refused_and_disjoint_ones_combine():
    model = get_peft_model(mlp(), TrainableTokensConfig(token_indices=[1, 2], target_modules=["emb"]), adapter_name="a")
    model.add_adapter("b", TrainableTokensConfig(token_indices=[2, 3], target_modules=["emb"]))
    model.add_adapter("c", TrainableTokensConfig(token_indices=[4], target_modules=["emb"]))
    model.base_model.set_adapter(["a", "b"])
    with pytest.raises(PeftCoreError, match="both train token 2"):
        model(input_ids=IDS)
    model.base_model.set_adapter(["a", "c"])
    layer = model.base_model.model.emb
    with torch.no_grad():
        layer.trainable_tokens_delta["a"].fill_(1.0)
        layer.trainable_tokens_delta["c"].fill_(2.0)
    out = layer(torch.tensor([[1, 4, 3]]))
    assert out[0, 0].eq(1.0).all() and out[0, 1].eq(2.0).all()
    assert torch.equal(out[0, 2], layer.base_layer.weight[3])


def test_bad_indices_and_targets_are_refused_with_what_to_do():
    with pytest.raises(PeftCoreError, match="more than once"):
        TrainableTokensConfig(token_indices=[1, 1])
    with pytest.raises(PeftCoreError, match="out of range"):
        get_peft_model(mlp(), TrainableTokensConfig(token_indices=[500], target_modules=["emb"]))
    with pytest.raises(PeftCoreError, match="no module of the model"):
        get_peft_model(tiny_llama(), LoraConfig(target_modules=["q_proj"], trainable_token_indices={"wte": [1]}))
    with pytest.raises(PeftCoreError, match="modules_to_save"):
        get_peft_model(tiny_llama(), LoraConfig(target_modules=["q_proj"], modules_to_save=["embed_tokens"],
                                                trainable_token_indices={"embed_tokens": [1]}))


def test_lora_adapter_with_tokens_activates_and_deletes_as_one():
    model = get_peft_model(tiny_llama(), LoraConfig(target_modules=["q_proj"], trainable_token_indices=[1]),
                           adapter_name="x")
    model.add_adapter("y", LoraConfig(target_modules=["q_proj"], trainable_token_indices=[2]))
    embedding = model.base_model.model.model.embed_tokens
    assert embedding.adapter_names == ["x", "y"] and embedding.active_adapters == ["x"]
    model.set_adapter("y")
    assert embedding.active_adapters == ["y"]
    assert embedding.trainable_tokens_delta["y"].requires_grad and not embedding.trainable_tokens_delta["x"].requires_grad
    model.delete_adapter("x")
    assert embedding.adapter_names == ["y"]


def test_a_head_targeted_next_to_its_tied_embedding_becomes_tied():
    # (PEFT 0.21.2 wraps such a head twice and cannot run it; here the head simply shares the embedding's rows)
    config = TrainableTokensConfig(token_indices=[5], target_modules=["embed_tokens", "lm_head"])
    model = get_peft_model(tiny_llama(tie_word_embeddings=True), config)
    inner = model.base_model.model
    assert inner.lm_head.tied_to is inner.model.embed_tokens
    assert not isinstance(inner.lm_head.base_layer, TrainableTokensLayer)
