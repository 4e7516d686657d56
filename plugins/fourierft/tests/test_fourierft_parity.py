"""FourierFT against Hugging Face PEFT (peft==0.21.2): the same files, the same numbers, both ways.

Each case builds an adapter with non-zero coefficients in one library, saves it and loads it
in the other: outputs agree, ``merge_and_unload`` gives the same weights, the files hold the
same keys and shapes, and the configs are equal. A fresh adapter with PEFT's default init
(random coefficients) drawn after the same seed is the same adapter in both libraries, which
shows the seeded frequency positions and the coefficient draw agree.
"""

from __future__ import annotations

import pytest
import torch

from peft_core import get_peft_model
from peft_core.conformance.models import mlp, tiny_gpt2, tiny_llama
from peft_core.conformance.parity import config_json, max_diff, model_output, round_trip_both_ways, token_inputs
from peft_core_fourierft import FourierFTConfig
from peft_core_fourierft.layer import FourierFTLayer

peft = pytest.importorskip("peft")

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

ATOL = 1e-5
#: the largest difference each direction showed, reported by the last test
MEASURED: dict[str, float] = {}


CASES = {
    "llama": (tiny_llama, {"target_modules": ["q_proj", "v_proj", "down_proj"], "n_frequency": 64, "scaling": 20.0}),
    "llama_pattern_seed": (tiny_llama, {"target_modules": ["k_proj", "v_proj", "up_proj"], "n_frequency": 40,
                                        "random_loc_seed": 12345, "scaling": 150.0,
                                        "n_frequency_pattern": {"up_proj": 200, "model.layers.1.self_attn.v_proj": 7}}),
    "llama_bias_all": (tiny_llama, {"target_modules": ["v_proj"], "n_frequency": 30, "bias": "all",
                                    "task_type": "CAUSAL_LM"}),
    "gpt2_conv1d": (tiny_gpt2, {"target_modules": ["c_attn", "mlp.c_proj"], "n_frequency": 100,
                                "fan_in_fan_out": True, "scaling": 50.0}),
    # target_modules and fan_in_fan_out left unset: both libraries take them from the model
    "gpt2_defaults": (tiny_gpt2, {"n_frequency": 60}),
    "llama_defaults": (tiny_llama, {"n_frequency": 60}),
    "mlp_fourier_only_bias": (mlp, {"target_modules": ["lin0"], "n_frequency": 33, "bias": "fourier_only",
                                    "modules_to_save": ["lin1"], "init_weights": True}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fourierft_parity(case, tmp_path):
    build, kwargs = CASES[case]
    # saved shapes and merged keys are compared, and a fully unwrapped merge checked, by the round trip
    diffs = round_trip_both_ways(peft, build, token_inputs(), FourierFTConfig(**kwargs), peft.FourierFTConfig(**kwargs),
                                 tmp_path, seed=11, theirs_seed=22, scale=0.5)
    assert diffs["moved"] > 1e-3, "the adapter must change the output for the test to mean anything"
    for key in ("ours_to_peft", "peft_to_ours", "merged_weights"):
        assert diffs[key] <= ATOL, (key, diffs)
    assert config_json(tmp_path / "ours") == config_json(tmp_path / "theirs")
    assert type(peft.PeftConfig.from_pretrained(str(tmp_path / "ours"))) is peft.FourierFTConfig
    MEASURED[case] = max(diffs["ours_to_peft"], diffs["peft_to_ours"], diffs["merged_weights"])


def test_default_init_is_the_same_adapter_as_peft():
    """Same torch seed, PEFT's default init_weights=False: identical coefficients, positions and outputs."""
    kwargs = {"target_modules": ["q_proj", "v_proj"], "n_frequency": 80, "random_loc_seed": 4242}
    torch.manual_seed(7)
    ours = get_peft_model(tiny_llama(), FourierFTConfig(**kwargs))
    torch.manual_seed(7)
    theirs = peft.get_peft_model(tiny_llama(), peft.FourierFTConfig(**kwargs))
    layers = {n: m for n, m in ours.named_modules() if isinstance(m, FourierFTLayer)}
    for name, module in theirs.named_modules():
        if name in layers:
            assert torch.equal(layers[name].indices["default"], module.indices["default"]), name
            assert torch.equal(layers[name].fourierft_spectrum["default"], module.fourierft_spectrum["default"]), name
    assert len(layers) == 4
    inputs = token_inputs()
    diff = max_diff(model_output(ours, inputs), model_output(theirs, inputs))
    assert diff <= ATOL
    MEASURED["default_init"] = diff


def test_report_measured_differences(capsys):
    """Print the largest differences measured above (run with -s to see them)."""
    with capsys.disabled():
        print("\nFourierFT parity, max abs diff per case:", {k: f"{v:.2e}" for k, v in MEASURED.items()})
    assert all(v <= ATOL for v in MEASURED.values())
