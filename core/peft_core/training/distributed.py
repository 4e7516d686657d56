"""Running the same training script on several processes: DDP and FSDP2, as launched by ``torchrun``.

``torchrun`` (or ``accelerate launch``) starts one process per device and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed`
reads them, so one code path serves one process and many. On CPU the ``gloo`` backend is
used, which is how the tests run two processes on one machine.

Only adapter parameters train, so:

* **DDP** all-reduces just the adapter gradients (frozen parameters are not registered
  for synchronisation) — every rank ends each step with identical gradients and weights;
* **FSDP2** (``torch.distributed.fsdp.fully_shard``) shards base and adapter parameters
  alike; to save, only the adapter tensors are gathered (``DTensor.full_tensor``), never
  the frozen base, and only the main process writes.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

STRATEGIES = ("ddp", "fsdp")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank, how many there are, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main_process(self) -> bool:
        """Only the main process writes files and prints progress, so a run's outputs exist once."""
        return self.rank == 0


def init_distributed(device: str | None = None, timeout_s: float = 120.0) -> DistContext:
    """Join the process group ``torchrun`` set up (gloo on CPU, NCCL on CUDA); single-process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device(device or "cpu")
    if world <= 1:
        return DistContext(device=dev)
    import torch.distributed as dist

    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s))
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=dev)


def shutdown(ctx: DistContext) -> None:
    if ctx.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        import torch.distributed as dist

        dist.barrier()


def mean_across_ranks(value: float, ctx: DistContext) -> float:
    """The mean of a per-rank number (a loss) over all ranks; the value itself on one process."""
    if not ctx.distributed:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return t.item() / ctx.world_size


def _repeated_blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks to shard one by one (transformers' per-layer classes), outermost first."""
    no_split = set(getattr(model, "_no_split_modules", None) or ())
    blocks = []
    for module in model.modules():
        if type(module).__name__ in no_split or type(module).__name__ == "GradientCheckpointingLayer" or any(
            c.__name__ == "GradientCheckpointingLayer" for c in type(module).__mro__[1:]
        ):
            blocks.append(module)
    # nested matches would be sharded twice; keep the outermost
    inner = {id(sub) for b in blocks for sub in b.modules() if sub is not b}
    return [b for b in blocks if id(b) not in inner]


def wrap_model(model: nn.Module, ctx: DistContext, strategy: str = "ddp") -> nn.Module:
    """Wrap a PeftModel for multi-process training; returns it unchanged on one process.

    ``ddp``: ``DistributedDataParallel`` (rank 0's weights are broadcast, so randomly
    initialised adapter factors start identical everywhere). ``fsdp``: FSDP2 — every
    transformer block is sharded on its own, then the whole model; the model is changed
    in place (its parameters become ``DTensor`` shards) and returned.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown distributed strategy {strategy!r}; use one of {STRATEGIES}.")
    if not ctx.distributed:
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)
    from torch.distributed.fsdp import fully_shard

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for block in _repeated_blocks(base):
        fully_shard(block)
    fully_shard(model)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The PeftModel inside a DDP wrapper (FSDP2 keeps the module itself)."""
    return getattr(model, "module", model)


def gathered_adapter_state(peft_model: nn.Module, adapter_name: str = "default") -> dict[str, torch.Tensor]:
    """``{PeftModel state-dict key: full tensor}`` of one adapter, gathering FSDP2 shards.

    A collective under FSDP2: every rank must call it, in the same order. The keys are
    the ones ``save_pretrained(state_dict=...)`` takes, so saving goes through the public API.
    """
    from ..serialization import adapter_entries, tuner_of

    out: dict[str, torch.Tensor] = {}
    for model_key, tensor in adapter_entries(tuner_of(peft_model), adapter_name).values():
        full = tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
        out[model_key] = full.detach().cpu()
    return out


def save_adapter(model: nn.Module, save_directory: str | os.PathLike, ctx: DistContext, **kwargs: Any) -> None:
    """Save the adapters of a (possibly wrapped) PeftModel once, from the main process.

    Every rank must call this: under FSDP2 the shards are gathered collectively first. The
    other ranks wait at a barrier so nobody reads the directory before it is complete.
    """
    peft_model = unwrap(model)
    state: dict[str, torch.Tensor] = {}
    for name in peft_model.peft_config:
        state.update(gathered_adapter_state(peft_model, name))
    peft_model.save_pretrained(save_directory, state_dict=state, is_main_process=ctx.is_main_process, **kwargs)
    barrier(ctx)
