"""The mixed-pair check: a method that declares ``MIXED_METHODS`` shares a model with LoRA.

LoRA is the partner every method is paired with (the issue of mixing is the *other*
method's layer meeting a foreign one, and LoRA is the method every install has). The pair
targets the same modules, so the two layers stack; both orders of adding them are tried,
since the later method's layer wraps the earlier one's. For LoRA itself the check does not
apply: every other mixable method's pair check exercises it.

What is checked, each against an independent reference: both adapters together change the
output beyond either alone; ``disable_adapter`` gives the base output; merging (when both
merge) gives the unmerged output and ``merge_and_unload`` leaves a plain model; saving each
adapter and loading them into a fresh :class:`~peft_core.mixed.PeftMixedModel` gives identical
outputs; training reaches both adapters and no base weight; deleting one adapter leaves a
model that computes what the other alone computes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from ..layer import AdapterLayer, base_of
from ..mixed import PeftMixedModel
from ..plugins import registry
from ..registry import Capability
from ..weights import LINEAR, describe_layer
from . import lossy
from .cases import Case, adapter_layers
from .checks import _assert_same_output, _tol, check
from .probes import adapter_modules_in, assert_close, assert_differs, base_parameters, own_tensors

PARTNER = "LORA"


def _partner_config(case: Case, targets: list[str]):
    """A LoRA config on the modules the method adapted (non-identity: B is not zero)."""
    if PARTNER not in registry():
        raise AssertionError("the mixed-pair check pairs a method with LoRA; install it: pip install peft-core-lora")
    lora = registry().get(PARTNER).config_class
    return lora(r=2, lora_alpha=4, target_modules=targets, init_lora_weights=False)


def _shared_targets(model: torch.nn.Module) -> list[str]:
    """Modules the method adapted that LoRA can adapt too (linear, conv, embedding)."""
    kinds = getattr(registry().get(PARTNER).config_class, "supported_layer_kinds", (LINEAR,))
    found = []
    for path, layer in adapter_layers(model):
        desc = describe_layer(base_of(layer))
        if desc is not None and desc.kind in kinds:
            found.append(path)
    return sorted(found)


def _add_partner(case: Case, model, name: str, targets: list[str]) -> None:
    torch.manual_seed(case.adapter_seed(name))
    model.add_adapter(name, _partner_config(case, targets))
    gen = torch.Generator().manual_seed(case.adapter_seed(name) + 1)
    with torch.no_grad():
        for _, layer in sorted(adapter_layers(model), key=lambda item: item[0]):
            if layer.method == PARTNER and layer.has_adapter(name):
                for param in layer.adapter_parameters(name):
                    param.add_(torch.randn(param.shape, generator=gen).to(param.dtype) * 0.1)


def _mixed(case: Case, method_first: bool, targets: list[str]) -> PeftMixedModel:
    """The method's adapter ``names[0]`` and a LoRA adapter ``names[1]`` on the same modules, both active."""
    a, b = case.names
    base = case.base()
    if method_first:
        torch.manual_seed(case.adapter_seed(a))
        model = PeftMixedModel(base, case.new_config(), a)
        case.perturb(model, a, case.adapter_seed(a) + 1)
        _add_partner(case, model, b, targets)
    else:
        torch.manual_seed(case.adapter_seed(b))
        model = PeftMixedModel(base, _partner_config(case, targets), b)
        _perturb_partner_only(case, model, b)
        torch.manual_seed(case.adapter_seed(a))
        model.add_adapter(a, case.new_config())
        case.perturb(model, a, case.adapter_seed(a) + 1)
    model.set_adapter([a, b])
    model.eval()
    return model


def _perturb_partner_only(case: Case, model, name: str) -> None:
    gen = torch.Generator().manual_seed(case.adapter_seed(name) + 1)
    with torch.no_grad():
        for _, layer in sorted(adapter_layers(model), key=lambda item: item[0]):
            if layer.has_adapter(name):
                for param in layer.adapter_parameters(name):
                    param.add_(torch.randn(param.shape, generator=gen).to(param.dtype) * 0.1)


def _save_and_reload(case: Case, model: PeftMixedModel) -> PeftMixedModel:
    """Save every adapter, then rebuild the mix on a pristine base in the order they were added."""
    names = list(model.peft_config)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        where = {n: Path(tmp) if n == "default" else Path(tmp) / n for n in names}
        loaded = PeftMixedModel.from_pretrained(case.base(), where[names[0]], adapter_name=names[0])
        for name in names[1:]:
            loaded.load_adapter(where[name], adapter_name=name)
    loaded.set_adapter(model.active_adapters)
    loaded.eval()
    return loaded


@check(Capability.MIXED_METHODS)
def check_mixes_with_lora(case: Case) -> None:
    """With a LoRA adapter on the same modules (either order): combined effect, disable, merge, save/load, train, delete."""
    if case.spec.name == PARTNER:
        return  # the partner itself: covered by every other method's pair check
    probe = case.peft()
    targets = _shared_targets(probe) if PARTNER in registry() else []
    if not targets:
        raise AssertionError(f"{case.spec.name} declares mixed_methods but adapted no layer LoRA could share")
    a, b = case.names
    base_out = case.run(case.base())
    atol, rtol = _tol(case)
    for method_first in (True, False):
        order = f"{case.spec.name} added {'before' if method_first else 'after'} LoRA"
        model = _mixed(case, method_first, targets)
        both = case.run(model)
        if not any(isinstance(layer.base_layer, AdapterLayer) for _, layer in adapter_layers(model)):
            raise AssertionError(f"{order}: no layer is stacked; the two methods did not share a module")
        model.set_adapter(a)
        only_a = case.run(model)
        model.set_adapter(b)
        only_b = case.run(model)
        model.set_adapter([a, b])
        assert_differs(both, only_a, f"{order}: activating the LoRA adapter too did not change the output")
        assert_differs(both, only_b, f"{order}: activating the {case.spec.name} adapter too did not change the output")
        with model.disable_adapter():
            _assert_same_output(case.run(model), base_out, f"{order}: disable_adapter() is not the base output")
        _assert_same_output(case.run(model), both, f"{order}: after disable_adapter() the output did not come back")

        reloaded = _save_and_reload(case, model)
        _assert_same_output(case.run(reloaded), both, f"{order}: saved and reloaded mixed model gives another output")

        if case.spec.supports(Capability.MERGE) and lossy.is_lossy(case):
            expected = lossy.snapshot(model)
            model.merge_adapter()
            lossy.assert_merged(model, expected, f"{order}: merging both adapters on a quantized base")
            model.unmerge_adapter()
        elif case.spec.supports(Capability.MERGE):
            model.merge_adapter()
            assert_close(case.run(model), both, f"{order}: merging both adapters changed the output", atol, rtol)
            model.unmerge_adapter()
            assert_close(case.run(model), both, f"{order}: unmerging both adapters changed the output", atol, rtol)
            plain = _save_and_reload(case, model).merge_and_unload()
            if adapter_modules_in(plain):
                raise AssertionError(f"{order}: merge_and_unload left adapter modules: {adapter_modules_in(plain)[:3]}")
            assert_close(case.run(plain), both, f"{order}: merge_and_unload changed the output", atol, rtol)

        model.train()
        before = base_parameters(model)
        snapshot = {n: [t.detach().clone() for t in own_tensors(model, n)] for n in (a, b)}
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        case.output_with_grad(model).float().pow(2).mean().backward()
        opt.step()
        model.eval()
        for name in (a, b):
            if all(torch.equal(x, y) for x, y in zip(snapshot[name], own_tensors(model, name))):
                raise AssertionError(f"{order}: a training step on the mixed model did not reach adapter {name!r}")
        after = base_parameters(model)
        changed = [k for k in before if not torch.equal(before[k], after[k])]
        if changed:
            raise AssertionError(f"{order}: training the mixed model changed base weights {changed[:3]}")

        model.set_adapter(a)
        alone_a = case.run(model)
        model.delete_adapter(b)
        _assert_same_output(case.run(model), alone_a, f"{order}: deleting the LoRA adapter changed the other's output")
        if any(layer.method == PARTNER for _, layer in adapter_layers(model)):
            raise AssertionError(f"{order}: LoRA layers remain after deleting the only LoRA adapter")
