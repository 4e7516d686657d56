"""Tiny Llama checkpoints quantized with bitsandbytes on the CPU, built from a config (never downloaded)."""

from __future__ import annotations

import warnings

import pytest
import torch

from peft_core.conformance.models import tiny_llama


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory):
    """A tiny fp32 Llama saved once per session; every test quantizes its own fresh copy."""
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama().save_pretrained(path)
    return path


def quantization_config(bits: int, **options):
    from transformers import BitsAndBytesConfig

    if bits == 4:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=options.pop("quant_type", "nf4"), **options)
    return BitsAndBytesConfig(load_in_8bit=True, **options)


@pytest.fixture
def load_quantized(llama_dir):
    """``load_quantized(bits, **bnb_options)`` → a freshly loaded quantized tiny Llama (eval mode)."""
    from transformers import AutoModelForCausalLM

    def load(bits: int = 4, dtype: torch.dtype | None = None, **options):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kwargs = {"dtype": dtype} if dtype is not None else {}
            model = AutoModelForCausalLM.from_pretrained(
                llama_dir, quantization_config=quantization_config(bits, **options), **kwargs
            )
        return model.eval()

    return load
