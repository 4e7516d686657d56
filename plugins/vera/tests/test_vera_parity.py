"""VeRA against Hugging Face PEFT (peft==0.21.2): the same projections, files and numbers, both ways.

The same ``projection_prng_key`` must give bit-identical projections in both libraries, which
is what makes ``save_projection=False`` files portable; each case builds an adapter with
non-identity vectors in one library, saves it, loads it in the other and compares outputs.
"""

from __future__ import annotations

import pytest
import torch

from peft_core import PeftModel, get_peft_model
from peft_core.conformance.models import tiny_gpt2, tiny_llama, token_batch
from peft_core.conformance.parity import config_json, max_diff, model_output, perturb_trainable, saved_shapes
from peft_core_vera import VeraConfig

peft = pytest.importorskip("peft")

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

ATOL = 1e-6
LLAMA = {"r": 4, "target_modules": ["q_proj", "v_proj", "down_proj"]}  # down_proj: 64 in, the others 32
GPT2 = {"r": 8, "target_modules": ["c_attn", "c_fc", "mlp.c_proj"], "fan_in_fan_out": True}
BUILDERS = {"llama": (tiny_llama, LLAMA), "gpt2": (tiny_gpt2, GPT2)}


def _inputs():
    return {"input_ids": token_batch()}


def _build(library: str, kind: str, **overrides):
    build, kwargs = BUILDERS[kind]
    torch.manual_seed(0)
    if library == "ours":
        model = get_peft_model(build(), VeraConfig(**kwargs, **overrides))
    else:
        model = peft.get_peft_model(build(), peft.VeraConfig(**kwargs, **overrides))
    perturb_trainable(model, seed=1, scale=0.3)
    return model.eval()


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("save_projection", [True, False])
def test_same_seed_gives_the_same_adapter_and_file(kind, save_projection, tmp_path):
    ours, theirs = _build("ours", kind, save_projection=save_projection), _build("peft", kind, save_projection=save_projection)
    out = model_output(ours, _inputs())
    assert max_diff(out, model_output(BUILDERS[kind][0](), _inputs())) > 1e-2  # the adapter does something
    assert max_diff(out, model_output(theirs, _inputs())) <= ATOL
    ours.save_pretrained(tmp_path / "ours")
    theirs.save_pretrained(str(tmp_path / "theirs"))
    assert saved_shapes(tmp_path / "ours") == saved_shapes(tmp_path / "theirs")
    assert ("base_model.vera_A" in saved_shapes(tmp_path / "ours")) == save_projection
    assert config_json(tmp_path / "ours") == config_json(tmp_path / "theirs")


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("save_projection", [True, False])
def test_ours_loads_in_peft_with_identical_outputs(kind, save_projection, tmp_path):
    ours = _build("ours", kind, save_projection=save_projection, projection_prng_key=7)
    ours.save_pretrained(tmp_path)
    theirs = peft.PeftModel.from_pretrained(BUILDERS[kind][0](), tmp_path)
    assert max_diff(model_output(theirs, _inputs()), model_output(ours, _inputs())) <= ATOL


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("save_projection", [True, False])
def test_peft_loads_here_with_identical_outputs_and_merges_alike(kind, save_projection, tmp_path):
    theirs = _build("peft", kind, save_projection=save_projection, projection_prng_key=7)
    theirs.save_pretrained(str(tmp_path))
    ours = PeftModel.from_pretrained(BUILDERS[kind][0](), tmp_path)
    expected = model_output(theirs, _inputs())
    assert max_diff(model_output(ours, _inputs()), expected) <= ATOL
    merged_ours, merged_theirs = ours.merge_and_unload(), theirs.merge_and_unload()
    theirs_state = merged_theirs.state_dict()
    for key, value in merged_ours.state_dict().items():
        assert max_diff(value, theirs_state[key]) <= 1e-6, key


def test_projections_from_a_two_adapter_peft_model_load_here(tmp_path):
    """PEFT gives a second adapter the first one's projections (sized to the first's layers); such a
    file carries larger projections than this adapter's own layers need, and still loads exactly."""
    torch.manual_seed(0)
    theirs = peft.get_peft_model(tiny_llama(), peft.VeraConfig(r=4, target_modules=["q_proj", "down_proj"]),
                                 adapter_name="a")
    theirs.add_adapter("b", peft.VeraConfig(r=4, target_modules=["q_proj"]))
    perturb_trainable(theirs, seed=2, scale=0.3, only="vera_lambda")
    theirs.set_adapter("b")
    theirs.eval()
    theirs.save_pretrained(str(tmp_path), selected_adapters=["b"])
    assert saved_shapes(tmp_path / "b")["base_model.vera_A"] == (4, 64)
    ours = PeftModel.from_pretrained(tiny_llama(), tmp_path / "b", adapter_name="b")
    assert tuple(ours.base_model.shared_tensors.get("vera_A", "b").shape) == (4, 64)
    assert max_diff(model_output(ours, _inputs()), model_output(theirs, _inputs())) <= ATOL


def test_bias_vera_only_on_gpt2_both_ways(tmp_path):
    ours = _build("ours", "gpt2", bias="vera_only")
    with torch.no_grad():  # the trained biases must travel too
        ours.base_model.model.transformer.h[0].attn.c_attn.base_layer.bias.add_(0.5)
    ours.save_pretrained(tmp_path / "ours")
    keys = saved_shapes(tmp_path / "ours")
    assert "base_model.model.transformer.h.0.attn.c_attn.base_layer.bias" in keys
    theirs = peft.PeftModel.from_pretrained(tiny_gpt2(), tmp_path / "ours")
    assert max_diff(model_output(theirs, _inputs()), model_output(ours, _inputs())) <= ATOL
    theirs.save_pretrained(str(tmp_path / "theirs"))
    assert saved_shapes(tmp_path / "theirs") == keys
    back = PeftModel.from_pretrained(tiny_gpt2(), tmp_path / "theirs")
    assert max_diff(model_output(back, _inputs()), model_output(ours, _inputs())) <= ATOL
