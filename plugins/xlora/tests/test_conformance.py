"""X-LoRA's whole conformance test: every applicable check of the shared suite."""

from peft_core.conformance import parametrize_with_checks


@parametrize_with_checks("XLORA", max_examples=3)
def test_conformance(check):
    check()
