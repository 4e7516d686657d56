"""PiSSA/OLoRA → plain LoRA: an adapter for the *original* base, saved in place of the trained one.

PiSSA and OLoRA move ``s·B₀·A₀`` out of the base weight at initialisation, so the trained
adapter ``(A, B)`` only makes sense on the residual base ``W - s·B₀·A₀``. On the original base
``W`` the fine-tuned weight ``W - s·B₀·A₀ + s·B·A`` is reached by the update
``s·(B·A - B₀·A₀) = s·[B | -B₀]·[A ; A₀]``: a LoRA of rank ``2r`` whose factors are the trained
and initial ones stacked. The scaling is kept by doubling ``lora_alpha`` with the rank (``√2``
with rsLoRA) and every ``rank_pattern``/``alpha_pattern`` entry, as PEFT writes it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from peft_core.errors import ConfigError
from peft_core.fileio import atomic_write_text
from peft_core.serialization import load_peft_weights


def _initial_adapter(initial_dir: str) -> tuple[dict[str, torch.Tensor], Path]:
    where = Path(initial_dir)
    if not (where / "adapter_config.json").is_file():
        raise ConfigError(
            f"path_initial_model_for_weight_conversion={initial_dir!r} holds no adapter_config.json; pass the directory "
            "where the adapter was saved right after get_peft_model, before training."
        )
    return load_peft_weights(where), where


def _mark_initial_as_plain(where: Path) -> None:
    """Rewrite the initial adapter's config with ``init_lora_weights=True``, as PEFT does.

    Loading a config that says ``"pissa"`` runs PiSSA again on whatever base it meets; with
    ``True`` the initial adapter directory can be loaded safely next to the converted one.
    """
    path = where / "adapter_config.json"
    data = json.loads(path.read_text())
    if data.get("init_lora_weights") is not True:
        data["init_lora_weights"] = True
        atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True))


def converted_config(config: Any) -> Any:
    """The rank-``2r`` plain LoRA config equivalent to ``config`` on the original base."""
    if config.use_rslora and (config.rank_pattern or config.alpha_pattern):
        raise ConfigError("path_initial_model_for_weight_conversion cannot convert an adapter that combines use_rslora=True "
                          "with rank_pattern/alpha_pattern (as in PEFT); save it without conversion.")
    alpha = config.lora_alpha * (2 ** 0.5 if config.use_rslora else 2)
    return dataclasses.replace(
        config,
        init_lora_weights=True,
        r=config.r * 2,
        lora_alpha=alpha,
        rank_pattern={k: 2 * v for k, v in (config.rank_pattern or {}).items()},
        alpha_pattern={k: 2 * v for k, v in (config.alpha_pattern or {}).items()},
    )


def convert_to_plain_lora(
    config: Any, state_dict: dict[str, torch.Tensor], initial_dir: str
) -> tuple[dict[str, torch.Tensor], Any]:
    """``(state_dict, config)`` of the rank-``2r`` LoRA that applies the trained adapter to the original base."""
    if config.use_dora or config.lora_bias:
        raise ConfigError("path_initial_model_for_weight_conversion converts plain LoRA factors only; an adapter with "
                          "use_dora or lora_bias has no exact rank-2r form. Save it without conversion.")
    initial, where = _initial_adapter(initial_dir)
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        leaf = key.rsplit(".", 2)[-2] if key.count(".") >= 2 else ""
        if leaf not in ("lora_A", "lora_B"):
            converted[key] = tensor  # saved base tensors (modules_to_save, biases) apply to any base as they are
            continue
        start = initial.get(key)
        if start is None:
            raise ConfigError(f"the initial adapter in {initial_dir!r} has no tensor {key!r}: it is not the adapter this "
                              "model was initialised with (same targets and rank are needed).")
        start = start.to(tensor.dtype)
        converted[key] = torch.cat([tensor, start], dim=0) if leaf == "lora_A" else torch.cat([tensor, -start], dim=1)
    _mark_initial_as_plain(where)
    return converted, converted_config(config)
