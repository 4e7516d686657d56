"""GraLoRA against Hugging Face PEFT (peft==0.21.2): the same files, the same numbers, both ways.

Each case perturbs a fresh adapter in one library, saves it, loads it in the other and compares
outputs, saved keys and shapes, the config, and ``merge_and_unload`` (weights and outputs).
"""

from __future__ import annotations

import pytest

from peft_core import PeftModel
from peft_core.conformance.models import mlp, tiny_gpt2, tiny_llama
from peft_core.conformance.parity import checked_round_trip_both_ways, max_diff, model_output, perturb_trainable
from peft_core.conformance.parity import token_inputs
from peft_core_gralora import GraloraConfig

peft = pytest.importorskip("peft")

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

ATOL = 1e-5


CASES = {
    "llama_k2": (tiny_llama, {"r": 4, "gralora_k": 2, "alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"]}),
    "llama_k4_hybrid": (tiny_llama, {"r": 8, "gralora_k": 4, "hybrid_r": 2, "alpha": 16,
                                     "target_modules": ["k_proj", "o_proj", "up_proj"]}),
    "llama_defaults": (tiny_llama, {"r": 2, "alpha": 4}),
    "gpt2_conv1d_hybrid": (tiny_gpt2, {"r": 4, "gralora_k": 2, "hybrid_r": 1, "alpha": 8,
                                       "target_modules": ["c_attn", "c_fc"], "fan_in_fan_out": True}),
    "mlp_modules_to_save": (mlp, {"r": 4, "gralora_k": 4, "alpha": 4, "target_modules": ["lin0"],
                                  "modules_to_save": ["lin1"]}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_gralora_parity(case, tmp_path):
    build, kwargs = CASES[case]
    diffs = checked_round_trip_both_ways(peft, build, token_inputs(), GraloraConfig(**kwargs),
                                         peft.GraloraConfig(**kwargs), tmp_path, atol=ATOL)
    print(f"GRALORA parity {case}: {diffs}")


def test_two_active_adapters_add_up_as_in_peft(tmp_path):
    theirs = peft.get_peft_model(tiny_llama(), peft.GraloraConfig(r=4, alpha=4, target_modules=["v_proj"]),
                                 adapter_name="a")
    theirs.add_adapter("b", peft.GraloraConfig(r=4, gralora_k=4, hybrid_r=2, target_modules=["v_proj", "q_proj"]))
    perturb_trainable(theirs, seed=5, scale=0.3, only="gralora_")
    theirs.save_pretrained(tmp_path)
    ours = PeftModel.from_pretrained(tiny_llama(), tmp_path / "a", adapter_name="a")
    ours.load_adapter(tmp_path / "b", adapter_name="b")
    inputs = token_inputs()
    theirs.base_model.set_adapter(["a", "b"])
    ours.base_model.set_adapter(["a", "b"])
    both = model_output(theirs, inputs)
    assert max_diff(model_output(ours, inputs), both) <= ATOL
    ours.merge_adapter()
    assert max_diff(model_output(ours, inputs), both) <= ATOL
