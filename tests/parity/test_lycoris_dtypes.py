"""LoHa and LoKr over half-precision bases: fp32 adapters, outputs equal to PEFT's in both directions."""

from __future__ import annotations

import pytest
import torch

from peft_core import PeftModel, get_peft_model
from peft_core.conformance.models import tiny_llama, token_batch
from peft_core.conformance.parity import max_diff, model_output, perturb_trainable

peft = pytest.importorskip("peft")
loha = pytest.importorskip("peft_core_loha")
lokr = pytest.importorskip("peft_core_lokr")

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

KWARGS = {"target_modules": ["q_proj", "v_proj", "down_proj"], "r": 2}
CONFIGS = {"LOHA": (loha.LoHaConfig, peft.LoHaConfig), "LOKR": (lokr.LoKrConfig, peft.LoKrConfig)}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("method", list(CONFIGS))
def test_half_precision_base_matches_peft(method, dtype, tmp_path):
    ours_config, theirs_config = CONFIGS[method]
    inputs = {"input_ids": token_batch()}

    def build():
        return tiny_llama().to(dtype)

    ours = get_peft_model(build(), ours_config(**KWARGS))
    assert all(p.dtype == torch.float32 for n, p in ours.named_parameters() if p.requires_grad)
    perturb_trainable(ours, seed=1, scale=0.3)
    ours.eval()
    out = model_output(ours, inputs)
    assert out.dtype == dtype and max_diff(out, model_output(build(), inputs)) > 1e-2
    ours.save_pretrained(tmp_path / "ours")
    assert max_diff(model_output(peft.PeftModel.from_pretrained(build(), tmp_path / "ours"), inputs), out) == 0

    theirs = peft.get_peft_model(build(), theirs_config(**KWARGS))
    perturb_trainable(theirs, seed=2, scale=0.3)
    theirs.eval()
    theirs.save_pretrained(tmp_path / "theirs")
    loaded = PeftModel.from_pretrained(build(), tmp_path / "theirs")
    assert max_diff(model_output(loaded, inputs), model_output(theirs, inputs)) == 0
