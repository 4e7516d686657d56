"""AdaMSS against Hugging Face PEFT (peft==0.21.2): the same files, the same numbers, both ways.

The grouping of output rows into subspaces is not in the file: both libraries recompute it
from the base weight (seeded randomized SVD, then KMeans). So these tests show three things:
a fresh adapter drawn after the same torch seed is the same adapter in both libraries (same
subspaces, factors and projection); an adapter trained in one loads in the other with the same
outputs; and ``merge_and_unload`` gives the same weights and biases.
"""

from __future__ import annotations

import pytest
import torch

from peft_core import get_peft_model
from peft_core.conformance.models import mlp, tiny_llama, token_batch
from peft_core.conformance.parity import config_json, max_diff, model_output, round_trip_both_ways, saved_shapes
from peft_core.conformance.parity import token_inputs
from peft_core_adamss import AdamssConfig, AdamssLayer

peft = pytest.importorskip("peft")
pytest.importorskip("sklearn")

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

ATOL = 1e-5
#: the largest difference each case showed, reported by the last test
MEASURED: dict[str, float] = {}

CASES = {
    # tiny Llama's projections have no bias; the MLP's Linear does (the bias becomes an extra input column)
    "llama": (tiny_llama, {"target_modules": ["q_proj", "v_proj", "down_proj"], "r": 8, "num_subspaces": 3,
                           "subspace_rank": 2}),
    "llama_dynamic_rank_seed": (tiny_llama, {"target_modules": ["k_proj", "up_proj"], "r": 100, "num_subspaces": 4,
                                             "subspace_rank": 3, "use_dynamic_rank": True, "svd_threshold": 0.2,
                                             "random_seed": 17, "task_type": "CAUSAL_LM"}),
    "llama_defaults": (tiny_llama, {"r": 8, "num_subspaces": 2}),  # targets from the model type in both libraries
    "mlp_bias_random_init": (mlp, {"target_modules": ["lin0"], "r": 6, "num_subspaces": 2, "init_weights": None,
                                   "modules_to_save": ["lin1"]}),
    "llama_asa_config": (tiny_llama, {"target_modules": ["v_proj"], "r": 4, "num_subspaces": 5, "use_asa": True,
                                      "asa_target_subspaces": 3, "init_warmup": 2, "final_warmup": 6,
                                      "mask_interval": 2}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_adamss_parity(case, tmp_path):
    build, kwargs = CASES[case]
    # saved shapes and merged keys are compared, and a fully unwrapped merge checked, by the round trip
    diffs = round_trip_both_ways(peft, build, token_inputs(), AdamssConfig(**kwargs), peft.AdamssConfig(**kwargs),
                                 tmp_path, seed=11, theirs_seed=22, scale=0.2)
    assert diffs["moved"] > 1e-3, "the adapter must change the output for the test to mean anything"
    for key in ("ours_to_peft", "peft_to_ours", "merged_weights"):
        assert diffs[key] <= ATOL, (key, diffs)
    shapes = saved_shapes(tmp_path / "ours")
    assert any(".adamss_A.0" in k for k in shapes) and any(k.endswith(".adamss_newB") for k in shapes)
    assert config_json(tmp_path / "ours") == config_json(tmp_path / "theirs")
    assert type(peft.PeftConfig.from_pretrained(str(tmp_path / "ours"))) is peft.AdamssConfig
    MEASURED[case] = max(diffs["ours_to_peft"], diffs["peft_to_ours"], diffs["merged_weights"])


@pytest.mark.parametrize("dynamic", [False, True])
def test_seeded_adapter_and_subspaces_are_the_same_as_peft(dynamic):
    kwargs = {"target_modules": ["q_proj", "gate_proj"], "r": 16, "num_subspaces": 4, "subspace_rank": 2,
              "init_weights": None, "use_dynamic_rank": dynamic}
    torch.manual_seed(5)
    ours = get_peft_model(tiny_llama(), AdamssConfig(**kwargs))
    torch.manual_seed(5)
    theirs = peft.get_peft_model(tiny_llama(), peft.AdamssConfig(**kwargs))
    their_layers = {n: m for n, m in theirs.named_modules() if hasattr(m, "scatter_index") and hasattr(m, "adamss_A")}
    our_layers = {n: m for n, m in ours.named_modules() if isinstance(m, AdamssLayer)}
    assert set(our_layers) == set(their_layers) and len(our_layers) == 4
    for name, layer in our_layers.items():
        assert torch.equal(layer.scatter_index["default"], their_layers[name].scatter_index["default"]), name
    theirs_sd = {k: v for k, v in theirs.state_dict().items() if "adamss_" in k}
    ours_sd = ours.state_dict()
    assert set(theirs_sd) <= set(ours_sd)
    tensors = max(max_diff(ours_sd[k], v) for k, v in theirs_sd.items())
    assert tensors <= ATOL
    inputs = {"input_ids": token_batch()}
    diff = max(tensors, max_diff(model_output(ours, inputs), model_output(theirs, inputs)))
    assert diff <= ATOL
    MEASURED[f"seeded_init_dynamic={dynamic}"] = diff


def test_report_measured_differences(capsys):
    """Print the largest differences measured above (run with -s to see them)."""
    with capsys.disabled():
        print("\nAdaMSS parity, max abs diff per case:", {k: f"{v:.2e}" for k, v in MEASURED.items()})
    assert all(v <= ATOL for v in MEASURED.values())
