"""LoRA's cases for the shared conformance suite (the ``peft_core_conformance_cases`` hook).

Configs are drawn per tiny model so that every drawn config is valid for the model it
meets: target names exist there, ``lora_bias`` never meets an embedding (nor a string init), GPT-2's Conv1D
targets come with ``fan_in_fan_out=True``. Hypothesis is imported only when the suite
asks, so loading the plugin never needs it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from peft_core import hookimpl

from .config import LoraConfig

#: leaf names LoRA can target in each tiny model of ``peft_core.conformance.models``
TARGETS = {
    # lin1 is kept for modules_to_save: a second adapter may not target another's saved module
    "mlp": ["emb", "lin0", "conv1d"],
    "convnet": ["conv0", "conv1", "head", "emb"],
    "tiny_llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "tiny_gpt2": ["c_attn", "c_proj", "c_fc"],
    "tiny_bert": ["query", "key", "value", "dense"],
    "tiny_t5": ["q", "k", "v", "o", "wi", "wo"],
}
EMBEDDINGS = {"emb"}
#: models whose targetable layers all have a bias, so ``lora_bias`` can be merged into it
BIASED = {"mlp", "convnet", "tiny_gpt2", "tiny_bert"}


def _configs(st: Any, kind: str) -> Any:
    from peft_core.conformance.strategies import (  # imports hypothesis: only when asked
        TASK_TYPES,
        drawn_targets,
        model_kind_fields,
    )

    names = TARGETS[kind]

    @st.composite
    def build(draw: Any) -> LoraConfig:
        targets: Any = drawn_targets(draw, names)
        extra: dict[str, Any] = {}
        if kind == "tiny_llama":
            style = draw(st.sampled_from(["list", "all-linear", "regex", "layers"]))
            if style == "all-linear":
                targets = "all-linear"
            elif style == "regex":
                targets = r".*\.(" + "|".join(targets) + ")"
            elif style == "layers":
                extra["layers_to_transform"] = draw(st.sampled_from([0, [1], [0, 1]]))
        extra.update(model_kind_fields(draw, kind, TASK_TYPES))
        listed = targets if isinstance(targets, list) else []
        if listed and draw(st.booleans()):
            extra["rank_pattern"] = {listed[0]: draw(st.integers(1, 3))}
            extra["alpha_pattern"] = {listed[-1]: draw(st.sampled_from([2.0, 5.0]))}
        bias_ok = kind in BIASED and isinstance(targets, list) and not EMBEDDINGS & set(listed)
        fields = {
            "r": draw(st.integers(1, 4)),
            "lora_alpha": draw(st.sampled_from([1, 4, 8, 16])),
            "lora_dropout": draw(st.sampled_from([0.0, 0.1])),
            "use_rslora": draw(st.booleans()),
            "init_lora_weights": draw(st.sampled_from([True, "gaussian", False])),
            "bias": draw(st.sampled_from(["none", "lora_only", "all"])),
        }
        # lora_bias only with a bool init (as PEFT requires); drawn regardless, so the draws stay in step
        lora_bias = bias_ok and draw(st.booleans()) and isinstance(fields["init_lora_weights"], bool)
        return LoraConfig(target_modules=targets, lora_bias=lora_bias, **fields, **extra)

    return build()


def _invalid(st: Any) -> Any:
    everywhere = {"target_modules": "all-linear"}
    return st.sampled_from([
        {"r": 0},
        {"r": -2},
        {"r": 2.5},
        {"r": True},
        {"lora_dropout": 1.0},
        {"lora_dropout": -0.1},
        {"lora_alpha": "eight"},
        {"bias": "some"},
        {"rank_pattern": {"lin0": 0}},
        {"target_modules": r".*lin0", "layers_to_transform": [0]},
        {"target_modules": ["lin0"], "layers_pattern": "layers"},
        {"task_type": "NOT_A_TASK"},
        {**everywhere, "init_lora_weights": "no_such_init"},
        {**everywhere, "loftq_config": {"loftq_bits": 4}},
        {**everywhere, "layer_replication": [[0, 1]]},
    ])


@lru_cache(maxsize=1)
def lora_cases() -> Any:
    from hypothesis import strategies as st

    from peft_core.conformance import MethodCases

    return MethodCases(
        configs={kind: _configs(st, kind) for kind in TARGETS},
        invalid_configs=_invalid(st),
        identity_at_init=lambda config: config.init_lora_weights is not False,
        notes={"identity_at_init": "not with init_lora_weights=False (random B)"},
    )


@hookimpl
def peft_core_conformance_cases(method: str) -> Any:
    return lora_cases() if method == "LORA" else None


@contextlib.contextmanager
def lora_cases_replaced(cases: Any, name: str) -> Iterator[None]:
    """Within the block, ``peft_core_conformance_cases("LORA")`` answers ``cases`` instead of LoRA's own.

    For plugins that extend LoRA without a method of their own (a variant, an extension
    field): their conformance run is LoRA's checks fed with their configs. ``name`` registers
    the temporary answering plugin (unique per caller).
    """
    from peft_core.plugins import register_plugin, unregister_plugin

    class _Answer:
        @staticmethod
        @hookimpl(tryfirst=True)
        def peft_core_conformance_cases(method: str) -> Any:
            return cases if method == "LORA" else None

    register_plugin(_Answer, name=name)
    try:
        yield
    finally:
        unregister_plugin(name)
