"""The shared conformance suite, LoRA's checks with each initialisation of this plugin.

Orthogonal leaves the base alone and runs every check. PiSSA, OLoRA and LoftQ write a residual
into the base: the checks comparing with the pristine base are declared strict expected failures
(they must keep failing) or, where a drawn case decides it, left out — see
``peft_core_lora_inits.conformance``.
"""

from peft_core.conformance import check_names, parametrize_with_checks
from peft_core_lora_inits.conformance import EXPECTED_FAILURES, NOT_RUN, init_cases_active

# LoRA's own suite covers the config space; these runs cover each init on a few drawn configs
EXAMPLES, REWRITING_EXAMPLES = 2, 1


@parametrize_with_checks("LORA", max_examples=EXAMPLES)
def test_orthogonal_conformance(check):
    with init_cases_active("orthogonal"):
        check()


def _rewriting(init):
    checks = [c for c in check_names("LORA") if c not in NOT_RUN[init]]
    return parametrize_with_checks("LORA", expected_failures=EXPECTED_FAILURES[init], checks=checks,
                                   max_examples=REWRITING_EXAMPLES)


@_rewriting("pissa")
def test_pissa_conformance(check):
    with init_cases_active("pissa"):
        check()


@_rewriting("olora")
def test_olora_conformance(check):
    with init_cases_active("olora"):
        check()


@_rewriting("loftq")
def test_loftq_conformance(check):
    with init_cases_active("loftq"):
        check()
