"""LoHa and LoKr over bitsandbytes-quantized layers (CPU), through the weight hooks of peft-core-bnb.

No LyCORIS code knows about quantization: the layer runs the quantized module's own forward,
adds ``x ΔWᵀ`` with ``ΔW`` shaped from the layer description, and merges through
``dense_weight``/``write_dense_weight``. At 8 bits the forward must equal PEFT's (whose
LoHa/LoKr wrap ``Linear8bitLt`` as a plain ``nn.Linear``). At 4 bits PEFT sizes its factors
from the packed weight and cannot load a correct adapter, so there the adapter saved on the
quantized model is checked to be the PEFT-format adapter of the unquantized one. Merging
(PEFT has no merge for these) requantizes, so the output moves by rounding only.
"""

from __future__ import annotations

import pytest
import torch

from peft_core import PeftModel, get_peft_model
from peft_core.conformance.fixtures import llama_dir  # noqa: F401  (pytest fixture)
from peft_core.conformance.models import tiny_llama, token_batch
from peft_core.conformance.parity import load_quantized, max_diff, model_output, perturb_trainable

pytest.importorskip("bitsandbytes")
peft = pytest.importorskip("peft")
loha = pytest.importorskip("peft_core_loha")
lokr = pytest.importorskip("peft_core_lokr")

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

TARGETS = ["k_proj", "v_proj", "down_proj"]
CONFIGS = {"LOHA": lambda: loha.LoHaConfig(target_modules=TARGETS, r=4),
           "LOKR": lambda: lokr.LoKrConfig(target_modules=TARGETS, r=2)}
# how far requantizing a merged weight may move the output, relative to the adapter's own effect
MERGE_ROUNDING = {4: 0.35, 8: 0.05}


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("method", ["LOHA", "LOKR"])
def test_lycoris_on_quantized_llama(method, bits, llama_dir, tmp_path):
    inputs = {"input_ids": token_batch()}
    base_out = model_output(load_quantized(llama_dir, bits), inputs)
    ours = get_peft_model(load_quantized(llama_dir, bits), CONFIGS[method]())
    layer = ours.base_model.model.model.layers[0].self_attn.k_proj
    assert layer.description.quantized
    perturb_trainable(ours, seed=1, scale=0.3)
    ours.eval()
    out = model_output(ours, inputs)
    effect = max_diff(out, base_out)
    assert effect > 1e-2
    ours.save_pretrained(tmp_path)

    if bits == 8:
        theirs = peft.PeftModel.from_pretrained(load_quantized(llama_dir, bits), tmp_path)
        assert max_diff(model_output(theirs, inputs), out) <= 1e-5
    else:  # the same adapter on the unquantized model: identical deltas, and PEFT loads it there
        plain = PeftModel.from_pretrained(tiny_llama(), tmp_path)
        plain_layer = plain.base_model.model.model.layers[0].self_attn.k_proj
        assert torch.equal(plain_layer.get_delta_weight("default"), layer.get_delta_weight("default"))
        theirs = peft.PeftModel.from_pretrained(tiny_llama(), tmp_path)
        assert max_diff(model_output(theirs, inputs), model_output(plain, inputs)) <= 1e-5

    ours.merge_adapter()
    merged = model_output(ours, inputs)
    assert torch.isfinite(merged).all()
    assert max_diff(merged, out) < MERGE_ROUNDING[bits] * effect
    ours.unmerge_adapter()
    assert max_diff(model_output(ours, inputs), out) < 2 * MERGE_ROUNDING[bits] * effect
