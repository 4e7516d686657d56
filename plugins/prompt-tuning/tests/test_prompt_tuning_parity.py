"""Prompt tuning against Hugging Face PEFT (peft==0.21.2), both ways, on a tiny Llama, T5 and BERT."""

from __future__ import annotations

import pytest
import torch

from peft_core import PeftModel, get_peft_model
from peft_core.conformance.prompt_parity import BUILDERS, round_trip_both_ways, same_config, training_losses
from peft_core.errors import UnsupportedOperation
from peft_core_prompt_tuning import PromptTuningConfig

peft = pytest.importorskip("peft")

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

ATOL = 1e-6


@pytest.mark.parametrize(("task", "init"), [("CAUSAL_LM", "RANDOM"), ("CAUSAL_LM", "SAMPLE_VOCAB"),
                                          ("SEQ_2_SEQ_LM", "RANDOM"), ("SEQ_CLS", "SAMPLE_VOCAB")])
def test_adapters_load_both_ways_with_identical_logits(task, init):
    fields = {"task_type": task, "num_virtual_tokens": 3, "prompt_tuning_init": init}
    result = round_trip_both_ways(PromptTuningConfig(**fields), peft.PromptTuningConfig(**fields))
    assert result["peft_to_ours"] <= ATOL and result["ours_to_peft"] <= ATOL, result
    assert result["generate_same"] in (True, None)
    theirs, ours = result["shapes"]
    assert ours == theirs and "prompt_embeddings" in ours
    assert same_config(*result["configs"])


@pytest.mark.parametrize("task", ["CAUSAL_LM", "SEQ_CLS"])
def test_same_seed_gives_the_same_prompt_as_peft(task):
    """RANDOM and SAMPLE_VOCAB draw their init exactly as PEFT does (same seed, same prompt)."""
    for init in ("RANDOM", "SAMPLE_VOCAB"):
        fields = {"task_type": task, "num_virtual_tokens": 4, "prompt_tuning_init": init}
        torch.manual_seed(7)
        theirs = peft.get_peft_model(BUILDERS[task](), peft.PromptTuningConfig(**fields))
        torch.manual_seed(7)
        ours = get_peft_model(BUILDERS[task](), PromptTuningConfig(**fields))
        assert torch.equal(ours.get_prompt_embedding_to_save("default"), theirs.get_prompt_embedding_to_save("default"))


@pytest.mark.parametrize("task", ["CAUSAL_LM", "SEQ_2_SEQ_LM", "SEQ_CLS"])
def test_training_lowers_the_loss(task):
    torch.manual_seed(0)
    model = get_peft_model(BUILDERS[task](), PromptTuningConfig(task_type=task, num_virtual_tokens=4))
    losses = training_losses(model, task)
    assert losses[-1] < losses[0], losses


def test_trainable_load_is_refused_like_peft(tmp_path):
    """PEFT refuses is_trainable=True for prompt adapters (the file holds the materialized prompt); so do we."""
    torch.manual_seed(0)
    theirs = peft.get_peft_model(BUILDERS["CAUSAL_LM"](), peft.PromptTuningConfig(task_type="CAUSAL_LM",
                                                                                   num_virtual_tokens=3))
    theirs.save_pretrained(tmp_path)
    with pytest.raises(ValueError):
        peft.PeftModel.from_pretrained(BUILDERS["CAUSAL_LM"](), tmp_path, is_trainable=True)
    base = BUILDERS["CAUSAL_LM"]()
    with pytest.raises(UnsupportedOperation, match="inference only"):
        PeftModel.from_pretrained(base, tmp_path, is_trainable=True)
    loaded = PeftModel.from_pretrained(base, tmp_path)
    assert not any(p.requires_grad for p in loaded.parameters())
    with pytest.raises(UnsupportedOperation, match="inference only"):
        loaded.load_adapter(tmp_path, "other", is_trainable=True)
