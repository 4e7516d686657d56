"""X-LoRA's whole conformance test: every applicable check of the shared suite."""

from peft_core.conformance import parametrize_with_checks

EXPECTED_FAILURES = {
    "check_save_load_any_adapter_name":
        "an X-LoRA model's peft_config lists its LoRA experts next to the X-LoRA adapter (as PEFT's does), "
        "so a reloaded model holds more than the one name the check expects",
    "check_dtype_and_autocast":
        "the check reads the adapter's tensors from its layers; X-LoRA's own tensors are the classifier, held by "
        "the tuner and kept in the base dtype as in PEFT (the LoRA experts do follow autocast_adapter_dtype)",
}


@parametrize_with_checks("XLORA", expected_failures=EXPECTED_FAILURES, max_examples=3)
def test_conformance(check):
    check()
