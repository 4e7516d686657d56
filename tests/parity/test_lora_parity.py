"""LoRA against Hugging Face PEFT (peft==0.21.2): the same files, the same numbers, both ways.

For each case an adapter with random (non-identity) factors is built and saved by one
library and loaded by the other; outputs must agree to 1e-5 (fp32), ``merge_and_unload``
must give the same weights, and the two libraries' saved files must hold the same keys and
shapes and a config JSON that PEFT reads back equal.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from peft_core import LoraConfig, PeftModel, get_peft_model
from peft_core.conformance.models import convnet, mlp, tiny_gpt2, tiny_llama, tiny_llama_seq_cls, token_batch
from peft_core.layer import AdapterLayer
from peft_core.wrappers import ModulesToSaveWrapper

peft = pytest.importorskip("peft")

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning"), pytest.mark.filterwarnings("ignore::RuntimeWarning")]

ATOL = 1e-5


def _tokens():
    return {"input_ids": token_batch()}


def _images():
    gen = torch.Generator().manual_seed(0)
    return {"pixel_values": torch.randn(2, 3, 8, 8, generator=gen), "labels": torch.tensor([1, 7])}


LLAMA_TARGETS = ["q_proj", "v_proj", "down_proj"]

CASES = {
    "llama": (tiny_llama, _tokens, {"target_modules": LLAMA_TARGETS, "r": 4, "lora_alpha": 8}),
    "llama_all_linear": (tiny_llama, _tokens, {"target_modules": "all-linear", "r": 2}),
    "gpt2_conv1d": (tiny_gpt2, _tokens, {"target_modules": ["c_attn", "c_proj"], "r": 4, "fan_in_fan_out": True}),
    # fan_in_fan_out left at its default: both libraries must notice the Conv1D layout themselves
    "gpt2_all_linear": (tiny_gpt2, _tokens, {"target_modules": "all-linear", "r": 2}),
    "gpt2_regex": (tiny_gpt2, _tokens, {"target_modules": r".*\.attn\.c_attn", "r": 2}),
    "mlp_embedding_conv1d": (mlp, _tokens, {"target_modules": ["emb", "lin0", "conv1d"], "r": 3, "lora_alpha": 5}),
    "convnet_conv2d_embedding": (convnet, _images, {"target_modules": ["conv0", "conv1", "emb"], "r": 2, "lora_alpha": 7}),
    "rslora": (tiny_llama, _tokens, {"target_modules": LLAMA_TARGETS, "r": 4, "lora_alpha": 16, "use_rslora": True}),
    "lora_bias": (mlp, _tokens, {"target_modules": ["lin0", "conv1d", "lin1"], "lora_bias": True}),
    "lora_bias_gpt2": (tiny_gpt2, _tokens, {"target_modules": ["c_fc"], "lora_bias": True, "fan_in_fan_out": True}),
    "bias_lora_only": (mlp, _tokens, {"target_modules": ["lin0", "conv1d"], "bias": "lora_only"}),
    "bias_all": (tiny_gpt2, _tokens, {"target_modules": ["c_attn"], "bias": "all", "fan_in_fan_out": True}),
    "patterns": (tiny_llama, _tokens, {"target_modules": LLAMA_TARGETS, "r": 4, "lora_alpha": 8,
                                       "rank_pattern": {"v_proj": 2, r"layers\.1\.mlp\.down_proj": 6},
                                       "alpha_pattern": {"q_proj": 3, "down_proj": 12}}),
    "modules_to_save": (mlp, _tokens, {"target_modules": ["lin0", "emb"], "modules_to_save": ["lin1", "norm"]}),
    "layers_to_transform": (tiny_llama, _tokens, {"target_modules": LLAMA_TARGETS, "layers_to_transform": [1],
                                                  "layers_pattern": "layers"}),
    "seq_cls": (tiny_llama_seq_cls, _tokens, {"target_modules": ["q_proj", "v_proj"], "task_type": "SEQ_CLS"}),
    "causal_lm": (tiny_llama, _tokens, {"target_modules": ["k_proj", "o_proj"], "task_type": "CAUSAL_LM",
                                        "lora_dropout": 0.1}),
}


def _output(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        out = model(**inputs)
    return out if isinstance(out, torch.Tensor) else out.logits


def _perturb(model, seed: int) -> None:
    """Move every trainable tensor (LoRA factors, biases, saved modules) away from its init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(model.named_parameters()):
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=gen) * 0.1)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


def _shapes(path) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in load_file(str(path / "adapter_model.safetensors")).items()}


def _normalized_json(path) -> dict:
    data = json.loads((path / "adapter_config.json").read_text())
    for key in ("target_modules", "exclude_modules", "modules_to_save"):
        if isinstance(data.get(key), list):
            data[key] = sorted(data[key])
    return data


@pytest.mark.parametrize("case", list(CASES))
def test_lora_parity(case, tmp_path):
    build, make_inputs, kwargs = CASES[case]
    inputs = make_inputs()
    base_out = _output(build(), inputs)

    # ours -> PEFT
    torch.manual_seed(1)
    ours = get_peft_model(build(), LoraConfig(init_lora_weights=False, **kwargs))
    _perturb(ours, seed=11)
    ours.eval()
    ours_out = _output(ours, inputs)
    assert _max_diff(ours_out, base_out) > 1e-3, "the adapter must change the output for the test to mean anything"
    ours.save_pretrained(tmp_path / "ours")
    theirs_from_ours = peft.PeftModel.from_pretrained(build(), tmp_path / "ours")
    assert _max_diff(_output(theirs_from_ours, inputs), ours_out) <= ATOL

    # PEFT -> ours
    torch.manual_seed(2)
    theirs = peft.get_peft_model(build(), peft.LoraConfig(init_lora_weights=False, **kwargs))
    _perturb(theirs, seed=22)
    theirs.eval()
    theirs_out = _output(theirs, inputs)
    theirs.save_pretrained(tmp_path / "theirs")
    ours_from_theirs = PeftModel.from_pretrained(build(), tmp_path / "theirs")
    assert type(ours_from_theirs).__name__ == type(theirs).__name__  # the same task wrapper
    assert _max_diff(_output(ours_from_theirs, inputs), theirs_out) <= ATOL

    # the same files: keys, shapes, and a config PEFT reads back equal
    assert _shapes(tmp_path / "ours") == _shapes(tmp_path / "theirs")
    ours_json, theirs_json = _normalized_json(tmp_path / "ours"), _normalized_json(tmp_path / "theirs")
    if kwargs["target_modules"] == "all-linear":
        # known difference: PEFT writes its expansion of "all-linear" (full module names); we keep the
        # shorthand, which PEFT expands again on load to the same modules
        assert ours_json["target_modules"] == "all-linear"
        assert theirs_json["target_modules"] == sorted(
            n.removeprefix("base_model.model.") for n, m in ours.named_modules() if isinstance(m, AdapterLayer))
        theirs_json["target_modules"] = "all-linear"
    assert ours_json == theirs_json
    read_back = peft.PeftConfig.from_pretrained(str(tmp_path / "ours"))
    assert type(read_back) is peft.LoraConfig
    if kwargs["target_modules"] != "all-linear":
        assert read_back.to_dict() == peft.PeftConfig.from_pretrained(str(tmp_path / "theirs")).to_dict()

    # merge_and_unload: the same merged weights and outputs
    ours_merged = ours_from_theirs.merge_and_unload()
    theirs_merged = theirs.merge_and_unload()
    assert not any(isinstance(m, (AdapterLayer, ModulesToSaveWrapper)) for m in ours_merged.modules())
    ours_state, theirs_state = ours_merged.state_dict(), theirs_merged.state_dict()
    assert set(ours_state) == set(theirs_state)
    for key in theirs_state:
        assert _max_diff(ours_state[key], theirs_state[key]) <= ATOL, key
    assert _max_diff(_output(ours_merged, inputs), theirs_out) <= ATOL


def test_config_json_text_is_byte_identical(tmp_path):
    kwargs = {"r": 4, "target_modules": ["q_proj"], "task_type": "CAUSAL_LM", "lora_alpha": 16,
              "rank_pattern": {"q_proj": 2}, "layers_to_transform": [0, 1], "layers_pattern": "layers"}
    LoraConfig(**kwargs).save_pretrained(tmp_path / "ours")
    peft.LoraConfig(**kwargs).save_pretrained(str(tmp_path / "theirs"))
    assert (tmp_path / "ours" / "adapter_config.json").read_text() == (tmp_path / "theirs" / "adapter_config.json").read_text()


def test_multiple_adapters_layout_matches_peft(tmp_path):
    inputs = _tokens()
    torch.manual_seed(3)
    ours = get_peft_model(tiny_llama(), LoraConfig(target_modules=["q_proj"], init_lora_weights=False))
    ours.add_adapter("other", LoraConfig(target_modules=["v_proj"], r=2, init_lora_weights=False))
    _perturb(ours, seed=5)
    ours.save_pretrained(tmp_path / "ours")
    theirs = peft.PeftModel.from_pretrained(tiny_llama(), str(tmp_path / "ours"))
    theirs.load_adapter(str(tmp_path / "ours" / "other"), adapter_name="other")
    for name in ("default", "other"):
        ours.set_adapter(name)
        theirs.set_adapter(name)
        assert _max_diff(_output(theirs, inputs), _output(ours, inputs)) <= ATOL


@pytest.mark.parametrize("fields", [{}, {"init_lora_weights": "gaussian"}, {"init_lora_weights": False},
                                    {"lora_bias": True}],
                         ids=["default", "gaussian", "no_init", "lora_bias"])
def test_same_seed_gives_peft_adapter_and_leaves_the_rng_where_peft_does(fields):
    """A seed gives PEFT's factors exactly, and the global RNG ends where PEFT leaves it."""
    config = {"target_modules": ["lin0", "conv1d", "lin1"], "r": 3, **fields}
    results = []
    for make_model, make_config in ((get_peft_model, LoraConfig), (peft.get_peft_model, peft.LoraConfig)):
        torch.manual_seed(4)
        model = make_model(mlp(), make_config(**config))
        factors = {n: p.detach().clone() for n, p in model.named_parameters() if ".lora_" in n}
        results.append((factors, torch.rand(5)))
    (ours, ours_next), (theirs, theirs_next) = results
    assert ours.keys() == theirs.keys() and len(ours) >= 6
    for name, value in theirs.items():
        assert torch.equal(ours[name], value), name
    assert torch.equal(ours_next, theirs_next)


@pytest.mark.parametrize("init", ["gaussian", "pissa", "olora"])
def test_lora_bias_with_another_init_is_refused_as_in_peft(init):
    """PEFT refuses this pair when the config is made, so a saved config with it could not load there."""
    from peft_core import ConfigError

    with pytest.raises(ValueError):
        peft.LoraConfig(lora_bias=True, init_lora_weights=init)
    with pytest.raises(ConfigError, match="lora_bias=True works with init_lora_weights=True or False"):
        LoraConfig(lora_bias=True, init_lora_weights=init)
    assert LoraConfig(lora_bias=True, init_lora_weights=False).lora_bias


class _WithAttentionBiases(torch.nn.Module):
    """A linear layer and an attention block with biases not named ``bias`` (``in_proj_bias``, ``bias_k``)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(8, 8)
        self.attn = torch.nn.MultiheadAttention(8, 2, add_bias_kv=True, batch_first=True)
        self.norm = torch.nn.LayerNorm(8)

    def forward(self, x):
        h = self.lin(x)
        return self.norm(self.attn(h, h, h, need_weights=False)[0])


@pytest.mark.parametrize("bias", ["all", "lora_only"])
def test_bias_option_trains_and_saves_what_peft_does(bias, tmp_path):
    results = []
    libraries = ((get_peft_model, LoraConfig, "ours"), (peft.get_peft_model, peft.LoraConfig, "theirs"))
    for make_model, make_config, where in libraries:
        model = make_model(_WithAttentionBiases(), make_config(target_modules=["lin"], bias=bias))
        model.save_pretrained(tmp_path / where)
        trained = {n for n, p in model.named_parameters() if p.requires_grad}
        results.append((trained, set(load_file(tmp_path / where / "adapter_model.safetensors"))))
    assert results[0] == results[1]
    if bias == "all":  # parameters named "bias", not every name containing it (in_proj_bias, bias_k stay frozen)
        assert {"base_model.model.attn.out_proj.bias", "base_model.model.norm.bias"} <= results[0][0]
        assert not {"base_model.model.attn.bias_k", "base_model.model.attn.in_proj_bias"} & results[0][0]
