"""Parity with Hugging Face PEFT: add_weighted_adapter, the merge utilities, mixed batches, status reports.

Both libraries get the same adapters (our state dict loaded into PEFT's model, whose keys
are identical) and the same seed; results must agree to float rounding. Random pruning
(DARE) draws in the same order in both, so it matches too for one seed.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from peft_core import LoraConfig, get_peft_model
from peft_core.conformance.models import mlp, tiny_gpt2, tiny_llama, token_batch
from peft_core.merging import (
    calculate_majority_sign_mask,
    dare_linear,
    dare_ties,
    disjoint_merge,
    magnitude_prune,
    prune,
    task_arithmetic,
    ties,
)

peft = pytest.importorskip("peft")
pytestmark = pytest.mark.parity

COMBINATIONS = ["linear", "cat", "svd", "ties", "ties_svd", "magnitude_prune", "magnitude_prune_svd",
                "dare_linear", "dare_ties", "dare_linear_svd", "dare_ties_svd"]


def build_pair(factory, configs: dict[str, dict], task_type=None):
    """(ours, PEFT's) with identical adapters; the first config names the default adapter."""
    base = factory()
    ours = theirs = None
    torch.manual_seed(0)
    for name, kw in configs.items():
        kw = dict(kw, init_lora_weights=False, task_type=task_type)
        if ours is None:
            ours = get_peft_model(copy.deepcopy(base), LoraConfig(**kw), adapter_name=name)
            theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(**kw), adapter_name=name)
        else:
            ours.add_adapter(name, LoraConfig(**kw))
            theirs.add_adapter(name, peft.LoraConfig(**kw))
    state = ours.state_dict()
    assert set(state) == set(theirs.state_dict())
    theirs.load_state_dict(state)
    return ours.eval(), theirs.eval()


def max_diff(a, b) -> float:
    return (a - b).abs().max().item()


@pytest.fixture(scope="module")
def mlp_pair():
    targets = ["emb", "lin0", "lin1"]  # PEFT's SVD path does not handle Conv1d kernels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_pair(mlp, {"a": dict(r=4, lora_alpha=8, target_modules=targets),
                                "b": dict(r=4, lora_alpha=16, target_modules=targets),
                                "c": dict(r=2, lora_alpha=3, target_modules=["lin0", "lin1"])})


@pytest.mark.parametrize("kind", COMBINATIONS)
def test_add_weighted_adapter_matches_peft(mlp_pair, kind):
    ours, theirs = mlp_pair
    kw = {} if kind in ("linear", "cat", "svd") else {"density": 0.5}
    name = f"m_{kind}"
    for model in (ours, theirs):
        torch.manual_seed(0)
        model.add_weighted_adapter(["a", "b"], [0.7, -0.4], name, combination_type=kind, **kw)
    x = token_batch(3, 6)
    ours.set_adapter(name)
    theirs.set_adapter(name)
    with torch.no_grad():
        assert max_diff(ours(x), theirs(x)) < 1e-5
    for key, tensor in ours.state_dict().items():
        if f".{name}." in key and "lora_" in key:
            ref = theirs.state_dict()[key]
            # factors from an SVD are unique up to rounding; the rest must agree to the last bits
            assert max_diff(tensor, ref) < (1e-4 if kind.endswith("svd") else 1e-6), key
    assert ours.peft_config[name].r == theirs.peft_config[name].r
    assert ours.peft_config[name].lora_alpha == theirs.peft_config[name].lora_alpha
    ours.set_adapter("a")
    theirs.set_adapter("a")


@pytest.mark.parametrize("kind", ["cat", "svd"])
def test_different_ranks_and_svd_options_match_peft(mlp_pair, kind):
    ours, theirs = mlp_pair
    kw = {"svd_rank": 3, "svd_clamp": 0.9, "svd_full_matrices": False} if kind == "svd" else {}
    name = f"rank_{kind}"
    for model in (ours, theirs):
        model.add_weighted_adapter(["a", "c"], [1.5, 0.5], name, combination_type=kind, **kw)
    ours.set_adapter(name)
    theirs.set_adapter(name)
    x = token_batch(2, 5)
    with torch.no_grad():
        assert max_diff(ours(x), theirs(x)) < 1e-5
    ours.set_adapter("a")
    theirs.set_adapter("a")


@pytest.mark.parametrize("kind", ["cat", "svd", "linear", "ties"])
def test_gpt2_conv1d_layers_match_peft(kind):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours, theirs = build_pair(tiny_gpt2, {"a": dict(r=4, target_modules=["c_attn", "c_proj"]),
                                              "b": dict(r=4, lora_alpha=4, target_modules=["c_attn", "c_proj"])})
    kw = {"density": 0.3} if kind == "ties" else {}
    for model in (ours, theirs):
        model.add_weighted_adapter(["a", "b"], [1.0, 2.0], "m", combination_type=kind, **kw)
        model.set_adapter("m")
    x = token_batch(2, 6)
    with torch.no_grad():
        assert max_diff(ours(input_ids=x).logits, theirs(input_ids=x).logits) < 1e-4


def test_merge_utilities_match_peft():
    from peft.utils import merge_utils as ref

    torch.manual_seed(0)
    tensors = [torch.randn(7, 5) for _ in range(3)]
    weights = torch.tensor([0.5, -1.0, 2.0])
    stacked = torch.stack(tensors)
    torch.testing.assert_close(task_arithmetic(tensors, weights), ref.task_arithmetic(tensors, weights))
    torch.testing.assert_close(magnitude_prune(tensors, weights, 0.4), ref.magnitude_prune(tensors, weights, 0.4))
    for method in ("total", "frequency"):
        torch.testing.assert_close(ties(tensors, weights, 0.4, method), ref.ties(tensors, weights, 0.4, method))
        assert torch.equal(calculate_majority_sign_mask(stacked, method), ref.calculate_majority_sign_mask(stacked, method))
    mask = calculate_majority_sign_mask(stacked)
    torch.testing.assert_close(disjoint_merge(stacked, mask), ref.disjoint_merge(stacked, mask))
    torch.testing.assert_close(prune(tensors[0], 0.3, "magnitude"), ref.prune(tensors[0], 0.3, "magnitude"))
    for ours_fn, ref_fn in ((dare_linear, ref.dare_linear), (dare_ties, ref.dare_ties)):
        torch.manual_seed(5)
        got = ours_fn(tensors, weights, 0.6)
        torch.manual_seed(5)
        torch.testing.assert_close(got, ref_fn(tensors, weights, 0.6))


# -- mixed batches and status --------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_pair():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_pair(tiny_llama, {"a": dict(r=4, target_modules=["q_proj", "v_proj"]),
                                       "b": dict(r=8, lora_alpha=32, target_modules=["q_proj", "down_proj"])},
                          task_type="CAUSAL_LM")


def test_mixed_batch_forward_matches_peft(llama_pair):
    ours, theirs = llama_pair
    ids = token_batch(5, 7)
    names = ["a", "__base__", "b", "b", "a"]
    with torch.no_grad():
        assert max_diff(ours(input_ids=ids, adapter_names=names).logits,
                        theirs(input_ids=ids, adapter_names=names).logits) < 1e-5


def test_mixed_batch_beam_generate_matches_peft(llama_pair):
    ours, theirs = llama_pair
    ids = token_batch(3, 5)
    names = ["b", "a", "__base__"]
    gen = dict(max_new_tokens=4, num_beams=2, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        assert torch.equal(ours.generate(input_ids=ids, adapter_names=names, **gen),
                           theirs.generate(input_ids=ids, adapter_names=names, **gen))


@pytest.mark.filterwarnings("ignore:Already unmerged")
def test_status_reports_match_peft(llama_pair):
    from peft.peft_model import get_layer_status as ref_layers
    from peft.peft_model import get_model_status as ref_model

    ours, theirs = llama_pair
    ours.set_adapter("a")
    theirs.set_adapter("a")
    ours.base_model.model.model.layers[0].self_attn.q_proj.merge(adapter_names=["a"])
    theirs.base_model.model.model.layers[0].self_attn.q_proj.merge(adapter_names=["a"])
    try:
        mine, ref = ours.get_model_status(), ref_model(theirs)
        for field in ("base_model_type", "peft_types", "trainable_params", "total_params", "num_adapter_layers",
                      "enabled", "active_adapters", "merged_adapters", "requires_grad", "available_adapters",
                      "devices", "quantization_backend"):
            assert getattr(mine, field) == getattr(ref, field), field
        ours_layers = {s.name: s for s in ours.get_layer_status()}
        for s in ref_layers(theirs):
            name = s.name
            got = ours_layers[name]
            for field in ("enabled", "merged_adapters", "requires_grad", "available_adapters", "devices"):
                assert getattr(got, field) == getattr(s, field), (name, field)
    finally:
        ours.unmerge_adapter()
        theirs.unmerge_adapter()


def test_combined_adapter_saved_by_us_loads_in_peft(mlp_pair, tmp_path):
    ours, _ = mlp_pair
    ours.add_weighted_adapter(["a", "c"], [1.0, -0.5], "saved_svd", combination_type="svd", svd_rank=4)
    ours.save_pretrained(tmp_path, selected_adapters=["saved_svd"])
    ours.set_adapter("saved_svd")
    x = token_batch(2, 5)
    with torch.no_grad():
        expected = ours(x)
    ours.set_adapter("a")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = peft.PeftModel.from_pretrained(mlp(), tmp_path / "saved_svd")
    with torch.no_grad():
        assert max_diff(loaded(x), expected) < 1e-5
