"""Block-diagonal LoRA against Hugging Face PEFT (peft==0.21.2): same files, same numbers, both ways."""

from __future__ import annotations

import pytest
import torch

from peft_core import LoraConfig, get_peft_model
from peft_core.conformance.models import tiny_llama, token_batch
from peft_core.conformance.parity import config_json, round_trip_both_ways
from peft_core_lora_bd import BdLoraConfig

peft = pytest.importorskip("peft")

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

CASES = {
    # the layout the BD-LoRA paper prescribes for tensor parallelism
    "llama-attention-mlp": (tiny_llama, {"r": 4, "target_modules": ["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"]},
                            {"target_modules_bd_a": ["o_proj", "down_proj"],
                             "target_modules_bd_b": ["q_proj", "v_proj", "up_proj"], "nblocks": 2}),
    # four blocks, rsLoRA, a target left as plain LoRA
    "llama-loose": (tiny_llama, {"r": 8, "use_rslora": True, "target_modules": ["k_proj", "o_proj", "gate_proj"]},
                    {"target_modules_bd_a": ["o_proj"], "target_modules_bd_b": ["k_proj"], "nblocks": 4,
                     "match_strict": False}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_round_trip_both_ways(case, tmp_path):
    build, kwargs, bd = CASES[case]
    diffs = round_trip_both_ways(peft, build, {"input_ids": token_batch()},
                                 LoraConfig(use_bdlora=BdLoraConfig(**bd), **kwargs),
                                 peft.LoraConfig(use_bdlora=peft.BdLoraConfig(**bd), **kwargs), tmp_path)
    assert diffs["moved"] > 1e-2
    assert diffs["ours_to_peft"] <= 1e-6 and diffs["peft_to_ours"] <= 1e-6, diffs
    assert diffs["merged_weights"] <= 1e-6 and diffs["merged_output"] <= 1e-5, diffs
    assert config_json(tmp_path / "ours") == config_json(tmp_path / "theirs")


def test_seeded_initialisation_equals_peft():
    build, kwargs, bd = CASES["llama-attention-mlp"]
    torch.manual_seed(0)
    ours = get_peft_model(build(), LoraConfig(use_bdlora=BdLoraConfig(**bd), **kwargs))
    torch.manual_seed(0)
    theirs = peft.get_peft_model(build(), peft.LoraConfig(use_bdlora=peft.BdLoraConfig(**bd), **kwargs))
    ours_state = {k: v for k, v in ours.state_dict().items() if ".lora_" in k}
    theirs_state = {k: v for k, v in theirs.state_dict().items() if ".lora_" in k}
    assert set(ours_state) == set(theirs_state)
    for key, value in ours_state.items():
        assert torch.equal(value, theirs_state[key]), key
