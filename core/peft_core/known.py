"""Names of methods peft-core has plugins for, so a missing plugin gets an install hint.

This is only a table of hints: the core never imports these packages and third-party
methods need no entry here.
"""

from __future__ import annotations

_PLUGINS: dict[str, tuple[str, tuple[str, ...]]] = {
    # peft_type: (distribution, public names it provides)
    "LORA": ("peft-core-lora", ("LoraConfig", "LoraModel")),
    "ADALORA": ("peft-core-adalora", ("AdaLoraConfig", "AdaLoraModel")),
    "IA3": ("peft-core-ia3", ("IA3Config", "IA3Model")),
    "OFT": ("peft-core-oft", ("OFTConfig", "OFTModel")),
    "BOFT": ("peft-core-boft", ("BOFTConfig", "BOFTModel")),
    "LOHA": ("peft-core-loha", ("LoHaConfig", "LoHaModel")),
    "LOKR": ("peft-core-lokr", ("LoKrConfig", "LoKrModel")),
    "VERA": ("peft-core-vera", ("VeraConfig", "VeraModel")),
    "LN_TUNING": ("peft-core-ln-tuning", ("LNTuningConfig", "LNTuningModel")),
    "XLORA": ("peft-core-xlora", ("XLoraConfig", "XLoraModel")),
    "PROMPT_TUNING": ("peft-core-prompt-tuning", ("PromptTuningConfig", "PromptTuningInit")),
    "PREFIX_TUNING": ("peft-core-prefix-tuning", ("PrefixTuningConfig",)),
    "P_TUNING": ("peft-core-p-tuning", ("PromptEncoderConfig", "PromptEncoderReparameterizationType")),
    "HIRA": ("peft-core-hira", ("HiraConfig",)),
    "GRALORA": ("peft-core-gralora", ("GraloraConfig",)),
    "SHIRA": ("peft-core-shira", ("ShiraConfig",)),
    "MISS": ("peft-core-miss", ("MissConfig",)),
    "DELORA": ("peft-core-delora", ("DeloraConfig",)),
    "ADAMSS": ("peft-core-adamss", ("AdamssConfig",)),
    "FOURIERFT": ("peft-core-fourierft", ("FourierFTConfig",)),
    "TRAINABLE_TOKENS": ("peft-core-trainable-tokens", ("TrainableTokensConfig",)),
}

#: plugins that add no method but publish names (LoRA extensions): distribution -> public names
_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "peft-core-lora-inits": ("LoftQConfig", "replace_lora_weights_loftq"),
    "peft-core-lora-bd": ("BdLoraConfig",),
}


def distribution_for_peft_type(peft_type: str) -> str | None:
    entry = _PLUGINS.get(peft_type.upper())
    return entry[0] if entry else None


def distribution_for_name(public_name: str) -> str | None:
    for dist, names in [*_PLUGINS.values(), *_EXTENSIONS.items()]:
        if public_name in names:
            return dist
    return None
