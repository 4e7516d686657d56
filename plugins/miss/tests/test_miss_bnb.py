"""MiSS over bitsandbytes-quantized layers (CPU), through the weight hooks of the peft-core-bnb plugin.

No MiSS code knows about quantization: the layer calls the quantized module's own forward and
reads or writes a dense weight through ``dense_weight``/``write_dense_weight`` where it needs
one. The forward must equal what PEFT computes for the same saved adapter on the same
quantized model; merging requantizes, so it moves the output by rounding only.
"""

from __future__ import annotations

import pytest

from peft_core.conformance.fixtures import llama_dir  # noqa: F401  (pytest fixture)
from peft_core.conformance.models import token_batch
from peft_core.conformance.parity import checked_quantized_round_trip
from peft_core_miss import MissConfig

pytest.importorskip("bitsandbytes")
peft = pytest.importorskip("peft")

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

# how far requantizing merged (or unmerged) weights may move the output, relative to the adapter's own effect
MERGE_ROUNDING = {4: 0.5, 8: 0.1}
# the same computation on the same quantized layers as PEFT's: only float rounding
VS_PEFT_TOLERANCE = {4: 0.0, 8: 0.0}
CASES = {
    "4bit_balance": (4, {"r": 4, "target_modules": ["q_proj", "v_proj", "down_proj"]}),
    "8bit_balance": (8, {"r": 3, "target_modules": ["q_proj", "v_proj", "down_proj"]}),
    "4bit_bat": (4, {"r": 4, "init_weights": "bat", "target_modules": ["q_proj", "v_proj", "down_proj"]}),
    "8bit_mini": (8, {"r": 4, "mini_r": 8, "init_weights": "mini", "target_modules": ["q_proj", "v_proj", "down_proj"]}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_miss_on_quantized_llama_matches_peft_and_merges(case, llama_dir, tmp_path):
    bits, kwargs = CASES[case]
    diffs = checked_quantized_round_trip(peft, llama_dir, bits, MissConfig(**kwargs), {"input_ids": token_batch()},
                                         tmp_path, merge_rounding=MERGE_ROUNDING, vs_peft_tolerance=VS_PEFT_TOLERANCE)
    print(f"MISS bnb {case}: {diffs}")
