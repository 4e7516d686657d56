"""Prompt tuning, prefix tuning and P-tuning on the other task wrappers, against peft==0.21.2 both ways.

Token classification, extractive QA and feature extraction (tiny BERTs): the same core plumbing
(attention mask, token types, cache prefix) must give PEFT's outputs exactly.
"""

from __future__ import annotations

import pytest

from peft_core.conformance.prompt_parity import round_trip_both_ways

peft = pytest.importorskip("peft")
prompt_tuning = pytest.importorskip("peft_core_prompt_tuning")
prefix_tuning = pytest.importorskip("peft_core_prefix_tuning")
p_tuning = pytest.importorskip("peft_core_p_tuning")

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

METHODS = {
    "prompt": (lambda: prompt_tuning.PromptTuningConfig, lambda: peft.PromptTuningConfig),
    "prefix": (lambda: prefix_tuning.PrefixTuningConfig, lambda: peft.PrefixTuningConfig),
    "p": (lambda: p_tuning.PromptEncoderConfig, lambda: peft.PromptEncoderConfig),
}


@pytest.mark.parametrize("task", ["TOKEN_CLS", "QUESTION_ANS", "FEATURE_EXTRACTION"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_task_wrappers_match_peft_both_ways(method, task):
    ours, theirs = (make() for make in METHODS[method])
    fields = {"task_type": task, "num_virtual_tokens": 2}
    result = round_trip_both_ways(ours(**fields), theirs(**fields))
    assert result["peft_to_ours"] <= 1e-6 and result["ours_to_peft"] <= 1e-6, result
    assert result["shapes"][0] == result["shapes"][1]
