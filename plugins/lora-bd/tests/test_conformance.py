"""The shared conformance suite: LoRA's checks with block-diagonal LoRA configs (``use_bdlora``)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from peft_core.conformance import cases_for, parametrize_with_checks
from peft_core_lora_bd.conformance import bd_cases, bd_cases_active


# a few drawn examples per check and model kind (the tiny Llama also runs 4-bit/8-bit through the bnb plugin)
@parametrize_with_checks("LORA", max_examples=4)
def test_bd_lora_conformance(check):
    with bd_cases_active():
        check()


def test_the_checks_really_draw_block_diagonal_configs():
    with bd_cases_active():
        cases = cases_for("LORA")
    assert cases.configs["tiny_llama"] is bd_cases().configs["tiny_llama"]
    assert cases_for("LORA").configs["tiny_llama"] is not bd_cases().configs["tiny_llama"]  # LoRA's suite untouched

    @settings(max_examples=10, database=None)
    @given(st.data())
    def drawn(data):
        for strategy in bd_cases().configs.values():
            config = data.draw(strategy)
            bd = config.use_bdlora
            assert bd.target_modules_bd_a or bd.target_modules_bd_b or not bd.match_strict

    drawn()
