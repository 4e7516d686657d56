"""AdaLoRA against Hugging Face PEFT (peft==0.21.2): files, numbers and allocation, both ways."""

from __future__ import annotations

import json

import peft
import pytest
import torch
from safetensors.torch import load_file

from peft_core import PeftModel, get_peft_model
from peft_core.conformance.models import tiny_gpt2, tiny_llama, token_batch
from peft_core_adalora import AdaLoraConfig

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning"), pytest.mark.filterwarnings("ignore::RuntimeWarning")]

ATOL = 1e-5
CASES = {
    "llama": (tiny_llama, dict(target_modules=["q_proj", "v_proj", "down_proj"], task_type="CAUSAL_LM")),
    "gpt2": (tiny_gpt2, dict(target_modules=["c_attn", "c_fc"], fan_in_fan_out=True, task_type="CAUSAL_LM")),
}
SCHEDULE = dict(init_r=5, target_r=2, lora_alpha=6, total_step=16, tinit=2, tfinal=3)


def _randomize(model, seed=7):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if ".lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


def _logits(model):
    with torch.no_grad():
        return model(input_ids=token_batch()).logits


def _plain_state(model):
    return {k: v for k, v in model.state_dict().items()}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_peft_saved_loads_here_and_ours_loads_in_peft(kind, tmp_path):
    build, kw = CASES[kind]
    theirs = peft.get_peft_model(build(), peft.AdaLoraConfig(**kw, **SCHEDULE))
    _randomize(theirs)
    theirs.save_pretrained(tmp_path / "peft")
    expected = _logits(theirs)
    ours = PeftModel.from_pretrained(build(), tmp_path / "peft")
    assert (_logits(ours) - expected).abs().max() <= ATOL

    ours.save_pretrained(tmp_path / "ours")
    back = peft.PeftModel.from_pretrained(build(), tmp_path / "ours")
    assert (_logits(back) - expected).abs().max() <= ATOL
    a, b = load_file(str(tmp_path / "ours/adapter_model.safetensors")), load_file(str(tmp_path / "peft/adapter_model.safetensors"))
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    assert all(torch.equal(a[k], b[k]) for k in a)
    ours_json = json.loads((tmp_path / "ours/adapter_config.json").read_text())
    peft_json = json.loads((tmp_path / "peft/adapter_config.json").read_text())
    for data in (ours_json, peft_json):  # PEFT writes the target set in hash order
        data["target_modules"] = sorted(data["target_modules"])
    assert ours_json == peft_json

    merged_ours, merged_theirs = ours.merge_and_unload(), theirs.merge_and_unload()
    so, st = _plain_state(merged_ours), _plain_state(merged_theirs)
    assert so.keys() == st.keys()
    assert max((so[k] - st[k]).abs().max().item() for k in so) <= ATOL


def test_same_seed_same_init_and_same_allocation_as_peft(tmp_path):
    """Trained side by side from one seed, both libraries prune the same triplets and agree on outputs."""
    build, kw = CASES["llama"]
    models = []
    for make, config_class in ((get_peft_model, AdaLoraConfig), (peft.get_peft_model, peft.AdaLoraConfig)):
        torch.manual_seed(0)
        models.append(make(build(), config_class(**kw, **SCHEDULE)))
    ours, theirs = models
    mine = dict(ours.named_parameters())
    peers = {n: p for n, p in theirs.named_parameters() if ".ranknum." not in n}  # ranknum: a number here
    assert mine.keys() == peers.keys() and all(torch.equal(mine[n], peers[n]) for n in mine)
    ids = torch.randint(0, 97, (2, 10), generator=torch.Generator().manual_seed(1))
    for model in models:
        model.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        for step in range(SCHEDULE["total_step"]):
            model(input_ids=ids, labels=ids).loss.backward()
            opt.step()
            model.base_model.update_and_allocate(step)
            opt.zero_grad()
        model.eval()
    ours_pattern = ours.peft_config["default"].rank_pattern
    theirs_pattern = {k.replace(".default", ""): v for k, v in theirs.peft_config["default"].rank_pattern.items()}
    assert ours_pattern == theirs_pattern
    assert sum(sum(m) for m in ours_pattern.values()) == SCHEDULE["target_r"] * len(ours_pattern)
    assert (_logits(ours) - _logits(theirs)).abs().max() <= ATOL

    # PEFT writes the allocation (pattern + truncated tensors); we read it, and PEFT reads ours
    theirs.save_pretrained(tmp_path / "peft")
    ours.save_pretrained(tmp_path / "ours")
    assert json.loads((tmp_path / "ours/adapter_config.json").read_text())["rank_pattern"] == \
        json.loads((tmp_path / "peft/adapter_config.json").read_text())["rank_pattern"]
    expected = _logits(theirs)
    assert (_logits(PeftModel.from_pretrained(build(), tmp_path / "peft")) - expected).abs().max() <= ATOL
    assert (_logits(peft.PeftModel.from_pretrained(build(), tmp_path / "ours")) - expected).abs().max() <= ATOL


def test_loss_matches_peft_with_orthogonal_regularisation():
    build, kw = CASES["llama"]
    ours = get_peft_model(build(), AdaLoraConfig(**kw, **SCHEDULE))
    theirs = peft.get_peft_model(build(), peft.AdaLoraConfig(**kw, **SCHEDULE))
    _randomize(ours)
    _randomize(theirs)
    ids = token_batch()
    a, b = ours(input_ids=ids, labels=ids).loss, theirs(input_ids=ids, labels=ids).loss
    assert abs(a.item() - b.item()) <= ATOL
