"""Which modules an adapter goes into: every ``target_modules`` rule, its errors, and PEFT parity.

The selected module set is compared with Hugging Face PEFT's: for fixed configs through both
libraries' ``get_peft_model``, and for random configs (Hypothesis) against PEFT's own
``check_target_module_exists`` applied to every module name.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from peft_core import LoraConfig, TargetModulesError, get_peft_model
from peft_core.conformance.models import mlp, tiny_gpt2, tiny_llama, tiny_llama_seq_cls
from peft_core.layer import AdapterLayer
from peft_core.targeting import find_targets, pattern_value
from peft_core.wrappers import ModulesToSaveWrapper

peft = pytest.importorskip("peft")  # test-only oracle; installed by `make setup`
from peft.tuners.tuners_utils import BaseTunerLayer, check_target_module_exists  # noqa: E402

_LLAMA = tiny_llama()
LLAMA_NAMES = [n for n, _ in _LLAMA.named_modules() if n]


def adapted(model: nn.Module) -> set[str]:
    """Names of adapter layers, relative to the user's model."""
    return {n.removeprefix("base_model.model.") for n, m in model.named_modules() if isinstance(m, AdapterLayer)}


def peft_adapted(build, **kwargs) -> set[str]:
    model = peft.get_peft_model(build(), peft.LoraConfig(**kwargs))
    return {n.removeprefix("base_model.model.") for n, m in model.named_modules()
            if isinstance(m, BaseTunerLayer) and hasattr(m, "lora_A")}


def ours(build, **kwargs) -> set[str]:
    return adapted(get_peft_model(build(), LoraConfig(**kwargs)))


def llama_layer_names(*leaves: str, layers=(0, 1)) -> set[str]:
    group = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
             "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
    return {f"model.layers.{i}.{group[leaf]}.{leaf}" for i in layers for leaf in leaves}


# -- list entries -----------------------------------------------------------------------------


def test_list_entry_matches_full_name_and_dotted_suffix():
    assert ours(tiny_llama, target_modules=["q_proj"]) == llama_layer_names("q_proj")
    assert ours(tiny_llama, target_modules=["self_attn.v_proj"]) == llama_layer_names("v_proj")
    assert ours(tiny_llama, target_modules=["model.layers.1.mlp.up_proj"]) == {"model.layers.1.mlp.up_proj"}
    assert ours(tiny_llama, target_modules=["1.mlp.down_proj", "lm_head"]) == {"model.layers.1.mlp.down_proj", "lm_head"}


def test_partial_word_does_not_match():
    # "proj" is a substring but never a dotted suffix of "q_proj"; "layers.0.self_attn.q" neither
    model = tiny_llama()
    with pytest.raises(TargetModulesError):
        find_targets(model, LoraConfig(target_modules=["proj"]))
    with pytest.raises(TargetModulesError):
        find_targets(model, LoraConfig(target_modules=["_proj", "self_attn.q", "odel.layers.0.mlp.up_proj"]))
    assert set(find_targets(model, LoraConfig(target_modules=["proj", "up_proj"]))) == llama_layer_names("up_proj")


# -- regex ------------------------------------------------------------------------------------


def test_regex_is_a_fullmatch_on_the_full_name():
    assert ours(tiny_llama, target_modules=r".*\.(q|v)_proj") == llama_layer_names("q_proj", "v_proj")
    assert ours(tiny_llama, target_modules=r"model\.layers\.0\..*_proj") == llama_layer_names(
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", layers=(0,))
    # a search-style regex that only matches part of the name selects nothing
    with pytest.raises(TargetModulesError):
        find_targets(tiny_llama(), LoraConfig(target_modules="q_proj"))
    with pytest.raises(TargetModulesError):
        find_targets(tiny_llama(), LoraConfig(target_modules=r"layers\.0"))


# -- all-linear -------------------------------------------------------------------------------


def test_all_linear_on_causal_lm_excludes_output_head():
    got = ours(tiny_llama, target_modules="all-linear")
    assert got == llama_layer_names("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    assert "lm_head" not in got
    assert got == peft_adapted(tiny_llama, target_modules="all-linear")
    assert ours(tiny_llama, target_modules="ALL-LINEAR") == got  # case-insensitive, like PEFT


def test_all_linear_includes_conv1d():
    got = ours(tiny_gpt2, target_modules="all-linear")
    assert got == {f"transformer.h.{i}.{m}" for i in (0, 1) for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}
    assert got == peft_adapted(tiny_gpt2, target_modules="all-linear")


def test_all_linear_seq_cls_head_excluded():
    got = ours(tiny_llama_seq_cls, target_modules="all-linear", task_type="SEQ_CLS")
    assert "score" not in got and len(got) == 14
    assert got == peft_adapted(tiny_llama_seq_cls, target_modules="all-linear", task_type="SEQ_CLS")


def test_all_linear_on_plain_sequential_takes_every_linear():
    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8)), nn.Linear(8, 2))

    got = ours(build, target_modules="all-linear")
    assert got == {"0", "2.0", "3"}  # no output head to guess on a plain module
    assert got == peft_adapted(build, target_modules="all-linear")
    # embeddings and convolutions are not "linear"
    assert ours(mlp, target_modules="all-linear") == {"lin0", "lin1"}


# -- exclusions -------------------------------------------------------------------------------


def test_exclude_modules_list_and_regex():
    got = ours(tiny_llama, target_modules=["q_proj", "v_proj"], exclude_modules=["model.layers.0.self_attn.q_proj"])
    assert got == llama_layer_names("q_proj", "v_proj") - {"model.layers.0.self_attn.q_proj"}
    got = ours(tiny_llama, target_modules=["q_proj", "v_proj"], exclude_modules=["v_proj"])  # suffix form
    assert got == llama_layer_names("q_proj")
    got = ours(tiny_llama, target_modules="all-linear", exclude_modules=r".*\.mlp\..*")
    assert got == llama_layer_names("q_proj", "k_proj", "v_proj", "o_proj")
    assert got == peft_adapted(tiny_llama, target_modules="all-linear", exclude_modules=r".*\.mlp\..*")
    # an exclude regex is a fullmatch too: "mlp" alone excludes nothing
    assert ours(tiny_llama, target_modules=["up_proj"], exclude_modules="mlp") == llama_layer_names("up_proj")


def test_everything_excluded_is_a_clear_error():
    model = tiny_llama()
    with pytest.raises(TargetModulesError, match="every module matched by target_modules") as info:
        get_peft_model(model, LoraConfig(target_modules=["q_proj"], exclude_modules=["q_proj"]))
    assert "exclude_modules" in str(info.value)
    assert not any(isinstance(m, AdapterLayer) for m in model.modules())


# -- layers_to_transform ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"layers_to_transform": [1]},
        {"layers_to_transform": 0},
        {"layers_to_transform": [0, 1]},
        {"layers_to_transform": [1], "layers_pattern": "layers"},
        {"layers_to_transform": [0], "layers_pattern": ["blocks", "layers"]},
    ],
)
def test_layers_to_transform_matches_peft(kwargs):
    config = dict(target_modules=["q_proj", "v_proj", "model.layers.0.mlp.up_proj"], **kwargs)
    got = ours(tiny_llama, **config)
    assert got == peft_adapted(tiny_llama, **config)
    layers = kwargs["layers_to_transform"]
    layers = [layers] if isinstance(layers, int) else layers
    # an exact full name is taken as is; suffix matches need a listed layer
    assert got == llama_layer_names("q_proj", "v_proj", layers=layers) | {"model.layers.0.mlp.up_proj"}


def test_layers_pattern_that_matches_nothing_is_an_error():
    with pytest.raises(TargetModulesError, match="layers_pattern='blocks'"):
        get_peft_model(tiny_llama(), LoraConfig(target_modules=["q_proj"], layers_to_transform=[0], layers_pattern="blocks"))
    with pytest.raises(TargetModulesError, match="layers_to_transform=\\[7\\]"):
        get_peft_model(tiny_llama(), LoraConfig(target_modules=["q_proj"], layers_to_transform=[7]))


# -- rank_pattern / alpha_pattern -------------------------------------------------------------


def test_rank_and_alpha_pattern_match_peft():
    kwargs = dict(target_modules=["q_proj", "v_proj", "up_proj"], r=4, lora_alpha=8,
                  rank_pattern={"v_proj": 2, r"layers\.1\.mlp\.up_proj": 6}, alpha_pattern={"q_proj": 32, "proj": 1})
    model = get_peft_model(tiny_llama(), LoraConfig(**kwargs))
    theirs = peft.get_peft_model(tiny_llama(), peft.LoraConfig(**kwargs))
    ours_layers = {n: m for n, m in model.named_modules() if isinstance(m, AdapterLayer)}
    their_layers = {n: m for n, m in theirs.named_modules() if isinstance(m, BaseTunerLayer) and hasattr(m, "lora_A")}
    assert set(ours_layers) == set(their_layers)
    for name, layer in ours_layers.items():
        other = their_layers[name]
        assert layer.r["default"] == other.r["default"], name
        assert layer.lora_alpha["default"] == other.lora_alpha["default"], name
        assert layer.scaling["default"] == pytest.approx(other.scaling["default"]), name
        assert layer.lora_A["default"].weight.shape == other.lora_A["default"].weight.shape
    assert ours_layers["base_model.model.model.layers.1.self_attn.v_proj"].r["default"] == 2
    assert ours_layers["base_model.model.model.layers.1.mlp.up_proj"].r["default"] == 6
    assert ours_layers["base_model.model.model.layers.0.mlp.up_proj"].r["default"] == 4
    assert ours_layers["base_model.model.model.layers.0.self_attn.q_proj"].lora_alpha["default"] == 32
    # "proj" is a whole key: it matches no module (like a partial word in target_modules)
    assert ours_layers["base_model.model.model.layers.0.mlp.up_proj"].lora_alpha["default"] == 8


def test_pattern_value_first_matching_key_wins():
    assert pattern_value({"q_proj": 1, "self_attn.q_proj": 2}, "model.layers.0.self_attn.q_proj", 0) == 1
    assert pattern_value({"layers.0.self_attn.q_proj": 2}, "model.layers.0.self_attn.q_proj", 0) == 2
    assert pattern_value({"layers.0.self_attn.q_proj": 2}, "model.layers.10.self_attn.q_proj", 0) == 0
    assert pattern_value({"q": 2}, "model.layers.0.self_attn.q_proj", 5) == 5


# -- modules_to_save --------------------------------------------------------------------------


def test_modules_to_save_is_never_targeted():
    model = get_peft_model(tiny_llama(), LoraConfig(target_modules=["q_proj", "lm_head"], modules_to_save=["lm_head"]))
    assert adapted(model) == llama_layer_names("q_proj")
    inner = model.get_base_model()
    assert isinstance(inner.lm_head, ModulesToSaveWrapper)
    assert not any(isinstance(m, AdapterLayer) for m in inner.lm_head.modules())
    # a regex that also matches the saved module skips it too
    model = get_peft_model(tiny_llama(), LoraConfig(target_modules=r".*(q_proj|lm_head)", modules_to_save=["lm_head"]))
    assert adapted(model) == llama_layer_names("q_proj")
    with pytest.raises(TargetModulesError, match="excluded"):
        find_targets(tiny_llama(), LoraConfig(target_modules=["lm_head"], modules_to_save=["lm_head"]))


# -- errors -----------------------------------------------------------------------------------


def test_nothing_matched_lists_close_names():
    model = tiny_llama()
    with pytest.raises(TargetModulesError) as info:
        get_peft_model(model, LoraConfig(target_modules=["q_prj", "v_projj"]))
    message = str(info.value)
    assert "matched no module" in message
    assert "Close module names: " in message and "q_proj" in message and "v_proj" in message
    assert not any(isinstance(m, AdapterLayer) for m in model.modules())


def test_target_of_unsupported_kind_is_a_clear_error():
    model = tiny_llama()
    with pytest.raises(TargetModulesError, match="'model.norm' is a LlamaRMSNorm") as info:
        get_peft_model(model, LoraConfig(target_modules=["q_proj", "model.norm"]))
    assert "supported kinds" in str(info.value)
    assert not any(isinstance(m, AdapterLayer) for m in model.modules())


def test_no_target_modules_and_no_default():
    with pytest.raises(TargetModulesError, match="target_modules is not set"):
        get_peft_model(mlp(), LoraConfig())
    assert ours(tiny_llama) == llama_layer_names("q_proj", "v_proj")  # the Llama default


# -- a second adapter -------------------------------------------------------------------------


def test_second_adapter_never_targets_modules_inside_adapter_layers():
    model = get_peft_model(tiny_llama(), LoraConfig(target_modules=["q_proj"]))
    # a regex that would match the base layer and LoRA factors inside q_proj
    model.add_adapter("other", LoraConfig(target_modules=r".*q_proj.*"))
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, AdapterLayer)]
    assert {n.removeprefix("base_model.model.") for n, _ in layers} == llama_layer_names("q_proj")
    for _, layer in layers:
        assert layer.adapter_names == ["default", "other"]
        assert not isinstance(layer.base_layer, AdapterLayer)
    # names that exist only inside adapter layers match nothing
    with pytest.raises(TargetModulesError):
        model.add_adapter("third", LoraConfig(target_modules=["base_layer", "lora_A"]))
    assert "third" not in model.peft_config
    model.add_adapter("fourth", LoraConfig(target_modules="all-linear"))
    assert not any(isinstance(m.base_layer, AdapterLayer) for _, m in model.named_modules() if isinstance(m, AdapterLayer))


# -- property test against PEFT's matcher -----------------------------------------------------


def _suffixes(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[i:]) for i in range(len(parts))]


ALL_SUFFIXES = sorted({s for n in LLAMA_NAMES for s in _suffixes(n)})
PARTIALS = ["proj", "_proj", "q", "self_attn.q", "layers.0", "mlp", "layernorm", "odel.norm", "head"]
NAME_PIECES = st.sampled_from(ALL_SUFFIXES + PARTIALS)


@st.composite
def regexes(draw):
    name = draw(st.sampled_from(LLAMA_NAMES))
    parts = [re.escape(p) for p in name.split(".")]
    for i in range(len(parts)):
        choice = draw(st.sampled_from(["keep", "keep", "star", "digits", "alt"]))
        if choice == "star":
            parts[i] = ".*"
        elif choice == "digits" and parts[i].isdigit():
            parts[i] = r"\d+"
        elif choice == "alt":
            parts[i] = f"({parts[i]}|{re.escape(draw(st.sampled_from(ALL_SUFFIXES)).split('.')[-1])})"
    start = draw(st.integers(0, len(parts) - 1))
    prefix = draw(st.sampled_from(["", ".*", r".*\."]))
    return prefix + r"\.".join(parts[start:])


rules = st.one_of(st.lists(NAME_PIECES, min_size=1, max_size=4, unique=True), regexes())


@st.composite
def configs(draw):
    target = draw(rules)
    kwargs = {"target_modules": target}
    if draw(st.booleans()):
        kwargs["exclude_modules"] = draw(rules)
    if draw(st.booleans()):
        kwargs["modules_to_save"] = draw(st.lists(st.sampled_from(["lm_head", "q_proj", "mlp", "norm"]), min_size=1, max_size=2))
    if not isinstance(target, str) and draw(st.booleans()):
        kwargs["layers_to_transform"] = draw(st.one_of(st.integers(0, 2), st.lists(st.integers(0, 2), max_size=2)))
        kwargs["layers_pattern"] = draw(st.sampled_from([None, "layers", ["layers"], "model", ["nope", "layers"]]))
    return kwargs


def peft_selection(kwargs: dict) -> set[str]:
    defaults = dict(target_parameters=None, exclude_modules=None, modules_to_save=None,
                    layers_to_transform=None, layers_pattern=None)
    config = SimpleNamespace(**{**defaults, **kwargs})
    if isinstance(config.target_modules, list):
        config.target_modules = set(config.target_modules)
    return {n for n in LLAMA_NAMES if check_target_module_exists(config, n)}


@given(configs())
def test_selected_set_equals_peft(kwargs):
    config = LoraConfig(**kwargs)
    expected = peft_selection(kwargs)
    try:
        got = set(find_targets(_LLAMA, config))
    except TargetModulesError:
        got = set()
    assert got == expected
