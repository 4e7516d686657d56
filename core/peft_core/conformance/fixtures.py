"""pytest fixtures shared by the parity tests of several method plugins.

Quantized (bitsandbytes) tests must load their base model from disk, because quantization
happens in ``from_pretrained``; every such test module needs the same tiny causal LM saved
once. Import the fixture into a test module to use it::

    from peft_core.conformance.fixtures import llama_dir  # noqa: F401  (pytest fixture)
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding ``tiny_llama()`` saved with ``save_pretrained``, once per test module."""
    from .models import tiny_llama

    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama().save_pretrained(path)
    return path
