"""The suite on quantized tiny models: which methods get the kinds, and that a broken quantized merge is caught."""

from __future__ import annotations

import pytest
import torch

from peft_core.conformance.cases import cases_for
from peft_core.conformance.checks import CHECKS
from peft_core.conformance.runner import _run_on
from peft_core.conformance.strategies import all_model_kinds
from peft_core.plugins import registry
from peft_core.registry import Capability

QUANTIZED = ("tiny_llama_nf4", "tiny_llama_int8")


def test_backend_contributes_quantized_kinds_derived_from_tiny_llama():
    kinds = all_model_kinds()
    for name in QUANTIZED:
        kind = kinds[name]
        assert kind.derived_from == "tiny_llama" and kind.requires is Capability.QUANTIZED_BASE and kind.lossy_merge
        model = kind.build()
        assert any(type(m).__name__ in ("Linear4bit", "Linear8bitLt") for m in model.modules())


def test_every_method_declaring_quantized_base_is_tested_on_the_quantized_kinds():
    for spec in registry():
        try:
            kinds = cases_for(spec.name).model_kinds
        except Exception:
            continue  # a method without cases fails its own conformance test, not this one
        floats = set(kinds) - set(QUANTIZED)
        if spec.supports(Capability.QUANTIZED_BASE) and "tiny_llama" in floats:
            assert set(QUANTIZED) <= set(kinds), spec.name
        else:
            assert not set(QUANTIZED) & set(kinds), spec.name


def test_a_merge_that_ignores_the_dequantized_weight_is_caught(monkeypatch):
    lora = pytest.importorskip("peft_core_lora.layer")
    spec = registry().get("LORA")
    check = CHECKS["check_merge_unmerge_roundtrip"]
    # a merge that writes the (rounded) weight as if the adapter were merged twice
    broken = lambda self, weight, name: weight + 2 * self.get_delta_weight(name).to(weight.dtype)  # noqa: E731
    monkeypatch.setattr(lora.LoraLayer, "merged_weight", broken)
    for kind in QUANTIZED:
        with pytest.raises(AssertionError, match="quantized base"):
            _run_on(kind, spec, cases_for("LORA"), check, check.name, 2)


def test_quantized_merge_within_rounding_passes_for_lora():
    spec = registry().get("LORA")
    check = CHECKS["check_merge_unmerge_roundtrip"]
    torch.manual_seed(0)
    for kind in QUANTIZED:
        _run_on(kind, spec, cases_for("LORA"), check, check.name, 2)
