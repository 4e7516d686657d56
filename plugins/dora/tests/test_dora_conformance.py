"""The shared conformance suite, LoRA's checks with DoRA configs (``use_dora=True``)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from peft_core.conformance import cases_for, parametrize_with_checks
from peft_core_dora.conformance import dora_cases, dora_cases_active


# one drawn example per model kind and check (LoRA's own suite covers the non-DoRA config space)
@parametrize_with_checks("LORA", max_examples=6)
def test_dora_conformance(check):
    with dora_cases_active():
        check()


def test_the_checks_really_draw_dora_configs():
    with dora_cases_active():
        cases = cases_for("LORA")
    assert cases.notes == dora_cases().notes and set(dora_cases().configs) <= set(cases.configs)
    assert "variant" not in cases_for("LORA").notes  # LoRA's own suite is untouched outside the block

    @settings(max_examples=10, database=None)
    @given(st.data())
    def drawn(data):
        for kind, strategy in cases.configs.items():
            config = data.draw(strategy)
            assert config.use_dora and not config.lora_bias, kind

    drawn()
