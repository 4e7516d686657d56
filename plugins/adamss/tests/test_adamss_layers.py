"""AdaMSS's defining behaviour: clustered subspaces of the weight's singular vectors, each updating only its rows."""

from __future__ import annotations

import pytest
import torch

from peft_core import get_peft_model
from peft_core.conformance.models import mlp, tiny_gpt2, tiny_llama, token_batch
from peft_core.errors import ConfigError, TargetModulesError
from peft_core_adamss import AdamssConfig, AdamssLayer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _layer(model, name: str = "base_model.model.lin0") -> AdamssLayer:
    return dict(model.named_modules())[name]


def test_every_output_row_belongs_to_exactly_one_subspace():
    layer = _layer(get_peft_model(mlp(), AdamssConfig(target_modules=["lin0"], r=8, num_subspaces=4)))
    rows = layer.scatter_index["default"]
    assert sorted(rows.tolist()) == list(range(24))
    sizes = [b.shape[0] for b in layer.adamss_B["default"]]
    assert sum(sizes) == 24 and len(sizes) == layer.num_subspaces["default"] == 4


def test_projection_and_subspace_bases_are_orthonormal_and_the_bias_is_an_input_column():
    layer = _layer(get_peft_model(mlp(), AdamssConfig(target_modules=["lin0"], r=6, num_subspaces=3, subspace_rank=2)))
    projection = layer.adamss_newB["default"]
    assert projection.shape == (6, 16 + 1)  # R right singular vectors over in features + the bias column
    assert torch.allclose(projection @ projection.T, torch.eye(6), atol=1e-5)
    for A in layer.adamss_A["default"]:
        assert A.shape[1] == 6
        assert torch.allclose(A @ A.T, torch.eye(A.shape[0]), atol=1e-5)


def test_a_subspace_changes_only_its_own_rows():
    layer = _layer(get_peft_model(mlp(), AdamssConfig(target_modules=["lin0"], r=8, num_subspaces=3)))
    with torch.no_grad():
        layer.adamss_B["default"][1].normal_()
    sizes = [b.shape[0] for b in layer.adamss_B["default"]]
    own = set(layer.scatter_index["default"][sizes[0]: sizes[0] + sizes[1]].tolist())
    delta = layer.get_delta_weight("default")
    changed = {int(i) for i in torch.nonzero(delta.abs().sum(1) > 0).flatten()}
    assert changed == own
    bias = layer.get_delta_bias("default")
    assert {int(i) for i in torch.nonzero(bias)} <= own


def test_forward_equals_merged_weights_including_the_bias():
    model = get_peft_model(mlp(), AdamssConfig(target_modules=["lin0"], r=8, num_subspaces=3, init_weights=None))
    layer = _layer(model)
    x = torch.randn(5, 16)
    with torch.no_grad():
        expected = torch.nn.functional.linear(x, layer.base_layer.weight + layer.get_delta_weight("default"),
                                              layer.base_layer.bias + layer.get_delta_bias("default"))
        assert torch.allclose(layer(x), expected, atol=1e-5)


def test_clustering_is_the_same_on_every_build_and_follows_the_seed():
    def rows(seed: int) -> torch.Tensor:
        model = get_peft_model(tiny_llama(), AdamssConfig(target_modules=["gate_proj"], r=8, num_subspaces=4,
                                                          random_seed=seed))
        return _layer(model, "base_model.model.model.layers.0.mlp.gate_proj").scatter_index["default"]

    assert torch.equal(rows(0), rows(0))
    assert any(not torch.equal(rows(0), rows(s)) for s in (1, 2, 3))


def test_identity_only_with_orthogonal_init():
    inputs = {"input_ids": token_batch()}
    with torch.no_grad():
        base = tiny_llama()(**inputs).logits
        same = get_peft_model(tiny_llama(), AdamssConfig(target_modules=["v_proj"], r=8))(**inputs).logits
        random = AdamssConfig(target_modules=["v_proj"], r=8, init_weights=None)
        moved = get_peft_model(tiny_llama(), random)(**inputs).logits
    assert torch.equal(same, base)
    assert not torch.equal(moved, base)


def test_init_weights_false_means_none_as_in_peft_and_bad_values_are_refused():
    assert AdamssConfig(target_modules=["x"], init_weights=False).init_weights is None
    with pytest.raises(ConfigError, match="init_warmup"):
        AdamssConfig(target_modules=["x"], use_asa=True, init_warmup=5, final_warmup=5)


def test_conv1d_layers_are_refused_clearly():
    with pytest.raises(TargetModulesError, match="nn.Linear"):
        get_peft_model(tiny_gpt2(), AdamssConfig(target_modules=["c_attn"]))
