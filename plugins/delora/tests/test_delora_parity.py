"""DeLoRA against Hugging Face PEFT (peft==0.21.2): the same files, the same numbers, both ways.

Each case builds an adapter with non-zero factors and λ in one library, saves it and loads it
in the other: outputs agree, ``merge_and_unload`` gives the same weights, the files hold the
same keys and shapes (the base column norms ``delora_w_norm`` included), and the configs are
equal. A fresh random-init adapter drawn after the same seed is the same adapter in both.
"""

from __future__ import annotations

import pytest
import torch

from peft_core import PeftModel, get_peft_model
from peft_core.conformance.models import mlp, tiny_bert, tiny_llama, token_batch
from peft_core.conformance.parity import config_json, max_diff, model_output, perturb_trainable, saved_shapes
from peft_core.layer import AdapterLayer
from peft_core_delora import DeloraConfig

peft = pytest.importorskip("peft")

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

ATOL = 1e-5
#: the largest difference each case showed, reported by the last test
MEASURED: dict[str, float] = {}

CASES = {
    "llama": (tiny_llama, {"target_modules": ["q_proj", "v_proj", "down_proj"], "r": 4, "delora_lambda": 15}),
    "llama_patterns": (tiny_llama, {"target_modules": ["k_proj", "v_proj", "up_proj"], "r": 3, "delora_lambda": 2.5,
                                    "rank_pattern": {"up_proj": 6, "model.layers.1.self_attn.v_proj": 1},
                                    "lambda_pattern": {"k_proj": 40}, "task_type": "CAUSAL_LM"}),
    "llama_dropout_random_init": (tiny_llama, {"target_modules": ["v_proj", "o_proj"], "r": 2, "module_dropout": 0.3,
                                               "init_weights": False}),
    "llama_defaults": (tiny_llama, {"r": 2}),  # targets from the model type in both libraries
    "bert_bias_all": (tiny_bert, {"target_modules": ["query", "value"], "r": 4, "bias": "all"}),
    "mlp_delora_only_bias": (mlp, {"target_modules": ["lin0"], "r": 5, "bias": "delora_only",
                                    "modules_to_save": ["lin1"]}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_delora_parity(case, tmp_path):
    build, kwargs = CASES[case]
    inputs = {"input_ids": token_batch()}
    base_out = model_output(build(), inputs)

    # ours -> PEFT
    ours = get_peft_model(build(), DeloraConfig(**kwargs))
    perturb_trainable(ours, seed=11, scale=0.3)
    ours.eval()
    ours_out = model_output(ours, inputs)
    assert max_diff(ours_out, base_out) > 1e-3, "the adapter must change the output for the test to mean anything"
    ours.save_pretrained(tmp_path / "ours")
    theirs_from_ours = peft.PeftModel.from_pretrained(build(), tmp_path / "ours")
    forward = max_diff(model_output(theirs_from_ours, inputs), ours_out)
    assert forward <= ATOL

    # PEFT -> ours
    theirs = peft.get_peft_model(build(), peft.DeloraConfig(**kwargs))
    perturb_trainable(theirs, seed=22, scale=0.3)
    theirs.eval()
    theirs_out = model_output(theirs, inputs)
    theirs.save_pretrained(tmp_path / "theirs")
    ours_from_theirs = PeftModel.from_pretrained(build(), tmp_path / "theirs")
    backward = max_diff(model_output(ours_from_theirs, inputs), theirs_out)
    assert backward <= ATOL

    shapes = saved_shapes(tmp_path / "ours")
    assert shapes == saved_shapes(tmp_path / "theirs")
    assert any(k.endswith(".delora_w_norm") for k in shapes) and any(k.endswith(".delora_lambda") for k in shapes)
    assert config_json(tmp_path / "ours") == config_json(tmp_path / "theirs")
    assert type(peft.PeftConfig.from_pretrained(str(tmp_path / "ours"))) is peft.DeloraConfig

    ours_merged = ours_from_theirs.merge_and_unload()
    theirs_merged = theirs.merge_and_unload()
    assert not any(isinstance(m, AdapterLayer) for m in ours_merged.modules())
    ours_state, theirs_state = ours_merged.state_dict(), theirs_merged.state_dict()
    assert set(ours_state) == set(theirs_state)
    merged = max(max_diff(ours_state[k], theirs_state[k]) for k in theirs_state)
    assert merged <= ATOL
    MEASURED[case] = max(forward, backward, merged)


def test_seeded_random_init_is_the_same_adapter_as_peft():
    kwargs = {"target_modules": ["q_proj", "v_proj"], "r": 3, "init_weights": False, "delora_lambda": 7}
    torch.manual_seed(3)
    ours = get_peft_model(tiny_llama(), DeloraConfig(**kwargs))
    torch.manual_seed(3)
    theirs = peft.get_peft_model(tiny_llama(), peft.DeloraConfig(**kwargs))
    ours_sd = ours.state_dict()
    theirs_sd = {k: v for k, v in theirs.state_dict().items() if "delora_" in k}
    assert theirs_sd and all(torch.equal(ours_sd[k], v) for k, v in theirs_sd.items())
    inputs = {"input_ids": token_batch()}
    diff = max_diff(model_output(ours, inputs), model_output(theirs, inputs))
    assert diff <= ATOL
    MEASURED["seeded_init"] = diff


def test_report_measured_differences(capsys):
    """Print the largest differences measured above (run with -s to see them)."""
    with capsys.disabled():
        print("\nDeLoRA parity, max abs diff per case:", {k: f"{v:.2e}" for k, v in MEASURED.items()})
    assert all(v <= ATOL for v in MEASURED.values())
