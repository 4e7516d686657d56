"""The conformance checks: small named functions, each taking one drawn :class:`~.cases.Case`.

A check raises ``AssertionError`` (or any exception) when the method misbehaves and returns
otherwise; the runners call it on many Hypothesis-generated cases. ``@check(*capabilities)``
registers it in :data:`CHECKS` with the capabilities it needs: a method that does not
declare them gets "not applicable" for that check, and :func:`check_undeclared_capabilities_raise`
proves the undeclared operations fail cleanly instead.

Every comparison is against something computed independently of the code under test — a
pristine copy of the base model, a model holding only one adapter — so that a bug cannot
hide by being consistent with itself.
"""

from __future__ import annotations

import gc
import json
import math
import tempfile
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from hypothesis import assume

from ..errors import MergeError, PeftCoreError, UnsupportedOperation
from ..layer import AdapterLayer
from ..model import PeftModel
from ..names import BASE_ADAPTER_NAME
from ..registry import Capability, MethodSpec
from ..serialization import (DISK_PREFIX, get_peft_model_state_dict, load_peft_weights, set_peft_model_state_dict,
                             tuner_of)
from . import lossy
from .cases import Case, adapter_layers
from .probes import (
    adapter_modules_in,
    assert_close,
    assert_differs,
    assert_equal,
    assert_same_tensors,
    base_parameters,
    own_tensors,
    prompt_tensors,
    saved_tensors,
    train_steps,
)

C = Capability


@dataclass(frozen=True)
class Check:
    """A registered check and the capabilities it needs."""

    name: str
    func: Callable[[Case], None]
    requires: frozenset[Capability]

    def applies_to(self, spec: MethodSpec) -> bool:
        if self.name == "check_undeclared_capabilities_raise":
            return any(not spec.supports(cap) for cap in _UNDECLARED_OPERATIONS)
        return all(spec.supports(cap) for cap in self.requires)

    def __call__(self, case: Case) -> None:
        self.func(case)


#: every check, by name, in the order they are reported
CHECKS: dict[str, Check] = {}


def check(*requires: Capability) -> Callable[[Callable[[Case], None]], Callable[[Case], None]]:
    def register(func: Callable[[Case], None]) -> Callable[[Case], None]:
        CHECKS[func.__name__] = Check(func.__name__, func, frozenset(requires))
        return func

    return register


def _tol(case: Case) -> tuple[float, float]:
    return case.cases.atol, case.cases.rtol


def _expect_error(kind: type[BaseException], what: str, func: Callable[[], object]) -> BaseException:
    try:
        func()
    except kind as exc:
        return exc
    except Exception as exc:
        raise AssertionError(f"{what}: raised {type(exc).__name__}({exc}) instead of {kind.__name__}") from exc
    raise AssertionError(f"{what}: no {kind.__name__} was raised")


def _assert_same_output(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """Equal up to a few float32 ulps: the same computation, not an approximation of it.

    Not bit-equality because PyTorch's CPU kernels differ in the last bit depending on
    whether weights require gradients, which a model under test may legitimately change.
    """
    assert_close(actual, expected, what, 1e-6, 1e-6)


def _merged_layers(model: torch.nn.Module) -> list[str]:
    return [n for n, layer in adapter_layers(model) if layer.merged]


# -- identity, disabling --------------------------------------------------------------------


@check(C.IDENTITY_AT_INIT)
def check_identity_at_init(case: Case) -> None:
    """A freshly added adapter leaves the model's output unchanged (for configs that promise it)."""
    assume(case.cases.identity_at_init(case.config))
    expected = case.run(case.base())
    atol, rtol = _tol(case)
    assert_close(case.run(case.peft(perturb=False)), expected, "a freshly initialised adapter changed the output", atol, rtol)


@check(C.DISABLE)
def check_disable_adapter_gives_base_output(case: Case) -> None:
    """Inside ``disable_adapter()`` the output is exactly the base model's; after it, the adapter is back."""
    base_out = case.run(case.base())
    model = case.peft()
    adapted = case.run(model)
    assert_differs(adapted, base_out, "the (perturbed) adapter does not change the output; nothing to disable")
    with model.disable_adapter():
        _assert_same_output(case.run(model), base_out, "inside disable_adapter() the output is not the base output")
    _assert_same_output(case.run(model), adapted, "after disable_adapter() the adapter output did not come back")
    if case.spec.supports(C.MERGE) and not lossy.is_lossy(case):  # (a quantized merge's rounding: check_merge_*)
        atol, rtol = _tol(case)
        model.merge_adapter()
        with model.disable_adapter():
            assert_close(case.run(model), base_out, "disable_adapter() on a merged adapter is not the base output",
                         atol, rtol)
        assert_close(case.run(model), adapted, "after disable_adapter() on a merged adapter the output changed",
                     atol, rtol)


# -- merging, unloading ---------------------------------------------------------------------


@check(C.MERGE)
def check_merge_unmerge_roundtrip(case: Case) -> None:
    """Merging gives the unmerged forward's output; unmerging restores the base weights."""
    atol, rtol = _tol(case)
    model = case.peft()
    if lossy.is_lossy(case):
        original, expected = lossy.base_weights(model), lossy.snapshot(model)
        model.merge_adapter()
        bounds = lossy.assert_merged(model, expected, "merge_adapter() on a quantized base")
        model.unmerge_adapter()
        lossy.assert_restored(model, original, bounds, "unmerge_adapter() on a quantized base")
        return
    before = base_parameters(model)
    adapted = case.run(model)
    model.merge_adapter()
    if not _merged_layers(model):
        raise AssertionError("merge_adapter() marked no layer as merged")
    assert_close(case.run(model), adapted, "the merged model's output differs from the unmerged forward", atol, rtol)
    model.unmerge_adapter()
    if _merged_layers(model):
        raise AssertionError(f"layers still marked merged after unmerge_adapter(): {_merged_layers(model)[:3]}")
    assert_same_tensors(base_parameters(model), before, "unmerge_adapter() did not restore the base weights", atol, rtol)
    assert_close(case.run(model), adapted, "after unmerge_adapter() the output changed", atol, rtol)


@check(C.MERGE)
def check_merge_twice_is_idempotent(case: Case) -> None:
    """A second ``merge_adapter()`` (and a second unmerge) changes nothing."""
    atol, rtol = _tol(case)
    model = case.peft()
    original = base_parameters(model)
    model.merge_adapter()
    once, out_once = base_parameters(model), case.run(model)
    model.merge_adapter()
    assert_same_tensors(base_parameters(model), once, "merging an already merged adapter changed the weights again")
    assert_equal(case.run(model), out_once, "merging an already merged adapter changed the output")
    model.unmerge_adapter()
    model.unmerge_adapter()
    if lossy.is_lossy(case):  # rounding: compared in check_merge_unmerge_roundtrip, within the backend's bound
        return
    assert_same_tensors(base_parameters(model), original, "merge twice + unmerge twice did not restore the weights",
                        atol, rtol)


@check(C.MERGE)
def check_safe_merge_rejects_nonfinite(case: Case) -> None:
    """``safe_merge=True`` refuses an adapter with NaN/inf and leaves every base weight untouched."""
    model = case.peft()
    name = case.names[0]
    layers = [layer for _, layer in adapter_layers(model) if layer.has_adapter(name)]
    bad = math.nan if case.seed % 2 else math.inf
    with torch.no_grad():  # poison the LAST layer: earlier ones must not be merged either
        for param in layers[-1].adapter_parameters(name):
            param.fill_(bad)
    before = base_parameters(model)
    _expect_error(MergeError, "merge_adapter(safe_merge=True) with a NaN/inf adapter",
                  lambda: model.merge_adapter(safe_merge=True))
    if _merged_layers(model):
        raise AssertionError(f"a refused safe merge left layers merged: {_merged_layers(model)[:3]}")
    assert_same_tensors(base_parameters(model), before, "a refused safe merge changed base weights")
    _expect_error(MergeError, "merge_and_unload(safe_merge=True) with a NaN/inf adapter",
                  lambda: model.merge_and_unload(safe_merge=True))
    assert_same_tensors(base_parameters(model), before, "a refused merge_and_unload changed base weights")
    if not adapter_modules_in(model):
        raise AssertionError("a refused merge_and_unload removed the adapter layers")


@check(C.MERGE)
def check_merge_and_unload(case: Case) -> None:
    """``merge_and_unload()`` returns the plain model class, no adapter modules, same output."""
    atol, rtol = _tol(case)
    model = case.peft()
    adapted = case.run(model)
    expected = lossy.snapshot(model) if lossy.is_lossy(case) else None
    merged = model.merge_and_unload()
    if type(merged) is not type(case.base()):
        raise AssertionError(f"merge_and_unload() returned {type(merged).__name__}, not the base model class")
    left = adapter_modules_in(merged)
    if left:
        raise AssertionError(f"merge_and_unload() left adapter modules: {left[:3]}")
    prefixed = [n for n in merged.state_dict() if any(c.startswith(case.spec.prefix) for c in n.split("."))]
    if prefixed:
        raise AssertionError(f"merge_and_unload() left adapter tensors: {prefixed[:3]}")
    if expected is not None:
        lossy.assert_unloaded(merged, expected, "merge_and_unload() on a quantized base")
        return
    assert_close(case.run(merged), adapted, "the merged-and-unloaded model's output differs from the adapter's",
                 atol, rtol)


@check(C.UNLOAD)
def check_unload_returns_base(case: Case) -> None:
    """``unload()`` gives back the base model exactly (and, after a merge, within tolerance)."""
    base = case.base()
    base_out, base_state = case.run(base), base.state_dict()
    plain = case.peft().unload()
    if adapter_modules_in(plain):
        raise AssertionError(f"unload() left adapter modules: {adapter_modules_in(plain)[:3]}")
    assert_same_tensors(plain.state_dict(), base_state, "unload() did not return the base weights exactly")
    _assert_same_output(case.run(plain), base_out, "unload() did not return the base model's output")
    if case.spec.supports(C.MERGE) and not lossy.is_lossy(case):  # (rounding: check_merge_unmerge_roundtrip)
        atol, rtol = _tol(case)
        model = case.peft()
        model.merge_adapter()
        plain = model.unload()
        assert_same_tensors(plain.state_dict(), base_state, "unload() after merging did not restore the base weights",
                            atol, rtol)


# -- saving and loading ---------------------------------------------------------------------


def _json(data: object) -> object:
    return json.loads(json.dumps(data, sort_keys=True))


def _load_quietly(load: Callable[[], object]) -> object:
    """Run a load; warnings about missing/unexpected keys become failures."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = load()
    bad = [str(w.message) for w in caught if "keys" in str(w.message)]
    if bad:
        raise AssertionError(f"loading warned about keys: {bad[0][:300]}")
    return result


@check()
def check_save_load_roundtrip(case: Case) -> None:
    """Save then load into a fresh base: same outputs, no missing/unexpected keys, same config."""
    name = case.names[0]
    model = case.peft([(name, False)])
    expected = case.run(model)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        where = Path(tmp) if name == "default" else Path(tmp) / name
        for file in ("adapter_config.json", "adapter_model.safetensors"):
            if not (where / file).is_file():
                raise AssertionError(f"save_pretrained() wrote no {file} in {where}")
        saved_config = json.loads((where / "adapter_config.json").read_text())
        loaded = _load_quietly(lambda: PeftModel.from_pretrained(case.base(), where, adapter_name=name))
        assert isinstance(loaded, PeftModel)
        result = set_peft_model_state_dict(loaded, load_peft_weights(where), adapter_name=name)
    if result.missing_keys or result.unexpected_keys:
        raise AssertionError(f"missing keys {result.missing_keys[:5]}, unexpected keys {result.unexpected_keys[:5]}")
    if type(loaded) is not type(model):
        raise AssertionError(f"from_pretrained() built a {type(loaded).__name__}, saved from a {type(model).__name__}")
    assert_close(case.run(loaded), expected, "the reloaded adapter gives different outputs", 1e-6, 1e-6)
    if _json(loaded.peft_config[name].to_dict()) != saved_config:
        raise AssertionError("the loaded config differs from adapter_config.json")
    ours = _json(model.peft_config[name].to_dict())
    volatile = ("inference_mode", "auto_mapping", "base_model_name_or_path", "revision")
    diff = sorted(k for k in set(ours) | set(saved_config)
                  if k not in volatile and ours.get(k, "<absent>") != saved_config.get(k, "<absent>"))
    if diff:
        raise AssertionError(f"adapter_config.json differs from the adapter's config in {diff}")


@check()
def check_state_dict_keys_peft_format(case: Case) -> None:
    """Saved keys are ``base_model.model.<path>...``, name no adapter, and cover exactly the adapter's tensors."""
    name = case.names[1]
    model = case.peft([(name, False)])
    state = get_peft_model_state_dict(model, adapter_name=name)
    if not state:
        raise AssertionError("the adapter's state dict is empty")
    base_keys = set(case.base().state_dict())
    from ..serialization import tuner_of
    from ..shared import TUNER_DISK_PREFIX

    tuner = tuner_of(model)
    # tensors one adapter shares among its layers are saved once, at tuner level (base_model.vera_A);
    # a tuner's own tensors (a prompt) have keys of their own; prompt tuners keep heads under base_model.
    shared = {TUNER_DISK_PREFIX + n for n in tuner.shared_tensors.saved(name)} | set(tuner.tuner_entries(name))
    prefix = getattr(tuner, "disk_prefix", DISK_PREFIX)
    # an extension may give the adapter layers of another method (LoRA's trainable tokens): their prefixes count too
    from ..plugins import registry

    prefixes = {case.spec.prefix} | {registry().get(layer.method).prefix for _, layer in tuner.adapter_layers()
                                     if layer.has_adapter(name) and layer.method in registry()}
    for key in state:
        if not key.startswith(prefix) and key not in shared:
            raise AssertionError(f"key {key!r} does not start with {prefix!r}")
        parts = key.split(".")
        if name in parts:
            raise AssertionError(f"key {key!r} contains the adapter name {name!r}; names must be removed on save")
        if not any(p.startswith(tuple(prefixes)) for p in parts) and key[len(prefix):] not in base_keys \
                and ".base_layer." not in key:
            raise AssertionError(f"key {key!r} neither carries a prefix of the adapter's layers {sorted(prefixes)} "
                                 "nor names a base tensor")
    # a materialized prompt is computed for saving (PEFT saves P-tuning's MLP output, not the MLP)
    computed = set(getattr(tuner, "materialized_state", lambda _n: {})(name))
    live = {k: t.data_ptr() for k, t in saved_tensors(model, name).items()}
    if set(state) != set(live):
        # PEFT's layout may name a tensor differently from the module tree (LoRA's trainable tokens are saved under
        # PEFT's ``token_adapter`` wrapper, a tied head's copy is left out): then the same tensors must be saved
        renamed = {t.data_ptr() for k, t in state.items() if k not in computed}
        if computed - set(state) or renamed != {p for k, p in live.items() if k not in computed}:
            raise AssertionError("get_peft_model_state_dict() does not return exactly the adapter's own tensors")
    elif any(state[k].data_ptr() != p for k, p in live.items() if k not in computed):
        raise AssertionError("get_peft_model_state_dict() does not return exactly the adapter's own tensors")
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, selected_adapters=[name])
        from safetensors import safe_open

        where = Path(tmp) if name == "default" else Path(tmp) / name
        with safe_open(str(where / "adapter_model.safetensors"), "pt") as fh:
            on_disk, meta = set(fh.keys()), fh.metadata()
    if on_disk != set(state):
        raise AssertionError(f"keys on disk differ from the state dict: {sorted(on_disk ^ set(state))[:5]}")
    if meta != {"format": "pt"}:
        raise AssertionError(f"safetensors metadata is {meta}, PEFT writes {{'format': 'pt'}}")


@check()
def check_save_load_any_adapter_name(case: Case) -> None:
    """An adapter saved under one name loads under any other and behaves the same."""
    saved_as, loaded_as = case.names[1], case.names[0]
    model = case.peft([(saved_as, False)])
    expected = case.run(model)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        where = Path(tmp) if saved_as == "default" else Path(tmp) / saved_as
        loaded = _load_quietly(lambda: PeftModel.from_pretrained(case.base(), where, adapter_name=loaded_as))
        assert isinstance(loaded, PeftModel)
        if set(loaded.peft_config) != {loaded_as} or loaded.active_adapter != loaded_as:
            raise AssertionError(f"loaded as {loaded_as!r} but the model has {sorted(loaded.peft_config)}")
        assert_close(case.run(loaded), expected, f"saved as {saved_as!r} and loaded as {loaded_as!r}: outputs differ",
                     1e-6, 1e-6)


@check(C.MULTI_ADAPTER)
def check_adapter_names_substrings_do_not_leak(case: Case) -> None:
    """Adapters named ``x`` and ``x_1`` (one inside the other) save and load without mixing."""
    short, long = case.names
    model = case.peft([(short, False), (long, False)])
    keys_short = set(get_peft_model_state_dict(model, adapter_name=short))
    keys_long = set(get_peft_model_state_dict(model, adapter_name=long))
    if keys_short != keys_long:
        raise AssertionError(f"same config, different keys for {short!r} and {long!r}: "
                             f"{sorted(keys_short ^ keys_long)[:4]}")
    expected = {}
    for name in (short, long):
        model.set_adapter(name)
        expected[name] = case.run(model)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        for name in (short, long):
            where = Path(tmp) if name == "default" else Path(tmp) / name
            loaded = _load_quietly(lambda: PeftModel.from_pretrained(case.base(), where, adapter_name=name))
            assert_close(case.run(loaded), expected[name], f"adapter {name!r} reloaded from a save next to "
                         f"{(short, long)} gives different outputs", 1e-6, 1e-6)


# -- training -------------------------------------------------------------------------------


@check()
def check_only_adapter_params_train(case: Case) -> None:
    """Exactly the adapter's saved tensors get gradients; base weights never change."""
    name = case.names[0]
    model = case.peft([(name, False)])
    saved = {id(t) for t in saved_tensors(model, name).values()} | {id(t) for t in own_tensors(model, name)}
    wrong = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in saved]
    if wrong:
        raise AssertionError(f"parameters outside the adapter require gradients: {wrong[:4]}")
    before = base_parameters(model, exclude=saved)
    train_steps(case, model, steps=2)
    graded = [n for n, p in model.named_parameters() if p.grad is not None and id(p) not in saved]
    if graded:
        raise AssertionError(f"parameters outside the adapter received gradients: {graded[:4]}")
    if not any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.parameters()):
        raise AssertionError("no adapter parameter received a non-zero gradient")
    assert_same_tensors(base_parameters(model, exclude=saved), before, "training changed base weights")


@check()
def check_training_lowers_loss(case: Case) -> None:
    """A few optimizer steps on the adapter lower a fixed loss."""
    losses = train_steps(case, case.peft(), steps=4, lr=case.model_kind.train_lr)
    if not losses[-1] < losses[0]:
        raise AssertionError(f"4 Adam steps did not lower the loss: {losses}")


@check(C.MULTI_ADAPTER)
def check_multi_adapter_isolation(case: Case) -> None:
    """Training the active adapter leaves another adapter bit-identical (and without gradients)."""
    a, b = case.names
    model = case.peft([(a, False), (b, True)])
    model.set_adapter(a)
    other = [t.detach().clone() for t in own_tensors(model, b)]
    if any(t.requires_grad for t in own_tensors(model, b)):
        raise AssertionError(f"the inactive adapter {b!r} has tensors that require gradients")
    train_steps(case, model, steps=2)
    for before, after in zip(other, own_tensors(model, b)):
        assert_equal(after, before, f"training adapter {a!r} changed adapter {b!r}")


@check(C.MULTI_ADAPTER)
def check_set_adapter_switches(case: Case) -> None:
    """``set_adapter`` makes a model with two adapters behave like one holding just that adapter."""
    a, b = case.names
    model = case.peft([(a, False), (b, True)])
    for name, second in ((b, True), (a, False), (b, True)):
        model.set_adapter(name)
        if model.active_adapter != name:
            raise AssertionError(f"after set_adapter({name!r}) active_adapter is {model.active_adapter!r}")
        alone = case.run(_alone(case, model, name, second))
        assert_close(case.run(model), alone, f"with {name!r} active the output differs from a model holding only "
                     f"{name!r}", 1e-6, 1e-6)


def _alone(case: Case, model: PeftModel, name: str, second: bool) -> PeftModel:
    """A model holding only adapter ``name``, with the tensors it has in ``model``.

    Copying the tensors (rather than relying on the seed) keeps the comparison about
    switching and deleting: an adapter added next to others may draw its random init in a
    different order than one added alone. Only the method's own tensors are copied: base
    tensors a config also saves (biases, heads) are untouched by the suite, and their keys
    depend on which layers *other* adapters wrapped.
    """
    alone = case.peft([(name, second)], perturb=False)
    prefix = case.spec.prefix
    from ..serialization import tuner_of

    computed = set(getattr(tuner_of(model), "materialized_state", lambda _n: {})(name))  # copied below instead
    state = {k: v for k, v in get_peft_model_state_dict(model, adapter_name=name).items()
             if any(part.startswith(prefix) for part in k.split(".")) and k not in computed}
    result = set_peft_model_state_dict(alone, state, adapter_name=name)
    result = result._replace(missing_keys=[k for k in result.missing_keys if k not in computed
                                           and any(p.startswith(prefix) for p in k.split("."))])
    if result.missing_keys or result.unexpected_keys:
        raise AssertionError(f"copying adapter {name!r}: missing {result.missing_keys[:3]}, "
                             f"unexpected {result.unexpected_keys[:3]}")
    with torch.no_grad():  # a prompt encoder may train more than it saves (the materialized prompt): copy all of it
        for mine, theirs in zip(prompt_tensors(alone, name), prompt_tensors(model, name)):
            mine.copy_(theirs)
    return alone


@check()
def check_delete_adapter_frees_everything(case: Case) -> None:
    """``delete_adapter`` leaves no trace (config, modules, dict entries) and frees the tensors."""
    a, b = case.names
    multi = case.spec.supports(C.MULTI_ADAPTER)
    model = case.peft([(a, False), (b, True)] if multi else [(a, False)])
    for victim in ([b, a] if multi else [a]):
        refs = [weakref.ref(t) for t in own_tensors(model, victim)]
        if not refs:
            raise AssertionError(f"adapter {victim!r} owns no tensors")
        model.delete_adapter(victim)
        if any(r() is not None for r in refs):
            gc.collect()  # only when reference counting alone did not free them (cycles)
        if any(r() is not None for r in refs):
            raise AssertionError(f"tensors of the deleted adapter {victim!r} are still referenced")
        _assert_no_trace(model, victim)
        if victim == b:
            assert_close(case.run(model), case.run(_alone(case, model, a, False)),
                         f"after deleting {b!r} the output differs from a model holding only {a!r}", 1e-6, 1e-6)
    if adapter_modules_in(model):
        raise AssertionError(f"adapter modules remain after deleting every adapter: {adapter_modules_in(model)[:3]}")
    _assert_same_output(case.run(model), case.run(case.base()), "after deleting every adapter the output is not the base's")


def _assert_no_trace(model: torch.nn.Module, name: str) -> None:
    if name in model.peft_config or name in model.active_adapters:
        raise AssertionError(f"deleted adapter {name!r} is still in peft_config/active_adapters")
    names = [n for n, _ in model.named_modules()] + list(model.state_dict())
    traces = [n for n in names if name in n.split(".")]
    if traces:
        raise AssertionError(f"deleted adapter {name!r} still appears in module/tensor names: {traces[:3]}")
    for path, module in model.named_modules():
        if isinstance(module, AdapterLayer):
            dicts = [a for a in module.other_param_names if name in getattr(module, a)]
            if dicts or module.has_adapter(name):
                raise AssertionError(f"layer {path!r} still holds settings of deleted adapter {name!r}: {dicts}")


# -- mixed batches, dtypes, seeds -----------------------------------------------------------


@check(C.MIXED_BATCH)
def check_mixed_batch_matches_per_adapter(case: Case) -> None:
    """``adapter_names=[...]`` (``__base__`` included) gives each row its own adapter's output."""
    multi = case.spec.supports(C.MULTI_ADAPTER)
    a, b = case.names
    model = case.peft([(a, False), (b, True)] if multi else [(a, False)])
    routing = case.routing if multi else [a if n == b else n for n in case.routing]
    mixed = case.run(model, adapter_names=routing)
    per = {BASE_ADAPTER_NAME: case.run(case.base())}
    for name in ([a, b] if multi else [a]):
        model.set_adapter(name)
        per[name] = case.run(model)
    atol, rtol = _tol(case)  # rows computed in sub-batches take other kernel paths: not bit-equal
    for i, name in enumerate(routing):
        assert_close(mixed[i], per[name][i], f"row {i} of a mixed batch {routing} differs from adapter {name!r} alone",
                     atol, rtol)


@check()
def check_dtype_and_autocast(case: Case) -> None:
    """fp32 and bf16 bases work; ``autocast_adapter_dtype`` keeps adapters fp32 over bf16, off keeps bf16;
    an fp32 model trains under ``torch.autocast`` (bf16 products, fp32 adapter gradients)."""
    name = case.names[0]
    variants = ((torch.float32, True, torch.float32), (torch.bfloat16, True, torch.float32),
                (torch.bfloat16, False, torch.bfloat16))
    if not case.model_kind.castable:  # a quantized model is loaded in its dtype, never cast: its own variant only
        variants = ((None, True, torch.float32),)
    for base_dtype, autocast, want in variants:
        base = case.base() if base_dtype is None else case.base().to(base_dtype)
        model = case.peft([(name, False)], model=base, autocast_adapter_dtype=autocast)
        layers = [layer for _, layer in adapter_layers(model)]
        tensors = [t for layer in layers for t in layer.adapter_state_dict(name).values()]
        held = [t for _, t in tuner_of(model).tuner_entries(name).values()]  # tensors the tuner holds (X-LoRA)
        dtypes = {t.dtype for t in tensors + prompt_tensors(model, name) + held if t.is_floating_point()}
        if dtypes != {want}:
            raise AssertionError(f"base {base_dtype}, autocast_adapter_dtype={autocast}: adapter tensors are "
                                 f"{sorted(map(str, dtypes))}, expected {want}")
        inputs = {k: v.to(base_dtype) if v.is_floating_point() else v for k, v in case.inputs.items()}
        out = case.run(model, inputs)
        if not torch.isfinite(out).all():
            raise AssertionError(f"base {base_dtype}, autocast_adapter_dtype={autocast}: non-finite output")
    if case.model_kind.castable:  # mixed-precision training: fp32 weights, bf16 products under torch.autocast
        model = case.peft([(name, False)])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = case.output_with_grad(model)
        out.float().square().mean().backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
        if not grads or not all(torch.isfinite(g).all() for g in grads) or not any(g.abs().sum() > 0 for g in grads):
            raise AssertionError("a forward and backward under torch.autocast(bfloat16) gave no finite, non-zero "
                                 "adapter gradients")


@check(C.INPUT_TRANSFORM)
def check_generate_matches_stepwise_forward(case: Case) -> None:
    """Greedy ``generate`` (cached, prompt injected once) picks the tokens full forwards over the growing text pick.

    Applies to methods that transform inputs or the cache: their prompt must enter on the first
    generation step only, with attention masks and cache positions right, which a plain forward
    over the whole sequence at every step checks independently. Non-generative tasks pass.
    """
    model = case.peft()
    if not hasattr(type(model), "generate"):
        return
    ids, steps = case.inputs["input_ids"], 3
    mask = torch.ones_like(ids)
    seq2seq = "decoder_input_ids" in case.inputs
    config = model.get_base_model().config
    eos = getattr(config, "eos_token_id", None)
    start = torch.full((ids.shape[0], 1), config.decoder_start_token_id) if seq2seq else ids
    expected = start
    with torch.no_grad():
        for _ in range(steps):
            extra = {"decoder_input_ids": expected} if seq2seq else {}
            out = model(input_ids=ids if seq2seq else expected,
                        attention_mask=mask if seq2seq else torch.ones_like(expected), **extra)
            expected = torch.cat([expected, out.logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        got = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=steps, do_sample=False)
    for row in range(ids.shape[0]):
        want = expected[row].tolist()
        new = want[start.shape[1]:]
        if eos in new:  # generation stops (and pads) after an end-of-sequence token
            want = want[: start.shape[1] + new.index(eos) + 1]
        if got[row, : len(want)].tolist() != want:
            raise AssertionError(f"row {row}: generate() gave {got[row].tolist()}, step-by-step forwards {want}")


@check()
def check_seeded_init_is_deterministic(case: Case) -> None:
    """The same torch seed gives a bit-identical adapter (no hidden randomness)."""
    name = case.names[0]
    first = get_peft_model_state_dict(case.peft([(name, False)], perturb=False), adapter_name=name)
    second = get_peft_model_state_dict(case.peft([(name, False)], perturb=False), adapter_name=name)
    assert_same_tensors(second, first, "two adapters created after the same torch.manual_seed differ")


# -- refusals -------------------------------------------------------------------------------


@check()
def check_invalid_config_rejected(case: Case) -> None:
    """Invalid configs raise a :class:`PeftCoreError` with a message, and leave the model untouched."""
    if case.invalid is None:
        raise AssertionError("the method's MethodCases has no invalid_configs; give a strategy of invalid "
                             "config arguments so the suite can check they are refused")
    attempts: list[tuple[str, Callable[[], object]]] = [
        (f"{case.spec.config_class.__name__}(**{case.invalid!r})", lambda: case.spec.config_class(**case.invalid)),
    ]
    if hasattr(case.config, "target_modules"):
        nowhere = case.new_config()
        nowhere.target_modules = ["no_such_module_anywhere"]
        attempts.append(("target_modules matching no module", lambda: nowhere))
    for what, make in attempts:
        base = case.base()
        for param in base.parameters():
            if param.is_floating_point():  # (quantized weights cannot require gradients)
                param.requires_grad_(True)
        before = {k: v.clone() for k, v in base.state_dict().items()}
        grads = {n: p.requires_grad for n, p in base.named_parameters()}
        from ..model import get_peft_model

        exc = _expect_error(PeftCoreError, what, lambda: get_peft_model(base, make()))  # noqa: B023
        if len(str(exc).strip()) < 20:
            raise AssertionError(f"{what}: the error message {str(exc)!r} does not say what to do")
        if adapter_modules_in(base):
            raise AssertionError(f"{what}: the refused config left adapter modules in the model")
        assert_same_tensors(base.state_dict(), before, f"{what}: the refused config changed the model")
        if {n: p.requires_grad for n, p in base.named_parameters()} != grads:
            raise AssertionError(f"{what}: the refused config changed which parameters require gradients")


def _weighted(case: Case, model: PeftModel) -> None:
    model.add_weighted_adapter([case.names[0]], [1.0], "combined_check")


def _multi_active(case: Case, model: PeftModel) -> None:
    model.add_adapter(case.names[1], case.new_config(second=True))
    model.set_adapter(list(case.names))


_UNDECLARED_OPERATIONS: dict[Capability, Callable[[Case, PeftModel], object]] = {
    C.MERGE: lambda case, model: model.merge_adapter(),
    C.UNLOAD: lambda case, model: model.unload(),
    C.DISABLE: lambda case, model: model.disable_adapter().__enter__(),
    C.MULTI_ADAPTER: lambda case, model: model.add_adapter(case.names[1], case.new_config(second=True)),
    C.MULTI_ACTIVE: _multi_active,
    C.MIXED_BATCH: lambda case, model: case.run(model, adapter_names=[case.names[0]] * case.batch_size),
    C.WEIGHTED_COMBINE: _weighted,
    C.MIXED_METHODS: lambda case, model: _mixed_model(case),
}


def _mixed_model(case: Case) -> object:
    from ..mixed import PeftMixedModel

    return PeftMixedModel(case.base(), case.new_config(), case.names[0])


@check()
def check_undeclared_capabilities_raise(case: Case) -> None:
    """Every operation whose capability the method does not declare raises ``UnsupportedOperation``."""
    for cap, operation in _UNDECLARED_OPERATIONS.items():
        if case.spec.supports(cap) or (cap is C.MULTI_ACTIVE and not case.spec.supports(C.MULTI_ADAPTER)):
            continue  # (several active adapters cannot even be set up without a second adapter)
        model = case.peft([(case.names[0], False)])
        if cap is C.WEIGHTED_COMBINE and not hasattr(type(model), "add_weighted_adapter") \
                and not hasattr(type(model.base_model), "add_weighted_adapter"):
            continue  # the core does not offer the operation at all
        _expect_error(UnsupportedOperation, f"{cap.value} is not declared, but {cap.value} operation",
                      lambda: operation(case, model))  # noqa: B023
        if cap is C.MERGE:
            _expect_error(UnsupportedOperation, "merge is not declared, but merge_and_unload()",
                          lambda: model.merge_and_unload())  # noqa: B023


from . import mixed_checks  # noqa: E402,F401  (registers check_mixes_with_lora after the checks above)
