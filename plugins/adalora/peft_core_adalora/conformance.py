"""AdaLoRA's cases for the shared conformance suite (the ``peft_core_conformance_cases`` hook).

AdaLoRA adapts linear layers (``nn.Linear`` and GPT-2's ``Conv1D``), so configs are drawn
per tiny model from the linear layers it has. Saved allocations (``rank_pattern``) are
tested in the plugin's own tests: the suite perturbs every adapter tensor, which would
undo a drawn allocation's masking.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from peft_core import hookimpl

from .config import AdaLoraConfig

TARGETS = {
    "mlp": ["lin0", "lin1"],
    "tiny_llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "tiny_gpt2": ["c_attn", "c_proj", "c_fc"],
    "tiny_bert": ["query", "key", "value"],
    "tiny_t5": ["q", "k", "v", "o", "wi", "wo"],
}
TASK_TYPES = {"tiny_llama": [None, "CAUSAL_LM"], "tiny_t5": [None, "SEQ_2_SEQ_LM"]}


def _configs(st: Any, kind: str) -> Any:
    from peft_core.conformance.strategies import drawn_targets, model_kind_fields  # imports hypothesis: only when asked

    names = TARGETS[kind]

    @st.composite
    def build(draw: Any) -> AdaLoraConfig:
        targets: Any = drawn_targets(draw, names)
        extra: dict[str, Any] = {}
        if kind == "tiny_llama" and draw(st.booleans()):
            targets = r".*\.(" + "|".join(targets) + ")"
        extra.update(model_kind_fields(draw, kind, TASK_TYPES, save_module=False))
        init_r = draw(st.integers(1, 4))
        total = draw(st.integers(3, 50))
        tinit = draw(st.integers(0, total // 3))
        return AdaLoraConfig(
            target_modules=targets,
            init_r=init_r,
            target_r=draw(st.integers(1, init_r)),
            lora_alpha=draw(st.sampled_from([1, 4, 8, 16])),
            lora_dropout=draw(st.sampled_from([0.0, 0.1])),
            init_lora_weights=draw(st.booleans()),
            total_step=total,
            tinit=tinit,
            tfinal=draw(st.integers(0, total - tinit - 1)),
            deltaT=draw(st.integers(1, 5)),
            beta1=draw(st.sampled_from([0.5, 0.85])),
            orth_reg_weight=draw(st.sampled_from([0.0, 0.1, 0.5])),
            **extra,
        )

    return build()


def _invalid(st: Any) -> Any:
    return st.sampled_from([
        {"target_modules": ["lin0"]},  # no total_step
        {"total_step": 0},
        {"total_step": 10, "tinit": 5, "tfinal": 5},
        {"total_step": 10, "init_r": 0},
        {"total_step": 10, "deltaT": 0},
        {"total_step": 10, "beta1": 1.0},
        {"total_step": 10, "beta2": 0.0},
        {"total_step": 10, "orth_reg_weight": -0.1},
        {"total_step": 10, "use_dora": True},
        {"total_step": 10, "rank_pattern": {"lin0.lora_E": [1, 0]}},
        {"total_step": 10, "lora_dropout": 1.0},
        {"total_step": 10, "target_modules": "all-linear", "bias": "all"},
        {"total_step": 10, "target_modules": "all-linear", "lora_bias": True},
        {"total_step": 10, "task_type": "NOT_A_TASK"},
    ])


@lru_cache(maxsize=1)
def adalora_cases() -> Any:
    from hypothesis import strategies as st

    from peft_core.conformance import MethodCases

    return MethodCases(
        configs={kind: _configs(st, kind) for kind in TARGETS},
        invalid_configs=_invalid(st),
        identity_at_init=lambda config: bool(config.init_lora_weights),
        notes={
            "identity_at_init": "not with init_lora_weights=False (random E)",
            "multi_adapter": "one AdaLoRA adapter per model: the rank allocator trains one (PEFT refuses two)",
        },
    )


@hookimpl
def peft_core_conformance_cases(method: str) -> Any:
    return adalora_cases() if method == "ADALORA" else None
