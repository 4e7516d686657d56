"""Hypothesis strategies the conformance suite draws cases from: tiny models, inputs, adapter names.

Models are identified by a *kind* (``"mlp"``, ``"tiny_llama"`` …) rather than drawn as
objects, so a failing example prints as a short readable line and a method's config
strategies can be keyed by the kind they were written for. Each kind is built once per
process and handed out as deep copies: building a transformer, even a tiny one, costs far
more than copying it, and every check needs several pristine copies.

Hypothesis is imported here at module level; the package ``__init__`` imports this module
lazily so ``import peft_core`` (and the ``peft-core`` command) work without it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from hypothesis import strategies as st
from torch import nn

from ..names import BASE_ADAPTER_NAME
from . import models


@dataclass(frozen=True)
class ModelKind:
    """How to build one tiny model, feed it, and read a tensor out of its output."""

    name: str
    build: Callable[[], nn.Module]
    make_inputs: Callable[[torch.Generator, int, int], dict[str, torch.Tensor]]
    #: a kind a backend plugin contributes is a variant of a float kind (``"tiny_llama"``): methods
    #: are tested on it with their configs for that kind, if they declare ``requires``
    derived_from: str | None = None
    requires: Any = None
    #: merging rounds (the weights are quantized): merge checks compare the written weights with
    #: the weight the unmerged layer computes with, within the backend's rounding, not outputs
    lossy_merge: bool = False
    #: Adam step size of the training checks; a model computing in half precision (bitsandbytes
    #: 8-bit matmuls return float16) rounds away the first steps of a fresh adapter at 1e-3
    train_lr: float = 1e-3
    #: ``model.to(dtype)`` works (quantized models are loaded in a dtype and refuse casts)
    castable: bool = True

    def output(self, out: Any) -> torch.Tensor:
        """The tensor the suite compares: the model's own tensor, or ``.logits``."""
        if isinstance(out, torch.Tensor):
            return out
        logits = getattr(out, "logits", None)
        if isinstance(logits, torch.Tensor):
            return logits
        return out[0]


def _tokens(gen: torch.Generator, batch: int, length: int) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.randint(1, models.VOCAB, (batch, length), generator=gen)}


def _seq2seq(gen: torch.Generator, batch: int, length: int) -> dict[str, torch.Tensor]:
    return {
        "input_ids": torch.randint(1, models.VOCAB, (batch, length), generator=gen),
        "decoder_input_ids": torch.randint(1, models.VOCAB, (batch, max(1, length - 1)), generator=gen),
    }


def _images(gen: torch.Generator, batch: int, length: int) -> dict[str, torch.Tensor]:
    return {
        "pixel_values": torch.randn(batch, 3, length + 2, length + 2, generator=gen),
        "labels": torch.randint(0, 10, (batch,), generator=gen),
    }


#: every model kind the suite knows; a method's ``MethodCases.configs`` picks among these
MODEL_KINDS: dict[str, ModelKind] = {
    "mlp": ModelKind("mlp", models.mlp, _tokens),
    "convnet": ModelKind("convnet", models.convnet, _images),
    "tiny_llama": ModelKind("tiny_llama", models.tiny_llama, _tokens),
    "tiny_gpt2": ModelKind("tiny_gpt2", models.tiny_gpt2, _tokens),
    "tiny_bert": ModelKind("tiny_bert", models.tiny_bert, _tokens),
    "tiny_t5": ModelKind("tiny_t5", models.tiny_t5, _seq2seq),
}

_BUILT: dict[str, nn.Module] = {}


def all_model_kinds() -> dict[str, ModelKind]:
    """The built-in kinds and those installed backend plugins contribute (``peft_core_conformance_model_kinds``)."""
    from ..plugins import hook

    kinds = dict(MODEL_KINDS)
    for contributed in hook().peft_core_conformance_model_kinds():
        for kind in contributed or ():
            kinds.setdefault(kind.name, kind)
    return kinds


def model_kind(name: str) -> ModelKind:
    kinds = MODEL_KINDS if name in MODEL_KINDS else all_model_kinds()
    return kinds[name]


def fresh_model(kind: str) -> nn.Module:
    """A pristine copy of the tiny model ``kind`` (built once, then deep-copied)."""
    if kind not in _BUILT:
        _BUILT[kind] = model_kind(kind).build()
    return copy.deepcopy(_BUILT[kind])


def model_kinds() -> st.SearchStrategy[str]:
    return st.sampled_from(sorted(MODEL_KINDS))


@st.composite
def inputs(draw: st.DrawFn, kind: str, min_batch: int = 2, max_batch: int = 4) -> dict[str, torch.Tensor]:
    """An input batch for ``kind``: a few rows (mixed batches need at least two) of a few tokens/pixels."""
    batch = draw(st.integers(min_batch, max_batch))
    length = draw(st.integers(2, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    return model_kind(kind).make_inputs(torch.Generator().manual_seed(seed), batch, length)


_NAME_START = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_NAME_REST = _NAME_START + "0123456789_-"


def adapter_names(reserved_prefixes: tuple[str, ...] = ()) -> st.SearchStrategy[str]:
    """Valid adapter names: letters, digits, ``_`` and ``-``; never a method prefix or ``__base__``."""
    name = st.builds(
        lambda head, tail: head + tail,
        st.sampled_from(_NAME_START),
        st.text(alphabet=_NAME_REST, max_size=10),
    )
    return name.filter(lambda n: n != BASE_ADAPTER_NAME and not n.startswith(reserved_prefixes))


@st.composite
def nested_adapter_names(draw: st.DrawFn, reserved_prefixes: tuple[str, ...] = ()) -> tuple[str, str]:
    """Two distinct names where one contains the other (``a`` and ``a_1``, ``x`` and ``bx``)."""
    short = draw(adapter_names(reserved_prefixes))
    extra = draw(st.text(alphabet=_NAME_REST, min_size=1, max_size=4))
    long = draw(st.sampled_from([short + extra, "x" + extra + short]))
    if long.startswith(reserved_prefixes):
        long = short + extra
    return short, long


def routing_names(names: tuple[str, ...], batch: int) -> st.SearchStrategy[list[str]]:
    """One adapter name (or ``__base__``) per row of a mixed batch."""
    return st.lists(st.sampled_from([*names, BASE_ADAPTER_NAME]), min_size=batch, max_size=batch)


#: names that are legitimately parts of module paths and keys; an adapter named like one of
#: them could not be told apart from a leak, so drawn adapter names avoid them
_STRUCTURAL = frozenset({"base_layer", "modules_to_save", "original_module", "base_model", "model", "weight", "bias"})
_COMPONENTS: dict[str, frozenset[str]] = {}


def name_components(kind: str) -> frozenset[str]:
    """Every dotted component of the module and tensor names of model ``kind``."""
    if kind not in _COMPONENTS:
        model = fresh_model(kind)
        names = [n for n, _ in model.named_modules()] + list(model.state_dict())
        _COMPONENTS[kind] = frozenset(c for n in names for c in n.split(".")) | _STRUCTURAL
    return _COMPONENTS[kind]


#: the task wrappers a layer method is drawn with on each tiny model kind (``model_kind_fields``)
TASK_TYPES: dict[str, list[Any]] = {
    "tiny_llama": [None, "CAUSAL_LM"], "tiny_bert": [None, "SEQ_CLS"], "tiny_t5": [None, "SEQ_2_SEQ_LM"],
}


def drawn_targets(draw: st.DrawFn, names: list[str], always: str | None = None, max_size: int | None = None) -> list[str]:
    """A sorted, non-empty subset of ``names`` to target, plus ``always`` when given.

    ``always`` is a module some methods must adapt on a tiny random model for its effect to
    show in fp32 outputs (the value projection: changing only queries or keys moves the loss
    too little to see).
    """
    chosen = draw(st.sets(st.sampled_from(names), min_size=1, max_size=max_size or len(names)))
    return sorted(chosen | ({always} if always else set()))


def model_kind_fields(
    draw: st.DrawFn, kind: str, task_types: dict[str, list[Any]], save_module: bool = True
) -> dict[str, Any]:
    """Config fields every layer method sets the same way for a model kind.

    GPT-2 stores its weights transposed (``fan_in_fan_out=True``), the ``task_type`` is drawn
    from ``task_types[kind]`` (the task wrappers a method supports on that kind), and on the
    MLP the head ``lin1`` may be trained in full (``modules_to_save``) when ``save_module``.
    """
    fields: dict[str, Any] = {}
    if kind == "tiny_gpt2":
        fields["fan_in_fan_out"] = True
    if kind in task_types:
        fields["task_type"] = draw(st.sampled_from(task_types[kind]))
    if save_module and kind == "mlp" and draw(st.booleans()):
        fields["modules_to_save"] = ["lin1"]
    return fields


def target_module_forms(
    draw: st.DrawFn, kind: str, targets: list[str], forms: tuple[str, ...] = ("list", "regex", "layers", "default")
) -> tuple[Any, dict[str, Any]]:
    """``(target_modules, extra fields)`` in one of the forms users write, drawn on the tiny Llama.

    ``"list"`` keeps the names, ``"regex"`` turns them into one full-name pattern, ``"layers"``
    adds ``layers_to_transform``, ``"default"`` leaves ``target_modules`` unset (the model type's
    defaults). Other model kinds keep the list: their module names are not what the forms test.
    """
    if kind != "tiny_llama":
        return targets, {}
    form = draw(st.sampled_from(forms))
    if form == "regex":
        return r".*\.(" + "|".join(targets) + ")", {}
    if form == "layers":
        return targets, {"layers_to_transform": draw(st.sampled_from([0, [1], [0, 1]]))}
    if form == "default":
        return None, {}
    return targets, {}


def case_strategy(spec: Any, method_cases: Any, kinds: tuple[str, ...] | None = None) -> st.SearchStrategy[Any]:
    """Draw :class:`~peft_core.conformance.cases.Case` objects for one method (on ``kinds`` models only)."""
    from ..plugins import registry
    from .cases import Case

    prefixes = tuple(s.prefix for s in registry())

    @st.composite
    def build(draw: st.DrawFn) -> Case:
        kind = draw(st.sampled_from(kinds or method_cases.model_kinds))
        config = draw(method_cases.configs[kind])
        other = draw(method_cases.configs[kind])
        batch = draw(inputs(kind))
        taken = name_components(kind)
        names = draw(nested_adapter_names(prefixes).filter(lambda pair: not taken & set(pair)))
        rows = next(iter(batch.values())).shape[0]
        routing = draw(routing_names(names, rows))
        seed = draw(st.integers(0, 2**20))
        invalid = draw(method_cases.invalid_configs) if method_cases.invalid_configs is not None else None
        return Case(spec=spec, cases=method_cases, kind=kind, config=config, other_config=other, inputs=batch,
                    names=names, routing=routing, seed=seed, invalid=invalid)

    return build()


#: the task each tiny transformer is adapted for by prompt-learning methods (they need a task_type)
PROMPT_TASKS = {"tiny_llama": "CAUSAL_LM", "tiny_gpt2": "CAUSAL_LM", "tiny_bert": "SEQ_CLS", "tiny_t5": "SEQ_2_SEQ_LM"}


def prompt_learning_fields(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    """Fields every prompt-learning config draws the same way: the kind's task and a few virtual tokens."""
    return {"task_type": PROMPT_TASKS[kind], "num_virtual_tokens": draw(st.integers(1, 4))}
