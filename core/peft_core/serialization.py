"""Adapter tensors to and from the Hugging Face PEFT on-disk format.

One function, :func:`adapter_entries`, says where every tensor of an adapter lives in
the model and under which key it is stored; saving and loading both use it, so they
cannot disagree. Keys on disk are PEFT's: ``base_model.model.<module path>.<attribute>
[.<param>]`` with the adapter name removed (``...q_proj.lora_A.weight``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from .errors import LoadError
from .fileio import atomic_path
from .layer import AdapterLayer
from .plugins import hook
from .shared import TUNER_DISK_PREFIX

SAFETENSORS_WEIGHTS_NAME = "adapter_model.safetensors"
WEIGHTS_NAME = "adapter_model.bin"
DISK_PREFIX = "base_model.model."


class LoadResult(NamedTuple):
    """Keys the model expected but the checkpoint lacked, and keys nothing in the model takes."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def tuner_of(model: nn.Module) -> Any:
    """The :class:`~peft_core.tuner.AdapterModel` behind a PeftModel, a tuner, or an injected model."""
    from .tuner import AdapterModel

    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    if isinstance(model, AdapterModel):
        return model
    base = getattr(model, "base_model", None)
    if isinstance(base, AdapterModel):
        return base
    tuner = model.__dict__.get("_peft_core_tuner")
    if tuner is not None:
        return tuner
    raise LoadError(f"{type(model).__name__} holds no peft-core adapters; wrap it with get_peft_model first.")


def adapter_entries(tuner: Any, adapter_name: str, prefix: str | None = None) -> dict[str, tuple[str, torch.Tensor]]:
    """``disk key -> (key in the PeftModel state dict, live tensor)`` for one adapter.

    A tuner may store heads under its own ``disk_prefix``: prompt-learning tuners
    (:class:`peft_core.prompt.PromptLearningTuner`) leave the model unwrapped, so PEFT saves
    their ``modules_to_save`` as ``base_model.<path>``.
    """
    from .wrappers import ModulesToSaveWrapper

    prefix = prefix if prefix is not None else getattr(tuner, "disk_prefix", DISK_PREFIX)
    entries: dict[str, tuple[str, torch.Tensor]] = {}
    for path, module in tuner.adapter_modules():
        if isinstance(module, AdapterLayer):
            for local, tensor in module.adapter_state_dict(adapter_name).items():
                entries[f"{prefix}{tuner.disk_path(path)}.{local}"] = (
                    f"{DISK_PREFIX}{path}.{module.adapter_module_key(local, adapter_name)}",
                    tensor,
                )
        elif isinstance(module, ModulesToSaveWrapper) and adapter_name in module.modules_to_save:
            for local, tensor in module.modules_to_save[adapter_name].state_dict(keep_vars=True).items():
                entries[f"{prefix}{path}.{local}"] = (
                    f"{DISK_PREFIX}{path}.modules_to_save.{adapter_name}.{local}",
                    tensor,
                )
    shared = getattr(tuner, "shared_tensors", None)
    for name, tensor in (shared.saved(adapter_name) if shared is not None else {}).items():
        # tuner-level tensors (VeRA's projections): ``base_model.<name>`` on disk, as PEFT saves them
        entries[f"{TUNER_DISK_PREFIX}{name}"] = (f"{TUNER_DISK_PREFIX}shared_tensors.{name}.{adapter_name}", tensor)
    for name, param in tuner._extra_parameters(adapter_name).items():
        entries[f"{prefix}{name}"] = (f"{DISK_PREFIX}{name}", param)
    entries.update(tuner.tuner_entries(adapter_name))  # tensors a tuner subclass owns (X-LoRA's classifier)
    return entries


def get_peft_model_state_dict(
    model: nn.Module,
    state_dict: dict[str, torch.Tensor] | None = None,
    adapter_name: str = "default",
    unwrap_compiled: bool = False,
    save_embedding_layers: str | bool = "auto",
) -> dict[str, torch.Tensor]:
    """The tensors of one adapter, keyed as PEFT stores them (adapter name removed).

    ``state_dict`` lets a caller pass a full model state dict gathered elsewhere (e.g. by
    a distributed wrapper); values are then taken from it instead of the live model.
    """
    tuner = tuner_of(model)
    config = tuner._config(adapter_name)
    entries = adapter_entries(tuner, adapter_name)
    out: dict[str, torch.Tensor] = {}
    for disk_key, (model_key, tensor) in entries.items():
        if state_dict is not None:
            tensor = state_dict.get(model_key, state_dict.get(model_key.removeprefix(DISK_PREFIX), tensor))
        out[disk_key] = tensor.detach()
    materialized = getattr(tuner, "materialized_state", None)  # a prompt is saved as used, not as parameterized
    if materialized is not None:
        out.update(materialized(adapter_name))
    hook().peft_core_state_dict_pre_save(
        spec=tuner.spec_for(adapter_name), config=config, adapter_name=adapter_name, model=tuner.model, state_dict=out
    )
    return out


def set_peft_model_state_dict(
    model: nn.Module,
    peft_model_state_dict: dict[str, torch.Tensor],
    adapter_name: str = "default",
    ignore_mismatched_sizes: bool = False,
    low_cpu_mem_usage: bool = False,
    strict: bool = False,
) -> LoadResult:
    """Copy saved adapter tensors into the model's adapter ``adapter_name``.

    Every key and shape is checked before anything is copied, so a checkpoint that does
    not fit raises :class:`LoadError` and leaves the adapter as it was.
    """
    tuner = tuner_of(model)
    config = tuner._config(adapter_name)
    state = dict(peft_model_state_dict)
    hook().peft_core_state_dict_post_load(
        spec=tuner.spec_for(adapter_name), config=config, adapter_name=adapter_name, model=tuner.model, state_dict=state
    )
    entries = adapter_entries(tuner, adapter_name)
    if state and not any(k in entries for k in state):
        # tolerate state dicts keyed without the "base_model.model." prefix
        if any(DISK_PREFIX + k in entries for k in state):
            state = {DISK_PREFIX + k: v for k, v in state.items()}
    mismatched = []
    for key, value in state.items():
        if key in entries and tuple(entries[key][1].shape) != tuple(value.shape):
            mismatched.append((key, tuple(value.shape), tuple(entries[key][1].shape)))
    if mismatched and not ignore_mismatched_sizes:
        lines = "; ".join(f"{k}: checkpoint {a} vs model {b}" for k, a, b in mismatched[:5])
        more = f" (and {len(mismatched) - 5} more)" if len(mismatched) > 5 else ""
        raise LoadError(
            f"the checkpoint does not fit adapter {adapter_name!r}: {lines}{more}. Likely cause: the adapter "
            "was trained on a different base model, or its config (rank r, target modules) differs from the one used here."
        )
    skipped = {k for k, _, _ in mismatched}
    unexpected = sorted(k for k in state if k not in entries)
    missing = sorted(k for k in entries if k not in state)
    if strict and (missing or unexpected):
        raise LoadError(
            f"strict load of adapter {adapter_name!r} failed: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}."
        )
    with torch.no_grad():
        for key, value in state.items():
            if key in entries and key not in skipped:
                entries[key][1].copy_(value)
    return LoadResult(missing, unexpected)


def weights_file(directory: str | os.PathLike) -> Path:
    """The adapter weights file in ``directory``: safetensors preferred, ``.bin`` only without it."""
    path = Path(directory)
    for name in (SAFETENSORS_WEIGHTS_NAME, WEIGHTS_NAME):
        if (path / name).is_file():
            return path / name
    raise LoadError(f"no {SAFETENSORS_WEIGHTS_NAME} or {WEIGHTS_NAME} in {str(path)!r}.")


#: bytes per element of every safetensors dtype torch can hold
SAFETENSORS_DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}
#: the header size limit safetensors itself enforces (100 MB)
MAX_SAFETENSORS_HEADER = 100_000_000


def validate_safetensors_header(file: str | os.PathLike) -> dict[str, Any]:
    """Parse and check a safetensors header before any loader trusts it; return it.

    The header is untrusted input: its 8-byte length must fit in the file (nothing is read
    or allocated from that number before the check), it must be a JSON object, and every
    tensor entry must have a known dtype, a shape of non-negative integers and
    ``data_offsets`` that lie inside the data section, tile it without gaps or overlaps,
    and span exactly ``prod(shape) * itemsize`` bytes. Anything else is a :class:`LoadError`.
    """
    import json

    file = Path(file)
    size = file.stat().st_size

    def bad(why: str) -> LoadError:
        return LoadError(f"{file}: not a valid safetensors file: {why}. The file is corrupt or truncated; save it again.")

    if size < 8:
        raise bad(f"{size} bytes is too short for the 8-byte header length")
    with open(file, "rb") as fh:
        length = int.from_bytes(fh.read(8), "little")
        if length > size - 8 or length > MAX_SAFETENSORS_HEADER:
            raise bad(f"the header claims {length} bytes but the file has {size - 8} after the length field")
        raw = fh.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise bad(f"the header is not JSON ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise bad("the header is not a JSON object")
    data_len = size - 8 - length
    spans = []
    for key, info in header.items():
        if key == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                raise bad("__metadata__ must map strings to strings")
            continue
        if not isinstance(info, dict):
            raise bad(f"entry {key!r} is not an object")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in SAFETENSORS_DTYPE_SIZES:
            raise bad(f"tensor {key!r} has unknown dtype {dtype!r:.40}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise bad(f"tensor {key!r} has an invalid shape {shape!r:.80}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_len
        ):
            raise bad(f"tensor {key!r} has data_offsets {offsets!r:.80} outside the {data_len}-byte data section")
        numel = 1
        for d in shape:
            numel *= d
        if numel * SAFETENSORS_DTYPE_SIZES[dtype] != offsets[1] - offsets[0]:
            raise bad(f"tensor {key!r}: shape {shape} of {dtype} does not match its {offsets[1] - offsets[0]}-byte span")
        spans.append((offsets[0], offsets[1], key))
    end = 0
    for start, stop, key in sorted(spans):
        if start != end:
            raise bad(f"tensor {key!r} starts at byte {start}, expected {end} (overlap or gap)")
        end = stop
    if end != data_len:
        raise bad(f"the tensors cover {end} bytes of a {data_len}-byte data section")
    return header


def load_peft_weights(model_id: str | os.PathLike, device: str | torch.device | None = None) -> dict[str, torch.Tensor]:
    """Read an adapter's tensors from a local directory; never executes pickled code."""
    file = weights_file(model_id)
    device = str(device) if device is not None else "cpu"
    if file.suffix == ".safetensors":
        validate_safetensors_header(file)
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(file), device=device)
        state = torch.load(str(file), map_location=device, weights_only=True)
    except Exception as exc:
        raise LoadError(f"{file}: cannot read adapter weights ({type(exc).__name__}: {exc}).") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LoadError(f"{file}: expected a flat dict of tensors.")
    return state


def save_weights(
    state: dict[str, torch.Tensor], directory: str | os.PathLike, safe_serialization: bool = True, durable: bool = False
) -> Path:
    """Write tensors atomically as ``adapter_model.safetensors`` (or ``.bin``); fsynced too if ``durable``."""
    directory = Path(directory)
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, value in state.items():
        value = value.detach().contiguous()
        ptr = value.untyped_storage().data_ptr()
        if ptr in seen or value.untyped_storage().nbytes() != value.numel() * value.element_size():
            value = value.clone()  # safetensors refuses tensors that share memory (tied weights, views)
        seen.add(value.untyped_storage().data_ptr())
        tensors[key] = value
    target = directory / (SAFETENSORS_WEIGHTS_NAME if safe_serialization else WEIGHTS_NAME)
    with atomic_path(target, durable) as tmp:
        if safe_serialization:
            from safetensors.torch import save_file

            save_file(tensors, str(tmp), metadata={"format": "pt"})
        else:
            torch.save(tensors, str(tmp))
    return target

