"""The shared conformance suite: LoRA's checks with ``trainable_token_indices`` configs on the tiny Llama."""

from peft_core.conformance import cases_for, parametrize_with_checks
from peft_core_trainable_tokens.conformance import lora_tokens_cases, lora_tokens_cases_active


# a few drawn examples per check (LoRA's own suite covers the rest of LoRA's config space)
@parametrize_with_checks("LORA", max_examples=3)
def test_lora_with_trainable_tokens_conformance(check):
    with lora_tokens_cases_active():
        check()


def test_the_checks_really_draw_configs_with_tokens():
    with lora_tokens_cases_active():
        assert cases_for("LORA").configs["tiny_llama"] is lora_tokens_cases().configs["tiny_llama"]
    assert cases_for("LORA").configs["tiny_llama"] is not lora_tokens_cases().configs["tiny_llama"]
