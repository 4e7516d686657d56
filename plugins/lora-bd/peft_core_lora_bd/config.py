"""``BdLoraConfig``: PEFT's sub-config of ``LoraConfig.use_bdlora`` (same fields, defaults and JSON)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Optional

from peft_core.errors import ConfigError


@dataclass
class BdLoraConfig:
    """Which targets get a block-diagonal A or B, and how many blocks.

    A pattern matches a target when it is a substring of the target's module path (PEFT's
    rule). Row-sharded layers of a tensor-parallel server (attention output, MLP down
    projection) want a block-diagonal A, column-sharded ones (q/k/v, up/gate) a
    block-diagonal B, with ``nblocks`` the sharding degree: then each shard applies its own
    block and no all-gather of the adapter's hidden state is needed. With ``match_strict``
    every LoRA target must match one of the two lists.
    """

    target_modules_bd_a: Optional[list[str]] = None
    target_modules_bd_b: Optional[list[str]] = None
    nblocks: int = 1
    match_strict: bool = True

    def __post_init__(self) -> None:
        for name in ("target_modules_bd_a", "target_modules_bd_b"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, str) or not all(isinstance(p, str) for p in value)):
                raise ConfigError(f"{name} must be a list of module-name substrings, got {value!r}.")
        overlap = set(self.target_modules_bd_a or []) & set(self.target_modules_bd_b or [])
        if overlap:
            raise ConfigError(f"{sorted(overlap)} are in both target_modules_bd_a and target_modules_bd_b; a layer has "
                              "a block-diagonal A or a block-diagonal B, not both.")
        if isinstance(self.nblocks, bool) or not isinstance(self.nblocks, int) or self.nblocks < 1:
            raise ConfigError(f"nblocks must be a positive integer (the sharding degree), got {self.nblocks!r}.")

    def side_for(self, module_name: str) -> str | None:
        """``"A"``, ``"B"`` or ``None`` for the module at ``module_name``; a clear error where PEFT refuses."""
        is_a = any(p in module_name for p in self.target_modules_bd_a or [])
        is_b = any(p in module_name for p in self.target_modules_bd_b or [])
        if is_a and is_b:
            raise ConfigError(f"{module_name!r} matches both target_modules_bd_a and target_modules_bd_b; make the "
                              "patterns distinct.")
        if not (is_a or is_b) and self.match_strict:
            raise ConfigError(f"LoRA target {module_name!r} matches neither target_modules_bd_a nor "
                              "target_modules_bd_b; add it to one of them, or set match_strict=False to train it as "
                              "plain LoRA.")
        return "A" if is_a else "B" if is_b else None


def as_bdlora_config(value: Any) -> BdLoraConfig:
    """``LoraConfig.use_bdlora`` as a :class:`BdLoraConfig` (read from JSON it is a dict)."""
    if isinstance(value, BdLoraConfig):
        return value
    if isinstance(value, dict):
        known = {f.name for f in fields(BdLoraConfig)}
        return BdLoraConfig(**{k: v for k, v in value.items() if k in known})
    raise ConfigError(f"use_bdlora must be a BdLoraConfig, a dict of its fields, or None; got {value!r}.")
