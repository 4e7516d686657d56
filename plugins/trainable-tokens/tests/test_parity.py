"""Trainable tokens against Hugging Face PEFT (peft==0.21.2): the same files and logits, both ways.

Standalone ``TrainableTokensConfig`` and ``LoraConfig(trainable_token_indices=...)``, on a tiny
Llama with and without tied word embeddings (a tied head must use the trained rows too, and
PEFT saves the tied head's rows for the standalone method but not under LoRA).
"""

from __future__ import annotations

import pytest
import torch

from peft_core import LoraConfig, PeftModel, get_peft_model
from peft_core.conformance.models import tiny_llama, token_batch
from peft_core.conformance.parity import config_json, max_diff, model_output, perturb_trainable, saved_shapes
from peft_core_trainable_tokens import TrainableTokensConfig

peft = pytest.importorskip("peft")

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

TOKENS = [1, 5, 7, 40]
# the tied head's logits are computed for the trained columns separately: last-bit differences only
ATOL = {False: 0.0, True: 1e-5}


def _inputs():
    ids = token_batch(batch=2, length=7)
    ids[0, :4] = torch.tensor(TOKENS)  # the trained tokens are in the input
    return {"input_ids": ids}


def _configs(kind: str):
    if kind == "lora":
        kwargs = {"target_modules": ["q_proj", "v_proj"], "trainable_token_indices": TOKENS}
        return LoraConfig(**kwargs), peft.LoraConfig(**kwargs)
    return TrainableTokensConfig(token_indices=TOKENS), peft.TrainableTokensConfig(token_indices=TOKENS)


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("kind", ["standalone", "lora"])
def test_round_trip_both_ways(kind, tied, tmp_path):
    def build():
        return tiny_llama(tie_word_embeddings=tied)

    ours_config, theirs_config = _configs(kind)
    x = _inputs()
    base = model_output(build(), x)

    ours = get_peft_model(build(), ours_config)
    perturb_trainable(ours, seed=1, scale=0.5)
    ours.eval()
    ours_out = model_output(ours, x)
    assert max_diff(ours_out, base) > 1e-2
    ours.save_pretrained(tmp_path / "ours")
    in_peft = peft.PeftModel.from_pretrained(build(), tmp_path / "ours")
    assert max_diff(model_output(in_peft, x), ours_out) <= ATOL[tied]

    theirs = peft.get_peft_model(build(), theirs_config)
    perturb_trainable(theirs, seed=2, scale=0.5)
    theirs.eval()
    theirs_out = model_output(theirs, x)
    theirs.save_pretrained(str(tmp_path / "theirs"))
    here = PeftModel.from_pretrained(build(), tmp_path / "theirs")
    assert max_diff(model_output(here, x), theirs_out) <= ATOL[tied]

    assert saved_shapes(tmp_path / "ours") == saved_shapes(tmp_path / "theirs")
    assert config_json(tmp_path / "ours") == config_json(tmp_path / "theirs")
    delta_keys = [k for k in saved_shapes(tmp_path / "ours") if "trainable_tokens_delta" in k]
    expected = {"standalone": ["base_model.model.model.embed_tokens.trainable_tokens_delta"]
                + (["base_model.model.lm_head.trainable_tokens_delta"] if tied else []),
                "lora": ["base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta"]}[kind]
    assert sorted(delta_keys) == sorted(expected)

    here.merge_adapter()
    theirs.merge_adapter()
    assert max_diff(model_output(here, x), model_output(theirs, x)) <= ATOL[tied] + 1e-5
    here.unmerge_adapter()
    theirs.unmerge_adapter()
    merged = here.merge_and_unload()
    assert max_diff(model_output(merged, x), theirs_out) <= ATOL[tied] + 1e-5
    if tied:  # merging kept the head tied to the embedding
        assert merged.lm_head.weight is merged.get_input_embeddings().weight


def test_dict_form_and_random_init_load_in_peft(tmp_path):
    config = {"target_modules": ["q_proj"], "trainable_token_indices": {"embed_tokens": [3, 9]}}
    ours = get_peft_model(tiny_llama(), LoraConfig(**config))
    perturb_trainable(ours, seed=3, scale=0.5)
    ours.eval()
    x = {"input_ids": torch.tensor([[3, 9, 2, 4]])}
    ours.save_pretrained(tmp_path)
    assert max_diff(model_output(peft.PeftModel.from_pretrained(tiny_llama(), tmp_path), x),
                    model_output(ours, x)) == 0.0
    torch.manual_seed(5)
    ours = get_peft_model(tiny_llama(), TrainableTokensConfig(token_indices=[3, 9], init_weights=False))
    torch.manual_seed(5)
    theirs = peft.get_peft_model(tiny_llama(), peft.TrainableTokensConfig(token_indices=[3, 9], init_weights=False))
    assert max_diff(model_output(ours, x), model_output(theirs, x)) == 0.0  # the same random rows from one seed
