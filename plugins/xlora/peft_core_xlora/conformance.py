"""X-LoRA's cases for the shared conformance suite (the ``peft_core_conformance_cases`` hook).

An X-LoRA config points at saved LoRA experts, so the cases first save two experts for the
tiny Llama (different targets, one on the embedding) into a directory that lives as long as
the process; every drawn config mixes them. Hypothesis is imported only when the suite asks.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import lru_cache
from typing import Any

from peft_core import hookimpl

#: the experts saved for the tiny Llama: name -> LoRA target modules
EXPERT_TARGETS = {"expert_a": ["q_proj", "v_proj"], "expert_b": ["v_proj", "down_proj", "embed_tokens"]}


@lru_cache(maxsize=1)
def saved_experts() -> dict[str, str]:
    """Save the experts once per process; ``{name: directory}``."""
    import torch

    from peft_core import get_peft_model
    from peft_core.conformance.strategies import fresh_model
    from peft_core_lora.config import LoraConfig

    root = tempfile.mkdtemp(prefix="peft_core_xlora_experts_")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    paths = {}
    for seed, (name, targets) in enumerate(EXPERT_TARGETS.items()):
        torch.manual_seed(100 + seed)
        model = get_peft_model(fresh_model("tiny_llama"), LoraConfig(r=4, target_modules=targets, init_lora_weights=False))
        model.save_pretrained(f"{root}/{name}")
        paths[name] = f"{root}/{name}"
    return paths


def _configs(st: Any) -> Any:
    from .config import XLoraConfig

    @st.composite
    def build(draw: Any) -> XLoraConfig:
        top_k = draw(st.sampled_from([None, None, 1, 2]))
        softmax = draw(st.booleans())
        return XLoraConfig(
            adapters=saved_experts(),
            hidden_size=draw(st.sampled_from([None, 32])),
            task_type=draw(st.sampled_from([None, "CAUSAL_LM"])),
            xlora_depth=draw(st.sampled_from([1, 2, 3])),
            xlora_size=draw(st.sampled_from([4, 8])),
            xlora_dropout_p=draw(st.sampled_from([0.0, 0.2])),
            layerwise_scalings=draw(st.booleans()),
            enable_softmax=softmax,
            top_k_lora=top_k,
            enable_softmax_topk=top_k is not None and not softmax and draw(st.booleans()),
            softmax_temperature=draw(st.sampled_from([0.5, 1.0, 2.0])),
            scaling_pass_value=draw(st.sampled_from([0.0, 0.5])),
            global_scaling_weight=draw(st.sampled_from([1.0, 0.5])),
        )

    return build()


@lru_cache(maxsize=1)
def xlora_cases() -> Any:
    from hypothesis import strategies as st

    from peft_core.conformance import MethodCases

    invalid = st.sampled_from([
        {"xlora_depth": 0},
        {"top_k_lora": 0},
        {"softmax_temperature": 0.0},
        {"xlora_dropout_p": 1.5},
        {"adapters": {"a": 3}},
        {"hidden_size": -1},
        {"adapters": {}},  # refused when the model is built: nothing to mix
        {"adapters": {"a": "/no/such/adapter/dir"}},
    ])
    return MethodCases(
        configs={"tiny_llama": _configs(st)},
        invalid_configs=invalid,
        identity_at_init=lambda config: False,
        notes={
            "experts": "two LoRA experts saved once per process for the tiny Llama; every config mixes them",
            "trainable": "the classifier is the adapter's only trainable (and saved) part; experts stay frozen",
        },
    )


@hookimpl
def peft_core_conformance_cases(method: str) -> Any:
    return xlora_cases() if method == "XLORA" else None
