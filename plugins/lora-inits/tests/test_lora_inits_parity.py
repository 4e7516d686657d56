"""PiSSA, OLoRA, orthogonal and LoftQ against Hugging Face PEFT (peft==0.21.2) on a tiny Llama.

Under the same torch seed both libraries must produce the same initial factors, the same
residual base weights and the same outputs; adapters saved by one load in the other with the
same outputs; and the PiSSA/OLoRA → LoRA conversion gives the same files as PEFT's and, on the
original base, the fine-tuned model's outputs in both libraries.
"""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
from safetensors.torch import load_file

from peft_core import LoftQConfig, LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict
from peft_core.conformance.models import tiny_gpt2, tiny_llama, token_batch
from peft_core.conformance.parity import load_quantized, max_diff, model_output, perturb_trainable

peft = pytest.importorskip("peft")

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

ATOL = 1e-5
SEED = 1234
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"]
INPUTS = {"input_ids": token_batch()}
#: name → (model builder, LoraConfig keyword arguments); r=4 with alpha 8 puts the scaling (2) to work
CASES = {
    "pissa": (tiny_llama, {"init_lora_weights": "pissa"}),
    "pissa_niter_3": (tiny_llama, {"init_lora_weights": "pissa_niter_3"}),
    "pissa_rslora": (tiny_llama, {"init_lora_weights": "pissa", "use_rslora": True}),
    "pissa_gpt2_conv1d": (tiny_gpt2, {"init_lora_weights": "pissa", "target_modules": ["c_attn", "c_fc"],
                                      "fan_in_fan_out": True}),
    "olora": (tiny_llama, {"init_lora_weights": "olora"}),
    "orthogonal": (tiny_llama, {"init_lora_weights": "orthogonal"}),
    "loftq_nf4_2iter": (tiny_llama, {"init_lora_weights": "loftq", "loftq_config": {"loftq_bits": 4, "loftq_iter": 2}}),
    "loftq_int8": (tiny_llama, {"init_lora_weights": "loftq", "loftq_config": {"loftq_bits": 8, "loftq_iter": 1}}),
}
CONVERTIBLE = ["pissa", "pissa_rslora", "olora"]


@contextlib.contextmanager
def _cuda_as_cpu():
    """Run PEFT's LoftQ, which hard-codes ``"cuda"`` as its compute device, on this CPU-only machine.

    Device arguments ``"cuda"`` become ``"cpu"`` for the duration; bitsandbytes then quantizes on
    the CPU with the same NF4/int8 kernels our plugin calls.
    """
    import bitsandbytes as bnb

    def cpu(device):
        if isinstance(device, str) and device.startswith("cuda"):
            return "cpu"
        return torch.device("cpu") if isinstance(device, torch.device) and device.type == "cuda" else device

    def wrap(original):
        def to(self, *args, **kwargs):
            if "device" in kwargs:
                kwargs["device"] = cpu(kwargs["device"])
            return original(self, *(cpu(a) for a in args), **kwargs)
        return to

    classes = (torch.Tensor, bnb.nn.Params4bit, bnb.nn.Int8Params)
    own = {cls: cls.__dict__.get("to") for cls in classes}
    for cls in classes:
        setattr(cls, "to", wrap(own[cls] or cls.to))
    try:
        yield
    finally:
        for cls, original in own.items():
            if original is None:
                delattr(cls, "to")
            else:
                setattr(cls, "to", original)


@pytest.fixture(autouse=True)
def _peft_loftq_without_scipy(monkeypatch):
    """PEFT's LoraConfig asks for scipy when init_lora_weights='loftq' but its LoftQ code never imports it.

    scipy is not installed here; the check alone is answered so PEFT's LoftQ can run.
    """
    import importlib.util
    import types

    import peft.tuners.lora.config as peft_lora_config

    def find_spec(name, *args):
        return object() if name == "scipy" else importlib.util.find_spec(name, *args)

    shim = types.SimpleNamespace(util=types.SimpleNamespace(find_spec=find_spec))
    monkeypatch.setattr(peft_lora_config, "importlib", shim)


def _kwargs(case):
    build, kwargs = CASES[case]
    return build, {"target_modules": TARGETS, "r": 4, "lora_alpha": 8, **kwargs}


def _ours(case, base=None):
    build, kwargs = _kwargs(case)
    torch.manual_seed(SEED)
    return get_peft_model(base if base is not None else build(), LoraConfig(**kwargs)).eval()


def _theirs(case, base=None):
    build, kwargs = _kwargs(case)
    if "loftq_config" in kwargs:
        kwargs["loftq_config"] = peft.LoftQConfig(**kwargs["loftq_config"])
    torch.manual_seed(SEED)
    with _cuda_as_cpu():
        return peft.get_peft_model(base if base is not None else build(), peft.LoraConfig(**kwargs)).eval()


def _base_weights(model):
    """The (residual) base weights, by the base model's own names."""
    return {k.replace(".base_layer", ""): v for k, v in model.get_base_model().state_dict().items() if "lora_" not in k}


def _max_diffs(ours, theirs):
    mine, other = get_peft_model_state_dict(ours), peft.get_peft_model_state_dict(theirs)
    assert sorted(mine) == sorted(other)
    base_mine, base_other = _base_weights(ours), _base_weights(theirs)
    assert sorted(base_mine) == sorted(base_other)
    return {
        "factors": max(max_diff(mine[k], other[k]) for k in mine),
        "base": max(max_diff(base_mine[k], base_other[k]) for k in base_mine),
        "outputs": max_diff(model_output(ours, INPUTS), model_output(theirs, INPUTS)),
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_initial_factors_residual_and_outputs_equal_peft(case):
    ours, theirs = _ours(case), _theirs(case)
    diffs = _max_diffs(ours, theirs)
    assert all(d <= ATOL for d in diffs.values()), diffs
    changed = max_diff(model_output(ours, INPUTS), model_output(_kwargs(case)[0](), INPUTS))
    if case.startswith("loftq"):
        assert changed > 1e-4  # the base really was replaced by its quantized values
    else:
        assert changed < 1e-4  # PiSSA/OLoRA keep W = residual + s·B·A; orthogonal starts with B·A = 0


@pytest.mark.parametrize("case", ["pissa_niter_3", "orthogonal", "loftq_nf4_2iter"])
def test_ours_loads_in_peft_and_peft_loads_here(case, tmp_path):
    """Loading re-runs the init on the fresh base (in both libraries), then the saved factors replace the new ones."""
    build, _ = _kwargs(case)
    ours = _ours(case)
    perturb_trainable(ours, seed=1)
    ours.save_pretrained(tmp_path / "ours")
    torch.manual_seed(SEED)  # pissa_niter draws its random projections again when loading
    with _cuda_as_cpu():
        in_peft = peft.PeftModel.from_pretrained(build(), tmp_path / "ours").eval()
    assert max_diff(model_output(in_peft, INPUTS), model_output(ours, INPUTS)) <= ATOL

    theirs = _theirs(case)
    perturb_trainable(theirs, seed=2)
    theirs.save_pretrained(tmp_path / "theirs")
    torch.manual_seed(SEED)
    here = PeftModel.from_pretrained(build(), tmp_path / "theirs").eval()
    assert max_diff(model_output(here, INPUTS), model_output(theirs, INPUTS)) <= ATOL


def _finetune_and_convert(model, tmp_path, tag):
    """Save the fresh adapter, "train" it (seeded perturbation), save it converted; the trained outputs."""
    model.save_pretrained(tmp_path / tag / "init")
    perturb_trainable(model, seed=7)
    expected = model_output(model, INPUTS)
    model.save_pretrained(tmp_path / tag / "lora", path_initial_model_for_weight_conversion=str(tmp_path / tag / "init"))
    return expected


@pytest.mark.parametrize("case", CONVERTIBLE)
def test_conversion_round_trip_equals_peft(case, tmp_path):
    build, kwargs = _kwargs(case)
    expected = _finetune_and_convert(_ours(case), tmp_path, "ours")
    expected_peft = _finetune_and_convert(_theirs(case), tmp_path, "theirs")
    assert max_diff(expected, expected_peft) <= ATOL

    ours_files, peft_files = load_file(tmp_path / "ours/lora/adapter_model.safetensors"), \
        load_file(tmp_path / "theirs/lora/adapter_model.safetensors")
    assert sorted(ours_files) == sorted(peft_files)
    assert max(max_diff(ours_files[k], peft_files[k]) for k in ours_files) <= ATOL
    config = json.loads((tmp_path / "ours/lora/adapter_config.json").read_text())
    peft_config = json.loads((tmp_path / "theirs/lora/adapter_config.json").read_text())
    for key in ("r", "lora_alpha", "init_lora_weights", "rank_pattern", "alpha_pattern", "use_rslora"):
        assert config[key] == peft_config[key], key
    assert config["r"] == 8 and config["init_lora_weights"] is True
    assert json.loads((tmp_path / "ours/init/adapter_config.json").read_text())["init_lora_weights"] is True

    # the converted adapter on the ORIGINAL base is the fine-tuned model, here and in PEFT
    here = PeftModel.from_pretrained(build(), tmp_path / "ours/lora").eval()
    in_peft = peft.PeftModel.from_pretrained(build(), tmp_path / "ours/lora").eval()
    assert max_diff(model_output(here, INPUTS), expected) <= ATOL
    assert max_diff(model_output(in_peft, INPUTS), expected) <= ATOL
    assert max_diff(model_output(build(), INPUTS), expected) > 1e-3  # the "training" really changed something


def test_loftq_config_is_exported_and_saved_like_peft(tmp_path):
    ours = _ours("loftq_nf4_2iter", base=tiny_llama())
    ours.peft_config["default"].loftq_config = LoftQConfig(loftq_bits=4, loftq_iter=2)  # the class works too
    ours.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["loftq_config"] == {"loftq_bits": 4, "loftq_iter": 2}
    assert peft.PeftConfig.from_pretrained(tmp_path).loftq_config == {"loftq_bits": 4, "loftq_iter": 2}


def test_replace_lora_weights_loftq_equals_peft_on_a_4bit_model(tmp_path):
    from peft_core import replace_lora_weights_loftq

    tiny_llama().save_pretrained(tmp_path)
    kwargs = {"r": 4, "target_modules": ["q_proj", "v_proj", "down_proj"]}
    torch.manual_seed(SEED)
    ours = get_peft_model(load_quantized(tmp_path, 4), LoraConfig(**kwargs))
    kept = []
    replace_lora_weights_loftq(ours, model_path=tmp_path, callback=lambda model, name: kept.append(name) or "v_proj" not in name)
    torch.manual_seed(SEED)
    theirs = peft.get_peft_model(load_quantized(tmp_path, 4), peft.LoraConfig(**kwargs))
    with _cuda_as_cpu():
        peft.replace_lora_weights_loftq(theirs, model_path=str(tmp_path), callback=lambda model, name: "v_proj" not in name)
    mine, other = get_peft_model_state_dict(ours), peft.get_peft_model_state_dict(theirs)
    assert len(kept) == 6 and sorted(mine) == sorted(other)
    assert max(max_diff(mine[k], other[k]) for k in mine) <= ATOL
    assert all(not mine[k].any() for k in mine if "v_proj.lora_B" in k)  # rolled back: B stays zero
    assert all(mine[k].any() for k in mine if "q_proj.lora_B" in k)
