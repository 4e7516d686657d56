"""SHiRA over bitsandbytes-quantized layers (CPU), through the weight hooks of the peft-core-bnb plugin.

No SHiRA code knows about quantization: the layer calls the quantized module's own forward and
reads or writes a dense weight through ``dense_weight``/``write_dense_weight`` where it needs
one. The forward must equal what PEFT computes for the same saved adapter on the same
quantized model; merging requantizes, so it moves the output by rounding only.
"""

from __future__ import annotations

import pytest

from peft_core.conformance.fixtures import llama_dir  # noqa: F401  (pytest fixture)
from peft_core.conformance.models import token_batch
from peft_core.conformance.parity import checked_quantized_round_trip
from peft_core_shira import ShiraConfig

pytest.importorskip("bitsandbytes")
peft = pytest.importorskip("peft")

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

# how far requantizing merged (or unmerged) weights may move the output, relative to the adapter's own effect
MERGE_ROUNDING = {4: 0.5, 8: 0.1}
# PEFT's SHiRA multiplies by the dequantized weight plus the update; here the quantized layer runs its own
# forward (8-bit: LLM.int8 activations) and the sparse update is added, so 8-bit differs by that rounding
VS_PEFT_TOLERANCE = {4: 0.0, 8: 0.01}
CASES = {
    "4bit": (4, {"r": 2, "random_seed": 0, "target_modules": ["q_proj", "v_proj", "down_proj"]}),
    "8bit": (8, {"r": 2, "random_seed": 0, "target_modules": ["q_proj", "v_proj", "down_proj"]}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_shira_on_quantized_llama_matches_peft_and_merges(case, llama_dir, tmp_path):
    bits, kwargs = CASES[case]
    diffs = checked_quantized_round_trip(peft, llama_dir, bits, ShiraConfig(**kwargs), {"input_ids": token_batch()},
                                         tmp_path, merge_rounding=MERGE_ROUNDING, vs_peft_tolerance=VS_PEFT_TOLERANCE)
    print(f"SHIRA bnb {case}: {diffs}")
