"""The shared conformance suite, LoRA's checks with ``init_lora_weights="eva"`` configs."""

from hypothesis import given, settings
from hypothesis import strategies as st

from peft_core.conformance import cases_for, parametrize_with_checks
from peft_core_lora_eva.conformance import eva_cases, eva_cases_active


@parametrize_with_checks("LORA", max_examples=4)
def test_eva_conformance(check):
    with eva_cases_active():
        check()


def test_the_checks_really_draw_eva_configs():
    from peft_core_lora_eva import EvaConfig

    with eva_cases_active():
        cases = cases_for("LORA")
    assert cases is eva_cases()
    assert cases_for("LORA") is not eva_cases()  # LoRA's own suite is untouched outside the block

    @settings(max_examples=10, database=None)
    @given(st.data())
    def drawn(data):
        for kind, strategy in cases.configs.items():
            config = data.draw(strategy)
            assert config.init_lora_weights == "eva" and isinstance(config.eva_config, EvaConfig), kind
            assert not config.lora_bias

    drawn()
