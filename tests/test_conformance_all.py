"""The conformance suite for every installed method plugin (ids ``METHOD-check``).

A method whose own test file runs the suite in the same session (``plugins/lora/tests``)
is not run twice: the conformance pytest plugin deselects these generic duplicates. A
method without conformance cases gets one failing ``METHOD-cases`` test saying what to add.
"""

from peft_core.conformance import parametrize_all_methods


@parametrize_all_methods()
def test_conformance(check):
    check()
