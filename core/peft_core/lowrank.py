"""Low-rank and block building blocks shared by the LoRA-family method plugins (HiRA, GraLoRA, …).

Several methods store a weight update as factors — an ``up`` factor ``(out, r[, 1, …])``
and a ``down`` factor ``(r, in[, *kernel])`` — or as a grid of such pairs, and differ only
in what they do with the product. The products live here once so that each plugin says
*what* it builds (a Hadamard-modulated update, a block grid, …) and the index bookkeeping
exists in one place. Everything works in the canonical ``(out, in, *kernel)`` weight layout
of :func:`peft_core.weights.dense_weight`; storage transposes are the weight hooks' concern.
"""

from __future__ import annotations

import torch
from torch import nn

#: Modules the LoRA-family methods adapt when ``target_modules`` is not given (Hugging Face
#: PEFT gives HiRA, GraLoRA, MiSS and SHiRA a copy of LoRA's table), by ``model.config.model_type``.
LORA_FAMILY_TARGET_MODULES: dict[str, list[str]] = {
    **dict.fromkeys(
        ["llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi", "phi3", "opt",
         "gptj", "bart", "mbart", "stablelm", "starcoder2", "olmo", "olmo2", "granite", "cohere", "smollm3",
         "gpt_neo"],
        ["q_proj", "v_proj"],
    ),
    **dict.fromkeys(["t5", "mt5", "umt5"], ["q", "v"]),
    **dict.fromkeys(["bert", "roberta", "xlm-roberta", "electra", "camembert", "layoutlm"], ["query", "value"]),
    **dict.fromkeys(["gpt2", "gpt_bigcode"], ["c_attn"]),
    **dict.fromkeys(["bloom", "gpt_neox", "falcon"], ["query_key_value"]),
    "distilbert": ["q_lin", "v_lin"],
    "deberta-v2": ["query_proj", "value_proj"],
    "deberta": ["in_proj"],
}


def dropout_module(p: float) -> nn.Module:
    """``nn.Dropout(p)``, or ``nn.Identity`` when ``p`` is 0 (no mask drawn, no RNG consumed)."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


def low_rank_product(up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """``up @ down`` for linear factors and for convolution factors alike.

    ``up`` is ``(out, r)`` or ``(out, r, 1, …)`` (a 1×…×1 kernel), ``down`` is ``(r, in)`` or
    ``(r, in, *kernel)``; the result is ``(out, in[, *kernel])`` — the same contraction over
    the rank whether the layer is a matrix or a convolution.
    """
    up = up.reshape(up.shape[0], up.shape[1])
    return torch.einsum("or,ri...->oi...", up, down)


def block_grid_product(down: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """The ``(out, in)`` matrix of a k×k grid of rank-``r/k`` blocks, stored GraLoRA's way.

    ``down`` is ``(k, in/k, r)`` — one down-projection per *input* block — and ``up`` is
    ``(k, r, out/k)`` — one up-projection per *output* block. Rank slot ``j·s … (j+1)·s``
    (``s = r/k``) of input block ``n``'s projection feeds output block ``j``, where it meets
    rows ``n·s … (n+1)·s`` of block ``j``'s up-projection. So block ``(j, n)`` of the result
    is a rank-``s`` product of its own pair, and no two blocks share a parameter.
    """
    k, in_block, r = down.shape
    out_block = up.shape[2]
    s = r // k
    down_parts = down.reshape(k, in_block, k, s)  # (n, i, j, s)
    up_parts = up.reshape(k, k, s, out_block)  # (j, n, s, o)
    blocks = torch.einsum("jnso,nijs->joni", up_parts, down_parts)
    return blocks.reshape(k * out_block, k * in_block)


def block_grid_apply(x: torch.Tensor, down: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """``x @ block_grid_product(down, up).T`` without building the ``(out, in)`` matrix."""
    k, in_block, r = down.shape
    s = r // k
    lead = x.shape[:-1]
    projected = torch.einsum("...ni,nir->...nr", x.reshape(*lead, k, in_block), down)
    # regroup rank slots by the output block they feed: (..., n, j, s) -> (..., j, n·s)
    regrouped = projected.reshape(*lead, k, k, s).transpose(-3, -2).reshape(*lead, k, r)
    return torch.einsum("...jr,jro->...jo", regrouped, up).reshape(*lead, -1)


def check_positive_int(name: str, value: object) -> None:
    """Refuse anything but a positive ``int`` (``True`` included) for a rank-like field."""
    from .errors import ConfigError

    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}.")


def check_dropout(name: str, value: object) -> None:
    """Refuse a dropout probability outside ``[0, 1)``."""
    from .errors import ConfigError

    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(f"{name} must be a probability in [0, 1), got {value!r}.")


def sync_fan_in_fan_out(config: object, description: object, module_name: str) -> None:
    """Set ``config.fan_in_fan_out`` to the target's real layout, warning when it was wrong.

    Hugging Face PEFT does the same when it wraps a layer, so the ``fan_in_fan_out`` a saved
    config carries is the truth about the (GPT-2 ``Conv1D``) targets and PEFT readers agree.
    """
    import warnings

    actual = description.fan_in_fan_out  # type: ignore[attr-defined]
    if config.fan_in_fan_out != actual:  # type: ignore[attr-defined]
        layout = "Conv1D (stored (in, out))" if actual else "nn.Linear"
        warnings.warn(f"target {module_name!r} is a {layout} layer; setting fan_in_fan_out={actual}.",
                      UserWarning, stacklevel=3)
        config.fan_in_fan_out = actual  # type: ignore[attr-defined]
