"""Base models for training: a local Hugging Face model directory, or a tiny Llama built here.

peft-core never downloads: ``--model`` must be a directory with ``config.json`` and weights
(what ``save_pretrained`` or ``huggingface_hub.snapshot_download`` leave behind). With no
model, a tiny Llama is built from a config and a byte-level BPE tokenizer is trained on the
training text; both are saved as an ordinary model directory in the run directory, so the
adapter's ``base_model_name_or_path`` points at something real that ``peft-core merge``,
``peft-core inspect`` and Hugging Face PEFT can load.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, LoadError

#: The default base: small enough to fine-tune on two CPU cores in well under a minute.
#: ``initializer_range`` is 0.1, not Llama's 0.02: the base is random and frozen, and after
#: the final RMSNorm a 0.02-scale head can only produce near-uniform logits, so no adapter
#: on the inner layers could lower the loss much. At 0.1 the head can express a peaked
#: distribution and the LoRA run shows a clear fall (measured: eval 5.97 -> 4.40 in 150 steps).
TINY_LLAMA = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512, initializer_range=0.1)
DEFAULT_VOCAB = 320
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


def build_tiny_llama(directory: str | os.PathLike, texts: list[str], seed: int = 0, vocab_size: int = DEFAULT_VOCAB) -> Path:
    """Write a tiny Llama (random weights, seeded) and a tokenizer trained on ``texts`` to ``directory``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from .data import train_tokenizer

    tokenizer = train_tokenizer(texts, vocab_size=vocab_size)
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **TINY_LLAMA)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    directory = Path(directory)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def check_model_dir(path: str | os.PathLike) -> Path:
    """``path`` as a local model directory, or a :class:`LoadError` saying how to get one."""
    p = Path(path)
    if not (p.is_dir() and (p / "config.json").is_file()):
        raise LoadError(
            f"{str(path)!r} is not a local model directory (no config.json). peft-core loads models from disk "
            "only: save one with model.save_pretrained(DIR), or download it first with "
            "huggingface_hub.snapshot_download, and pass the directory."
        )
    return p


def load_tokenizer(path: str | os.PathLike) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # transformers raises OSError/ValueError/KeyError depending on what is missing
        raise LoadError(f"cannot load a tokenizer from {str(path)!r} ({type(exc).__name__}: {exc}); the model "
                        "directory needs its tokenizer files (tokenizer.json or equivalent).") from None
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def auto_class_for(task_type: str | None, auto_mapping: dict | None = None) -> Any:
    """The ``transformers`` Auto class that loads a base model for an adapter's task type."""
    import transformers

    by_task = {
        "CAUSAL_LM": "AutoModelForCausalLM",
        "SEQ_2_SEQ_LM": "AutoModelForSeq2SeqLM",
        "SEQ_CLS": "AutoModelForSequenceClassification",
        "TOKEN_CLS": "AutoModelForTokenClassification",
        "QUESTION_ANS": "AutoModelForQuestionAnswering",
        "FEATURE_EXTRACTION": "AutoModel",
    }
    if task_type is not None:
        return getattr(transformers, by_task[str(task_type)])
    base_class = (auto_mapping or {}).get("base_model_class")
    if base_class and hasattr(transformers, base_class):
        return getattr(transformers, base_class)
    return transformers.AutoModel


def load_model(path: str | os.PathLike, task_type: str | None = "CAUSAL_LM", dtype: str = "float32",
               load_in_4bit: bool = False, auto_mapping: dict | None = None) -> Any:
    """Load a base model from a local directory, optionally quantized to 4 bits with bitsandbytes."""
    p = check_model_dir(path)
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype must be one of {sorted(DTYPES)}, got {dtype!r}.")
    kwargs: dict[str, Any] = {"local_files_only": True, "dtype": DTYPES[dtype]}
    if load_in_4bit:
        try:
            from transformers import BitsAndBytesConfig
            import bitsandbytes  # noqa: F401
        except Exception as exc:
            raise ConfigError(f"--load-in-4bit needs bitsandbytes ({exc}); pip install bitsandbytes peft-core-bnb") from None
        compute = torch.float32 if dtype in ("float32", "auto") else DTYPES[dtype]
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_compute_dtype=compute)
    model = auto_class_for(task_type, auto_mapping).from_pretrained(str(p), **kwargs)
    if load_in_4bit:
        from ..kbit import prepare_model_for_kbit_training

        prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model
