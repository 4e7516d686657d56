"""IA³ over bitsandbytes-quantized layers (CPU), through the weight hooks of the peft-core-bnb plugin.

No IA³ code knows about quantization: the layer calls the quantized module's own forward and
merges through ``dense_weight``/``write_dense_weight``. The forward must equal PEFT's
dedicated ``ia3/bnb.py`` layers; merging (which PEFT refuses for quantized models) requantizes,
so its output moves by rounding only — far less than the adapter itself moves it.
"""

from __future__ import annotations

import pytest
import torch

from peft_core import get_peft_model
from peft_core.conformance.fixtures import llama_dir  # noqa: F401  (pytest fixture)
from peft_core.conformance.models import token_batch
from peft_core.conformance.parity import load_quantized, max_diff, model_output, perturb_trainable
from peft_core_ia3 import IA3Config

pytest.importorskip("bitsandbytes")
peft = pytest.importorskip("peft")

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]


# how far requantizing a merged weight may move the output, relative to the adapter's own effect
MERGE_ROUNDING = {4: 0.35, 8: 0.05}


@pytest.mark.parametrize("bits", [4, 8])
def test_ia3_on_quantized_llama_matches_peft_and_merges(bits, llama_dir, tmp_path):
    inputs = {"input_ids": token_batch()}
    base_out = model_output(load_quantized(llama_dir, bits), inputs)
    config = IA3Config(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"])
    ours = get_peft_model(load_quantized(llama_dir, bits), config)
    layer = ours.base_model.model.model.layers[0].self_attn.k_proj
    assert layer.description.quantized
    perturb_trainable(ours, seed=1, scale=0.3)
    ours.eval()
    out = model_output(ours, inputs)
    effect = max_diff(out, base_out)
    assert effect > 1e-2
    ours.save_pretrained(tmp_path)
    theirs = peft.PeftModel.from_pretrained(load_quantized(llama_dir, bits), tmp_path)
    assert max_diff(model_output(theirs, inputs), out) <= 1e-5

    ours.merge_adapter()
    merged = model_output(ours, inputs)
    assert torch.isfinite(merged).all()
    assert max_diff(merged, out) < MERGE_ROUNDING[bits] * effect
    ours.unmerge_adapter()
    assert max_diff(model_output(ours, inputs), out) < 2 * MERGE_ROUNDING[bits] * effect
