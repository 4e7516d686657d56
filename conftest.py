"""Shared test setup: Hypothesis profiles and tiny-model fixtures.

``HYPOTHESIS_PROFILE=ci`` (set by .ci/run) keeps property tests fast on 2 cores;
``dev`` runs many more examples for local hunting.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=8, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def tmp_adapter_dir(tmp_path):
    return tmp_path / "adapter"
