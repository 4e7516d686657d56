"""Frozen per-adapter tensors that are saved with the adapter, and seeded draws that leave the global RNG alone.

Some methods keep tensors that are part of an adapter but are never trained: DeLoRA's
column norms of the base weight, AdaMSS's projection onto the base weight's singular
vectors. Hugging Face PEFT stores them in the adapter file, so they must be in the
layer's ``state_dict`` and move with ``.to()`` — buffers — while staying out of the
optimizer and out of ``requires_grad`` toggling. :class:`BufferDict` is that container;
list it in ``AdapterLayer.adapter_layer_names`` like a ``ParameterDict``.

Methods that derive structure from a seed (FourierFT's frequency positions, AdaMSS's
randomized SVD) must get the same result every time without moving the caller's random
stream: :func:`seeded_randperm` and :func:`forked_seed` do that.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class BufferDict(nn.Module):
    """A name → tensor mapping whose entries are persistent buffers of this module."""

    def __init__(self) -> None:
        super().__init__()

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._buffers:
            raise KeyError(key)
        return self._buffers[key]

    def __setitem__(self, key: str, value: torch.Tensor) -> None:
        self.register_buffer(key, value.detach(), persistent=True)

    def __delitem__(self, key: str) -> None:
        del self._buffers[key]

    def __contains__(self, key: object) -> bool:
        return key in self._buffers

    def __len__(self) -> int:
        return len(self._buffers)

    def __iter__(self) -> Iterator[str]:
        return iter(self._buffers)

    def keys(self) -> list[str]:
        return list(self._buffers)


def seeded_randperm(n: int, seed: int) -> torch.Tensor:
    """``torch.randperm(n)`` from a private CPU generator seeded with ``seed``: the global RNG does not move."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


@contextlib.contextmanager
def forked_seed(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the body with the global RNG (CPU, and ``device`` if an accelerator) seeded to ``seed``, then restore it.

    For library calls that draw from the global RNG and take no generator (``torch.svd_lowrank``).
    """
    device = torch.device(device)
    kwargs = {"devices": []} if device.type == "cpu" else {"devices": [device], "device_type": device.type}
    with torch.random.fork_rng(**kwargs):
        torch.manual_seed(seed)
        yield
