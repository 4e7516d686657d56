"""Prefix tuning against Hugging Face PEFT (peft==0.21.2), both ways, on a tiny Llama, T5 and BERT."""

from __future__ import annotations

import pytest
import torch

from peft_core import PeftModel, get_peft_model
from peft_core.conformance.prompt_parity import BUILDERS, round_trip_both_ways, same_config, training_losses
from peft_core.errors import UnsupportedOperation
from peft_core_prefix_tuning import PrefixTuningConfig

peft = pytest.importorskip("peft")

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

ATOL = 1e-6


@pytest.mark.parametrize(("task", "projection"), [("CAUSAL_LM", False), ("CAUSAL_LM", True), ("SEQ_2_SEQ_LM", False),
                                                  ("SEQ_2_SEQ_LM", True), ("SEQ_CLS", False)])
def test_adapters_load_both_ways_with_identical_logits(task, projection):
    fields = {"task_type": task, "num_virtual_tokens": 3, "prefix_projection": projection}
    result = round_trip_both_ways(PrefixTuningConfig(**fields), peft.PrefixTuningConfig(**fields))
    assert result["peft_to_ours"] <= ATOL and result["ours_to_peft"] <= ATOL, result
    assert result["generate_same"] in (True, None)
    theirs, ours = result["shapes"]
    assert ours == theirs
    assert same_config(*result["configs"])


def test_grouped_query_attention_prefix_has_the_kv_heads_shape():
    """Llama with 4 query / 2 key-value heads: the prefix is 2 heads × head_dim 8 wide, as PEFT computes."""
    torch.manual_seed(0)
    model = get_peft_model(BUILDERS["CAUSAL_LM"](), PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5))
    config = model.peft_config["default"]
    assert (config.token_dim, config.num_attention_heads, config.num_layers) == (16, 2, 2)
    assert tuple(model.get_prompt_embedding_to_save("default").shape) == (5, 2 * 2 * 16)
    cache = model.get_prompt(batch_size=3)
    assert cache.get_seq_length() == 5 and tuple(cache.layers[0].keys.shape) == (3, 2, 5, 8)


@pytest.mark.parametrize("task", ["CAUSAL_LM", "SEQ_2_SEQ_LM", "SEQ_CLS"])
def test_training_lowers_the_loss(task):
    torch.manual_seed(0)
    model = get_peft_model(BUILDERS[task](), PrefixTuningConfig(task_type=task, num_virtual_tokens=4,
                                                                prefix_projection=task == "CAUSAL_LM"))
    losses = training_losses(model, task)
    assert losses[-1] < losses[0], losses


def test_zero_init_and_projection_parameters():
    torch.manual_seed(0)
    model = get_peft_model(BUILDERS["CAUSAL_LM"](), PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2,
                                                                       prefix_projection=True, init_weights="zero",
                                                                       encoder_hidden_size=12))
    encoder = model.prompt_encoder["default"]
    assert encoder.transform[0].out_features == 12
    assert torch.count_nonzero(model.get_prompt_embedding_to_save("default")) == 0
    trainable = {n.split("default.")[-1] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"embedding.weight", "transform.0.weight", "transform.0.bias", "transform.2.weight",
                         "transform.2.bias"}


def test_trainable_load_is_refused(tmp_path):
    torch.manual_seed(0)
    get_peft_model(BUILDERS["CAUSAL_LM"](), PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2)
                   ).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedOperation, match="inference only"):
        PeftModel.from_pretrained(BUILDERS["CAUSAL_LM"](), tmp_path, is_trainable=True)
