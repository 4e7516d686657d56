"""Trainable tokens' whole conformance test: every applicable check of the shared suite."""

from peft_core.conformance import parametrize_with_checks


@parametrize_with_checks("TRAINABLE_TOKENS")
def test_conformance(check):
    check()
