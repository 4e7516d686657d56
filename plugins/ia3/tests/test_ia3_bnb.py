"""IA³ over bitsandbytes-quantized layers (CPU), through the weight hooks of the peft-core-bnb plugin.

No IA³ code knows about quantization: the layer calls the quantized module's own forward and
merges through ``dense_weight``/``write_dense_weight``. The forward must equal PEFT's
dedicated ``ia3/bnb.py`` layers; merging (which PEFT refuses for quantized models) requantizes,
so its output moves by rounding only — far less than the adapter itself moves it.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from peft_core import get_peft_model
from peft_core.conformance.models import tiny_llama, token_batch
from peft_core.conformance.parity import max_diff, model_output, perturb_trainable
from peft_core_ia3 import IA3Config

pytest.importorskip("bitsandbytes")
peft = pytest.importorskip("peft")

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama().save_pretrained(path)
    return path


def _load(path, bits: int):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4") if bits == 4 \
        else BitsAndBytesConfig(load_in_8bit=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoModelForCausalLM.from_pretrained(path, quantization_config=quant).eval()


# how far requantizing a merged weight may move the output, relative to the adapter's own effect
MERGE_ROUNDING = {4: 0.35, 8: 0.05}


@pytest.mark.parametrize("bits", [4, 8])
def test_ia3_on_quantized_llama_matches_peft_and_merges(bits, llama_dir, tmp_path):
    inputs = {"input_ids": token_batch()}
    base_out = model_output(_load(llama_dir, bits), inputs)
    ours = get_peft_model(_load(llama_dir, bits), IA3Config(target_modules=["k_proj", "v_proj", "down_proj"],
                                                            feedforward_modules=["down_proj"]))
    layer = ours.base_model.model.model.layers[0].self_attn.k_proj
    assert layer.description.quantized
    perturb_trainable(ours, seed=1, scale=0.3)
    ours.eval()
    out = model_output(ours, inputs)
    effect = max_diff(out, base_out)
    assert effect > 1e-2
    ours.save_pretrained(tmp_path)
    theirs = peft.PeftModel.from_pretrained(_load(llama_dir, bits), tmp_path)
    assert max_diff(model_output(theirs, inputs), out) <= 1e-5

    ours.merge_adapter()
    merged = model_output(ours, inputs)
    assert torch.isfinite(merged).all()
    assert max_diff(merged, out) < MERGE_ROUNDING[bits] * effect
    ours.unmerge_adapter()
    assert max_diff(model_output(ours, inputs), out) < 2 * MERGE_ROUNDING[bits] * effect
