"""DeLoRA against Hugging Face PEFT (peft==0.21.2): the same files, the same numbers, both ways.

Each case builds an adapter with non-zero factors and λ in one library, saves it and loads it
in the other: outputs agree, ``merge_and_unload`` gives the same weights, the files hold the
same keys and shapes (the base column norms ``delora_w_norm`` included), and the configs are
equal. A fresh random-init adapter drawn after the same seed is the same adapter in both.
"""

from __future__ import annotations

import pytest

from peft_core.conformance.models import mlp, tiny_bert, tiny_llama, token_batch
from peft_core.conformance.parity import config_json, max_diff, model_output, round_trip_both_ways, saved_shapes
from peft_core.conformance.parity import check_seeded_init_matches, token_inputs
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
    # saved shapes and merged keys are compared, and a fully unwrapped merge checked, by the round trip
    diffs = round_trip_both_ways(peft, build, token_inputs(), DeloraConfig(**kwargs), peft.DeloraConfig(**kwargs),
                                 tmp_path, seed=11, theirs_seed=22, scale=0.3)
    assert diffs["moved"] > 1e-3, "the adapter must change the output for the test to mean anything"
    for key in ("ours_to_peft", "peft_to_ours", "merged_weights"):
        assert diffs[key] <= ATOL, (key, diffs)
    shapes = saved_shapes(tmp_path / "ours")
    assert any(k.endswith(".delora_w_norm") for k in shapes) and any(k.endswith(".delora_lambda") for k in shapes)
    assert config_json(tmp_path / "ours") == config_json(tmp_path / "theirs")
    assert type(peft.PeftConfig.from_pretrained(str(tmp_path / "ours"))) is peft.DeloraConfig
    MEASURED[case] = max(diffs["ours_to_peft"], diffs["peft_to_ours"], diffs["merged_weights"])


def test_seeded_random_init_is_the_same_adapter_as_peft():
    kwargs = {"target_modules": ["q_proj", "v_proj"], "r": 3, "init_weights": False, "delora_lambda": 7}
    ours, theirs = check_seeded_init_matches(peft, tiny_llama, DeloraConfig(**kwargs), peft.DeloraConfig(**kwargs),
                                             "delora_", seed=3)
    inputs = {"input_ids": token_batch()}
    diff = max_diff(model_output(ours, inputs), model_output(theirs, inputs))
    assert diff <= ATOL
    MEASURED["seeded_init"] = diff


def test_report_measured_differences(capsys):
    """Print the largest differences measured above (run with -s to see them)."""
    with capsys.disabled():
        print("\nDeLoRA parity, max abs diff per case:", {k: f"{v:.2e}" for k, v in MEASURED.items()})
    assert all(v <= ATOL for v in MEASURED.values())
