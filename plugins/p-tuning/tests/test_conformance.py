"""P-tuning's whole conformance test: every applicable check of the shared suite."""

from peft_core.conformance import parametrize_with_checks


@parametrize_with_checks("P_TUNING")
def test_conformance(check):
    check()
