"""Helpers for parity tests against Hugging Face PEFT: the same files, the same numbers, both ways.

Every method plugin compares itself with ``peft`` the same way — build an adapter with
non-identity tensors in one library, save it, load it in the other, compare outputs,
files and merged weights — so the small pieces live here instead of in each plugin's
tests. Nothing here imports ``peft``; the tests do.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: config fields PEFT writes as (unordered) lists: compared sorted
LIST_FIELDS = ("target_modules", "exclude_modules", "modules_to_save", "feedforward_modules")


def model_output(model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The model's output tensor (``.logits`` of transformers outputs), without gradients."""
    with torch.no_grad():
        out = model(**inputs)
    return out if isinstance(out, torch.Tensor) else out.logits


def perturb_trainable(model: nn.Module, seed: int, scale: float = 0.1, only: str | None = None) -> None:
    """Add seeded noise to every trainable parameter (or those whose name contains ``only``).

    Fresh adapters are usually the identity, which would make any comparison vacuous.
    Parameters are visited in sorted name order, so both libraries draw the same noise for
    the same names.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if param.requires_grad if only is None else only in name:
                param.add_((torch.randn(param.shape, generator=gen) * scale).to(param.dtype))


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference of two same-shaped tensors."""
    if a.shape != b.shape:
        raise AssertionError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return (a.detach().float() - b.detach().float()).abs().max().item()


def saved_shapes(directory: str | Path) -> dict[str, tuple[int, ...]]:
    """Key → shape of the ``adapter_model.safetensors`` in ``directory``."""
    from safetensors.torch import load_file

    return {k: tuple(v.shape) for k, v in load_file(str(Path(directory) / "adapter_model.safetensors")).items()}


def config_json(directory: str | Path, list_fields: Iterable[str] = LIST_FIELDS) -> dict[str, Any]:
    """``adapter_config.json`` of ``directory`` with set-valued fields sorted, ready to compare."""
    data = json.loads((Path(directory) / "adapter_config.json").read_text())
    for key in list_fields:
        if isinstance(data.get(key), list):
            data[key] = sorted(data[key])
    return data


def round_trip_both_ways(
    peft: Any,
    build: Any,
    inputs: Mapping[str, torch.Tensor],
    ours_config: Any,
    theirs_config: Any,
    directory: str | Path,
    seed: int = 11,
    scale: float = 0.2,
    theirs_seed: int | None = None,
) -> dict[str, float]:
    """Save a perturbed adapter in each library, load it in the other, compare everything.

    ``peft`` is the imported Hugging Face package, ``build()`` a fresh base model; our adapter
    is perturbed with ``seed``, PEFT's with ``theirs_seed`` (default ``seed + 1``). Returns the
    largest absolute differences: ``ours_to_peft`` / ``peft_to_ours`` (outputs after loading
    in the other library), ``merged_weights`` and ``merged_output`` (``merge_and_unload`` of
    the same PEFT-written adapter in both libraries), and ``moved`` (how far the adapter moves
    the output from the base model's: a comparison is only meaningful when this is not ~0).
    Files are checked to hold the same keys and shapes, and ``merge_and_unload`` to leave no
    adapter layer behind.
    """
    from peft_core import PeftModel, get_peft_model
    from peft_core.layer import AdapterLayer

    directory = Path(directory)
    base_out = model_output(build(), inputs)
    ours = get_peft_model(build(), ours_config)
    perturb_trainable(ours, seed, scale)
    ours.eval()
    ours_out = model_output(ours, inputs)
    ours.save_pretrained(directory / "ours")
    theirs_from_ours = peft.PeftModel.from_pretrained(build(), directory / "ours")

    theirs = peft.get_peft_model(build(), theirs_config)
    perturb_trainable(theirs, seed + 1 if theirs_seed is None else theirs_seed, scale)
    theirs.eval()
    theirs_out = model_output(theirs, inputs)
    theirs.save_pretrained(directory / "theirs")
    ours_from_theirs = PeftModel.from_pretrained(build(), directory / "theirs")
    if saved_shapes(directory / "ours") != saved_shapes(directory / "theirs"):
        raise AssertionError(f"saved keys/shapes differ: {saved_shapes(directory / 'ours')} vs "
                             f"{saved_shapes(directory / 'theirs')}")
    diffs = {
        "moved": max_diff(ours_out, base_out),
        "ours_to_peft": max_diff(model_output(theirs_from_ours, inputs), ours_out),
        "peft_to_ours": max_diff(model_output(ours_from_theirs, inputs), theirs_out),
    }
    ours_merged, theirs_merged = ours_from_theirs.merge_and_unload(), theirs.merge_and_unload()
    if any(isinstance(m, AdapterLayer) for m in ours_merged.modules()):
        raise AssertionError("merge_and_unload() left adapter layers in the model")
    ours_state, theirs_state = ours_merged.state_dict(), theirs_merged.state_dict()
    if set(ours_state) != set(theirs_state):
        raise AssertionError(f"merged models differ in keys: {sorted(set(ours_state) ^ set(theirs_state))[:5]}")
    diffs["merged_weights"] = max(max_diff(ours_state[k], theirs_state[k]) for k in theirs_state)
    diffs["merged_output"] = max_diff(model_output(ours_merged, inputs), theirs_out)
    return diffs


def checked_round_trip_both_ways(
    peft: Any, build: Any, inputs: Mapping[str, torch.Tensor], ours_config: Any, theirs_config: Any,
    directory: str | Path, atol: float = 1e-5,
) -> dict[str, float]:
    """``round_trip_both_ways``, then fail unless the adapter matters and both libraries agree.

    The adapter must move the output (``moved`` > 1e-3, else nothing was compared); outputs
    after loading in the other library and the merged weights and outputs must agree within
    ``atol``; both libraries must write the same ``adapter_config.json``, which PEFT reads back
    as ``theirs_config``'s class. Returns the diffs (tests print or report them).
    """
    directory = Path(directory)
    diffs = round_trip_both_ways(peft, build, inputs, ours_config, theirs_config, directory)
    if not diffs["moved"] > 1e-3:
        raise AssertionError(f"the adapter must change the output for the comparison to mean anything: {diffs}")
    for key in ("ours_to_peft", "peft_to_ours", "merged_weights", "merged_output"):
        if not diffs[key] <= atol:
            raise AssertionError(f"{key} differs by more than {atol}: {diffs}")
    if config_json(directory / "ours") != config_json(directory / "theirs"):
        raise AssertionError(f"adapter_config.json differs: {config_json(directory / 'ours')} vs "
                             f"{config_json(directory / 'theirs')}")
    read_back = type(peft.PeftConfig.from_pretrained(str(directory / "ours")))
    if read_back is not type(theirs_config):
        raise AssertionError(f"PEFT reads our config as {read_back.__name__}, not {type(theirs_config).__name__}")
    return diffs


def check_seeded_init_matches(peft: Any, build: Any, ours_config: Any, theirs_config: Any, marker: str,
                              seed: int = 5) -> tuple[Any, Any]:
    """Fail unless a fresh adapter drawn from ``seed`` is the same in both libraries.

    Compares every state-dict entry (parameters and buffers) whose name holds ``marker``
    bit for bit: equal values mean the factors are drawn in PEFT's order and way, so a
    seeded run starts from the same point in either library. ``build()`` must seed torch
    itself (the conformance models do). Returns ``(ours, theirs)`` for further checks.
    """
    from peft_core import get_peft_model

    ours_base, theirs_base = build(), build()
    torch.manual_seed(seed)
    ours = get_peft_model(ours_base, ours_config)
    torch.manual_seed(seed)
    theirs = peft.get_peft_model(theirs_base, theirs_config)
    ours_state = {n: t for n, t in ours.state_dict().items() if marker in n}
    theirs_state = {n: t for n, t in theirs.state_dict().items() if marker in n}
    if not theirs_state:
        raise AssertionError(f"PEFT's adapter has no entry named *{marker}*: nothing would be compared")
    if set(ours_state) != set(theirs_state):
        raise AssertionError(f"entries named *{marker}* differ: {sorted(set(ours_state) ^ set(theirs_state))[:5]}")
    unequal = [name for name, value in theirs_state.items() if not torch.equal(ours_state[name], value)]
    if unequal:
        raise AssertionError(f"seeded init differs from PEFT's in {unequal[:5]}")
    return ours, theirs


def token_inputs() -> dict[str, torch.Tensor]:
    """Model inputs for the tiny language models: ``input_ids`` of ``token_batch()``."""
    from .models import token_batch

    return {"input_ids": token_batch()}


def image_inputs() -> dict[str, torch.Tensor]:
    """Seeded model inputs for ``models.convnet``: a 2×3×8×8 image batch and its labels."""
    gen = torch.Generator().manual_seed(0)
    return {"pixel_values": torch.randn(2, 3, 8, 8, generator=gen), "labels": torch.tensor([1, 7])}


def load_quantized(directory: str | Path, bits: int) -> nn.Module:
    """The causal LM saved in ``directory``, loaded with bitsandbytes ``bits``-bit (4: NF4, or 8) weights."""
    import warnings

    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4") if bits == 4 \
        else BitsAndBytesConfig(load_in_8bit=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoModelForCausalLM.from_pretrained(directory, quantization_config=quant).eval()


def quantized_round_trip(
    peft: Any, directory: str | Path, bits: int, config: Any, inputs: Mapping[str, torch.Tensor],
    save_to: str | Path, seed: int = 1, scale: float = 0.5,
) -> dict[str, float]:
    """One perturbed adapter on a ``bits``-bit model: how it moves the output, PEFT's reading of it, merging.

    Returns ``effect`` (adapter vs base output), ``vs_peft`` (PEFT loading the saved adapter on
    the same quantized model), ``merge`` and ``unmerge`` (how far merging into the requantized
    weights, and unmerging again, move the output: rounding, to compare with ``effect``).
    """
    from peft_core import get_peft_model

    base_out = model_output(load_quantized(directory, bits), inputs)
    ours = get_peft_model(load_quantized(directory, bits), config)
    if not any(getattr(getattr(m, "description", None), "quantized", False) for m in ours.modules()):
        raise AssertionError("no adapted layer is quantized: the test would not test quantization")
    perturb_trainable(ours, seed, scale)
    ours.eval()
    out = model_output(ours, inputs)
    ours.save_pretrained(save_to)
    theirs = peft.PeftModel.from_pretrained(load_quantized(directory, bits), save_to)
    diffs = {"effect": max_diff(out, base_out), "vs_peft": max_diff(model_output(theirs, inputs), out)}
    ours.merge_adapter()
    merged = model_output(ours, inputs)
    if not torch.isfinite(merged).all():
        raise AssertionError("merging into the quantized weights gave NaN/inf outputs")
    diffs["merge"] = max_diff(merged, out)
    ours.unmerge_adapter()
    diffs["unmerge"] = max_diff(model_output(ours, inputs), out)
    return diffs


def checked_quantized_round_trip(
    peft: Any, directory: str | Path, bits: int, config: Any, inputs: Mapping[str, torch.Tensor],
    save_to: str | Path, *, merge_rounding: Mapping[int, float], vs_peft_tolerance: Mapping[int, float],
) -> dict[str, float]:
    """``quantized_round_trip``, then fail unless the adapter matters and everything else is rounding.

    The adapter must move the output (``effect`` > 1e-2, else nothing was compared); PEFT's reading
    may differ by ``vs_peft_tolerance[bits]`` of that effect (plus 1e-5 of float noise); merging may
    move the output by ``merge_rounding[bits]`` of it, unmerging (a second requantization) by twice
    that. Tolerances stay in each test, since they are the method's claims. Returns the diffs.
    """
    diffs = quantized_round_trip(peft, directory, bits, config, inputs, save_to)
    effect = diffs["effect"]
    if not effect > 1e-2:
        raise AssertionError(f"the adapter barely moves the output, nothing was compared: {diffs}")
    if not diffs["vs_peft"] <= vs_peft_tolerance[bits] * effect + 1e-5:
        raise AssertionError(f"PEFT's output for the saved adapter differs beyond the tolerance: {diffs}")
    if not diffs["merge"] < merge_rounding[bits] * effect:
        raise AssertionError(f"merging moves the output beyond requantization rounding: {diffs}")
    if not diffs["unmerge"] < 2 * merge_rounding[bits] * effect:
        raise AssertionError(f"unmerging moves the output beyond requantization rounding: {diffs}")
    return diffs
