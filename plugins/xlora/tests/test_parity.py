"""X-LoRA against Hugging Face PEFT 0.21.2: the same classifier file and config, the same logits both ways.

PEFT's X-LoRA only runs with experts named ``"0"``, ``"1"``, … (it activates the ``adapters``
keys but loads the experts under their positions), so the experts here are named that way.
PEFT 0.21.2 also drops the classifier's first layer (``layers.0.*``) when it saves: its
per-adapter filter removes every key containing ``.0.`` because ``"0"`` is also an expert's
name. The PEFT → peft-core direction therefore writes those tensors back from PEFT's live
model before loading (asserting that they are the only ones missing), and a separate test
checks that the incomplete file loads here with a warning naming them.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from peft_core import PeftModel, get_peft_model
from peft_core.conformance.models import tiny_llama, token_batch
from peft_core.conformance.parity import config_json, max_diff, model_output
from peft_core_xlora import XLoraConfig

peft = pytest.importorskip("peft")
pytestmark = pytest.mark.parity

FILE = "adapter_model.safetensors"
CONFIGS = {
    "deep-layerwise": dict(xlora_depth=2, xlora_size=8, layerwise_scalings=True),
    "topk-pass-weight": dict(top_k_lora=1, scaling_pass_value=0.5, global_scaling_weight=0.7, softmax_temperature=0.5),
    "softmax-topk": dict(xlora_depth=3, xlora_size=6, xlora_dropout_p=0.0, enable_softmax=False,
                         enable_softmax_topk=True, top_k_lora=1, layerwise_scalings=True),
}
EXPERTS = {"0": ["q_proj", "v_proj", "embed_tokens"], "1": ["v_proj", "down_proj"]}


def base() -> torch.nn.Module:
    return tiny_llama(use_cache=False)


@pytest.fixture(scope="module")
def experts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two LoRA experts saved by PEFT (non-identity: ``init_lora_weights=False``)."""
    root = tmp_path_factory.mktemp("experts")
    paths = {}
    for seed, (name, targets) in enumerate(EXPERTS.items()):
        torch.manual_seed(40 + seed)
        model = peft.get_peft_model(base(), peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets,
                                                             init_lora_weights=False))
        model.save_pretrained(root / name)
        paths[name] = str(root / name)
    return paths


def inputs() -> dict[str, torch.Tensor]:
    return {"input_ids": token_batch(batch=2, length=9, seed=3)}


def peft_xlora(experts: dict[str, str], fields: dict) -> torch.nn.Module:
    torch.manual_seed(7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = peft.get_peft_model(base(), peft.XLoraConfig(task_type="CAUSAL_LM", hidden_size=32, adapters=experts,
                                                             **fields))
    return model.eval()


def ours_xlora(experts: dict[str, str], fields: dict) -> torch.nn.Module:
    torch.manual_seed(8)
    model = get_peft_model(base(), XLoraConfig(task_type="CAUSAL_LM", hidden_size=32, adapters=experts, **fields))
    with torch.no_grad():  # a classifier that is not PEFT's seeded one: the file, not the seed, must carry it
        for param in model.base_model.internal_xlora_classifier.parameters():
            param.mul_(3.0)
    return model.eval()


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_peft_saved_xlora_loads_here_with_the_same_logits(experts, tmp_path: Path, case: str) -> None:
    theirs = peft_xlora(experts, CONFIGS[case])
    expected = model_output(theirs, inputs())
    theirs.save_pretrained(tmp_path)
    saved = load_file(str(tmp_path / FILE))
    live = {k.removeprefix("base_model."): v for k, v in theirs.state_dict().items() if "internal_xlora_classifier" in k}
    missing = {f"base_model.{k}" for k in live} - set(saved)
    assert missing and all(".layers.0." in k for k in missing)  # PEFT 0.21.2's save drops exactly layers.0
    save_file({**saved, **{f"base_model.{k}": v.contiguous() for k, v in live.items()}}, str(tmp_path / FILE),
              metadata={"format": "pt"})

    ours = PeftModel.from_pretrained(base(), tmp_path)
    diff = max_diff(model_output(ours, inputs()), expected)
    print(f"X-LoRA {case}: PEFT -> peft-core max abs logit diff {diff:.3g}")
    assert diff <= 1e-5
    assert max_diff(ours.get_latest_scalings(), theirs.get_latest_scalings()) <= 1e-6


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_ours_loads_in_peft_with_the_same_logits(experts, tmp_path: Path, case: str) -> None:
    ours = ours_xlora(experts, CONFIGS[case])
    expected = model_output(ours, inputs())
    ours.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = peft.PeftModel.from_pretrained(base(), str(tmp_path)).eval()
    diff = max_diff(model_output(theirs, inputs()), expected)
    print(f"X-LoRA {case}: peft-core -> PEFT max abs logit diff {diff:.3g}")
    assert diff <= 1e-5
    theirs_config = config_json(tmp_path)
    peft_dir = tmp_path / "peft"
    theirs.save_pretrained(peft_dir)
    volatile = {"peft_version", "auto_mapping", "base_model_name_or_path", "revision"}
    mine, written = config_json(tmp_path), config_json(peft_dir)
    assert {k: v for k, v in mine.items() if k not in volatile} == \
        {k: v for k, v in written.items() if k not in volatile}, (theirs_config, written)


def test_generate_matches_peft(experts) -> None:
    theirs = peft_xlora(experts, CONFIGS["deep-layerwise"])
    ours = get_peft_model(base(), XLoraConfig(task_type="CAUSAL_LM", hidden_size=32, adapters=experts,
                                              **CONFIGS["deep-layerwise"])).eval()
    ours.base_model.internal_xlora_classifier.load_state_dict(theirs.base_model.internal_xlora_classifier.state_dict())
    prompt = token_batch(batch=1, length=4, seed=5)
    kwargs = dict(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=5, do_sample=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.equal(ours.generate(**kwargs), theirs.generate(**kwargs))


def test_peft_file_without_the_first_classifier_layer_loads_with_a_warning(experts, tmp_path: Path) -> None:
    theirs = peft_xlora(experts, CONFIGS["deep-layerwise"])
    theirs.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match=r"internal_xlora_classifier\.layers\.0\."):
        PeftModel.from_pretrained(base(), tmp_path)
