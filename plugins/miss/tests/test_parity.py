"""MiSS against Hugging Face PEFT (peft==0.21.2): the same files, the same numbers, both ways.

All three variants (balance, including a rank leaving a partial column block; mini; bat) are
saved in one library, loaded in the other, and compared: outputs, saved keys and shapes, the
config, and ``merge_and_unload`` (weights and outputs).
"""

from __future__ import annotations

import pytest

from peft_core import PeftModel
from peft_core.conformance.models import mlp, tiny_bert, tiny_llama
from peft_core.conformance.parity import checked_round_trip_both_ways, max_diff, model_output, perturb_trainable
from peft_core.conformance.parity import token_inputs
from peft_core_miss import MissConfig

peft = pytest.importorskip("peft")

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

ATOL = 1e-5


CASES = {
    "llama_balance": (tiny_llama, {"r": 4, "target_modules": ["q_proj", "v_proj", "down_proj"]}),
    "llama_balance_partial_block": (tiny_llama, {"r": 3, "target_modules": ["q_proj", "k_proj", "up_proj"]}),
    "llama_defaults": (tiny_llama, {"r": 8}),
    "llama_bat": (tiny_llama, {"r": 4, "init_weights": "bat", "target_modules": ["q_proj", "v_proj", "down_proj"]}),
    "llama_mini": (tiny_llama, {"r": 4, "mini_r": 8, "init_weights": "mini",
                                "target_modules": ["k_proj", "o_proj", "gate_proj"]}),
    "bert_bat_seq_cls": (tiny_bert, {"r": 8, "init_weights": "bat", "target_modules": ["query", "value"],
                                     "task_type": "SEQ_CLS"}),
    "mlp_mini_modules_to_save": (mlp, {"r": 5, "mini_r": 4, "init_weights": "mini", "target_modules": ["lin0"],
                                       "modules_to_save": ["lin1"]}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_miss_parity(case, tmp_path):
    build, kwargs = CASES[case]
    diffs = checked_round_trip_both_ways(peft, build, token_inputs(), MissConfig(**kwargs), peft.MissConfig(**kwargs),
                                         tmp_path, atol=ATOL)
    print(f"MISS parity {case}: {diffs}")


@pytest.mark.parametrize("init", [True, "bat"])
def test_two_active_adapters_match_peft(tmp_path, init):
    """Balance adapters add up; bat adapters compose on the weight in activation order."""
    theirs = peft.get_peft_model(tiny_llama(), peft.MissConfig(r=4, init_weights=init, target_modules=["v_proj"]),
                                 adapter_name="a")
    theirs.add_adapter("b", peft.MissConfig(r=4, init_weights=init, target_modules=["v_proj", "q_proj"]))
    perturb_trainable(theirs, seed=5, scale=0.3, only="miss_")
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
