"""Block-diagonal LoRA's own behaviour: only the blocks are stored and trained, and they act block by block."""

from __future__ import annotations

import pytest
import torch

from peft_core import LoraConfig, PeftModel, get_peft_model
from peft_core.conformance.models import mlp, tiny_gpt2, tiny_llama, token_batch
from peft_core.conformance.parity import max_diff, model_output, perturb_trainable
from peft_core.errors import PeftCoreError
from peft_core.serialization import get_peft_model_state_dict
from peft_core_lora_bd import BdLoraConfig, BlockDiagonalLinear


def test_blocks_act_on_their_own_slice_of_the_input():
    layer = BlockDiagonalLinear(6, 4, nblocks=2)
    torch.nn.init.normal_(layer.weight)
    x = torch.randn(3, 5, 6)
    expected = x @ layer.dense().T
    torch.testing.assert_close(layer(x), expected)
    dense = layer.dense()
    assert torch.equal(dense[:2, 3:], torch.zeros(2, 3)) and torch.equal(dense[2:, :3], torch.zeros(2, 3))
    assert torch.equal(dense[:2, :3], layer.weight[:2]) and torch.equal(dense[2:, 3:], layer.weight[2:])


def test_only_the_blocks_are_saved_and_trained(tmp_path):
    config = LoraConfig(r=4, target_modules=["q_proj", "o_proj"],
                        use_bdlora=BdLoraConfig(target_modules_bd_a=["o_proj"], target_modules_bd_b=["q_proj"], nblocks=4))
    model = get_peft_model(tiny_llama(), config)
    state = get_peft_model_state_dict(model)
    q, o = "base_model.model.model.layers.0.self_attn.q_proj", "base_model.model.model.layers.0.self_attn.o_proj"
    assert state[f"{q}.lora_A.weight"].shape == (4, 32) and state[f"{q}.lora_B.weight"].shape == (32, 1)
    assert state[f"{o}.lora_A.weight"].shape == (4, 8) and state[f"{o}.lora_B.weight"].shape == (32, 4)
    assert torch.count_nonzero(state[f"{q}.lora_B.weight"]) == 0  # a block-diagonal B starts at zero
    ids = token_batch()
    model.train()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5).zero_grad()
    model(input_ids=ids, labels=ids).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None for g in grads.values()) and len(grads) == 8
    # a JSON round trip gives back a BdLoraConfig (use_bdlora is written as a plain object)
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(tiny_llama(), tmp_path)
    assert isinstance(loaded.peft_config["default"].use_bdlora, BdLoraConfig)
    assert loaded.peft_config["default"].use_bdlora.nblocks == 4


@pytest.mark.parametrize("bd, extra, message", [
    ({"target_modules_bd_a": ["q_proj"]}, {}, "matches neither"),
    ({"target_modules_bd_a": ["q_proj", "v_proj"], "nblocks": 3}, {}, "do not divide"),
    ({"target_modules_bd_b": ["q_proj", "v_proj"], "nblocks": 2}, {"lora_bias": True}, "lora_bias"),
    ({"target_modules_bd_b": ["q_proj", "v_proj"]}, {"use_dora": True}, "use_dora"),
])
def test_configs_peft_refuses_are_refused_here_and_the_model_is_untouched(bd, extra, message):
    base = tiny_llama()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    with pytest.raises(PeftCoreError, match=message):
        get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], use_bdlora=BdLoraConfig(**bd), **extra))
    assert base.state_dict().keys() == before.keys()
    with pytest.raises(PeftCoreError, match="both"):
        BdLoraConfig(target_modules_bd_a=["q"], target_modules_bd_b=["q"])


def test_embeddings_and_convolutions_stay_plain_lora():
    config = LoraConfig(r=2, target_modules=["emb", "lin0", "conv1d"],
                        use_bdlora=BdLoraConfig(target_modules_bd_a=["lin0"], nblocks=2, match_strict=False))
    model = get_peft_model(mlp(), config)
    inner = model.base_model.model
    assert isinstance(inner.lin0.lora_A["default"], BlockDiagonalLinear)
    assert inner.emb.lora_variant == {} and inner.conv1d.lora_variant == {}


def test_gpt2_conv1d_targets_merge_to_the_same_outputs():
    # PEFT 0.21.2 cannot build these (its block-diagonal factors read Conv1D.out_features, which Conv1D lacks)
    config = LoraConfig(r=4, target_modules=["c_attn", "c_proj"], fan_in_fan_out=True,
                        use_bdlora=BdLoraConfig(target_modules_bd_a=["c_proj"], target_modules_bd_b=["c_attn"], nblocks=2))
    model = get_peft_model(tiny_gpt2(), config)
    perturb_trainable(model, seed=4, scale=0.3)
    model.eval()
    x = {"input_ids": token_batch()}
    out = model_output(model, x)
    assert max_diff(out, model_output(tiny_gpt2(), x)) > 1e-2
    assert max_diff(model_output(model.merge_and_unload(), x), out) <= 1e-5
