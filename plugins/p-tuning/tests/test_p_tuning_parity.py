"""P-tuning against Hugging Face PEFT (peft==0.21.2), both ways, on a tiny Llama, T5 and BERT."""

from __future__ import annotations

import pytest
import torch

from peft_core import get_peft_model
from peft_core.conformance.prompt_parity import BUILDERS, round_trip_both_ways, same_config, training_losses
from peft_core_p_tuning import PromptEncoderConfig

peft = pytest.importorskip("peft")

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

#: the saved prompt is the encoder's output computed in float32 by two different call paths
ATOL = 1e-5


@pytest.mark.parametrize(("task", "kind"), [("CAUSAL_LM", "MLP"), ("CAUSAL_LM", "LSTM"), ("SEQ_2_SEQ_LM", "MLP"),
                                            ("SEQ_2_SEQ_LM", "LSTM"), ("SEQ_CLS", "MLP")])
def test_adapters_load_both_ways_with_identical_logits(task, kind):
    fields = {"task_type": task, "num_virtual_tokens": 3, "encoder_reparameterization_type": kind,
              "encoder_hidden_size": 12}
    result = round_trip_both_ways(PromptEncoderConfig(**fields), peft.PromptEncoderConfig(**fields))
    assert result["peft_to_ours"] <= ATOL and result["ours_to_peft"] <= ATOL, result
    assert result["generate_same"] in (True, None)
    theirs, ours = result["shapes"]
    assert ours == theirs == {**ours, "prompt_embeddings": (3 * (2 if task == "SEQ_2_SEQ_LM" else 1), 32)}
    assert same_config(*result["configs"])


@pytest.mark.parametrize("kind", ["MLP", "LSTM"])
def test_same_seed_gives_the_same_encoder_as_peft(kind):
    fields = {"task_type": "CAUSAL_LM", "num_virtual_tokens": 4, "encoder_reparameterization_type": kind}
    torch.manual_seed(3)
    theirs = peft.get_peft_model(BUILDERS["CAUSAL_LM"](), peft.PromptEncoderConfig(**fields))
    torch.manual_seed(3)
    ours = get_peft_model(BUILDERS["CAUSAL_LM"](), PromptEncoderConfig(**fields))
    ours_state = ours.prompt_encoder["default"].state_dict()
    assert ours_state.keys() == theirs.prompt_encoder["default"].state_dict().keys()
    for key, value in theirs.prompt_encoder["default"].state_dict().items():
        assert torch.equal(ours_state[key], value), key
    assert torch.allclose(ours.get_prompt_embedding_to_save("default"), theirs.get_prompt_embedding_to_save("default"))


@pytest.mark.parametrize("task", ["CAUSAL_LM", "SEQ_2_SEQ_LM", "SEQ_CLS"])
def test_training_lowers_the_loss(task):
    torch.manual_seed(0)
    model = get_peft_model(BUILDERS[task](), PromptEncoderConfig(task_type=task, num_virtual_tokens=4,
                                                                 encoder_reparameterization_type="LSTM"))
    losses = training_losses(model, task)
    assert losses[-1] < losses[0], losses


def test_inference_load_has_no_encoder_network(tmp_path):
    """Saved is the MLP's output; loaded for inference, only the embedding exists and is used as is."""
    torch.manual_seed(0)
    model = get_peft_model(BUILDERS["CAUSAL_LM"](), PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=3))
    saved = model.get_prompt_embedding_to_save("default")
    assert not torch.equal(saved, model.prompt_encoder["default"].embedding.weight.detach())
    model.save_pretrained(tmp_path)
    from peft_core import PeftModel

    loaded = PeftModel.from_pretrained(BUILDERS["CAUSAL_LM"](), tmp_path)
    encoder = loaded.prompt_encoder["default"]
    assert not hasattr(encoder, "mlp_head") and torch.equal(encoder.embedding.weight, saved)


def test_lstm_encoder_trains_under_cpu_autocast():
    """torch's CPU LSTM has no bfloat16 autocast kernel; the encoder runs it in float32 and trains on."""
    torch.manual_seed(0)
    model = get_peft_model(BUILDERS["CAUSAL_LM"](), PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=3,
                                                                        encoder_reparameterization_type="LSTM"))
    ids = torch.randint(0, 50, (2, 5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = [p.grad for p in model.prompt_encoder["default"].lstm_head.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
