"""``peft_core.buffers``: frozen per-adapter tensors that are saved, and seeded draws that leave the global RNG alone."""

from __future__ import annotations

import torch
from torch import nn

from peft_core.buffers import BufferDict, forked_seed, seeded_randperm
from peft_core.layer import AdapterLayer
from peft_core.weights import LINEAR, LayerDescription


class _Layer(AdapterLayer):
    adapter_layer_names = ("toy_scale", "toy_norm")

    def __init__(self) -> None:
        super().__init__(nn.Linear(3, 2), LayerDescription(kind=LINEAR, in_features=3, out_features=2))
        self.toy_scale = nn.ParameterDict({"a": nn.Parameter(torch.ones(2))})
        self.toy_norm = BufferDict()
        self.toy_norm["a"] = torch.arange(3.0)


def test_buffer_dict_entries_are_saved_moved_and_deleted_like_buffers():
    layer = _Layer()
    assert "toy_norm.a" in layer.state_dict() and "toy_norm.a" in dict(layer.named_buffers())
    assert "a" in layer.toy_norm and list(layer.toy_norm) == ["a"] and len(layer.toy_norm) == 1
    layer.to(torch.float64)
    assert layer.toy_norm["a"].dtype == torch.float64
    assert set(layer.adapter_state_dict("a")) == {"toy_scale", "toy_norm"}
    layer.delete_adapter("a")
    assert "a" not in layer.toy_norm and "toy_norm.a" not in layer.state_dict()


def test_buffers_never_become_trainable():
    layer = _Layer()
    assert [tuple(p.shape) for p in layer.adapter_parameters("a")] == [(2,)]
    layer.set_adapter("a")
    assert layer.toy_scale["a"].requires_grad and not layer.toy_norm["a"].requires_grad


def test_seeded_draws_repeat_and_leave_the_global_rng_where_it_was():
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    first = seeded_randperm(50, seed=3)
    with forked_seed(9):
        inside = torch.rand(2)
    assert torch.equal(torch.rand(4), expected)
    assert torch.equal(first, seeded_randperm(50, seed=3)) and sorted(first.tolist()) == list(range(50))
    with forked_seed(9):
        assert torch.equal(torch.rand(2), inside)
