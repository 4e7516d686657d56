"""The config base class and its JSON round trip in the Hugging Face PEFT schema.

A method's config is a plain dataclass deriving from :class:`PeftConfig`; its
``peft_type`` default names the method. ``adapter_config.json`` is written exactly as
PEFT writes it (sorted keys, two-space indent, sets as lists), and reading is tolerant:
unknown keys from newer writers are dropped with one warning, values are type-checked
field by field, and ``PeftConfig.from_pretrained`` picks the right plugin's class.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import types
import typing
import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, Union

from .errors import ConfigError, LoadError
from .fileio import atomic_write_text

CONFIG_NAME = "adapter_config.json"
#: The Hugging Face PEFT release whose on-disk format peft-core writes; stored as ``peft_version``
#: because PEFT parses that field as a version when it loads (OFT's migration does).
PEFT_FORMAT_VERSION = "0.21.2"


class TaskType(str, enum.Enum):
    """What the wrapped model does; picks the ``PeftModel`` wrapper class."""

    SEQ_CLS = "SEQ_CLS"
    SEQ_2_SEQ_LM = "SEQ_2_SEQ_LM"
    CAUSAL_LM = "CAUSAL_LM"
    TOKEN_CLS = "TOKEN_CLS"
    QUESTION_ANS = "QUESTION_ANS"
    FEATURE_EXTRACTION = "FEATURE_EXTRACTION"

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass
class PeftConfig:
    """Fields every adapter config has; methods subclass it and set ``peft_type``."""

    peft_type: Optional[str] = None
    task_type: Optional[Union[TaskType, str]] = None
    base_model_name_or_path: Optional[str] = None
    revision: Optional[str] = None
    inference_mode: bool = False
    auto_mapping: Optional[dict] = None
    peft_version: Optional[str] = None

    #: True for methods that change the inputs (virtual tokens) instead of wrapping layers
    is_prompt_learning: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if self.task_type is not None:
            try:
                self.task_type = TaskType(str(getattr(self.task_type, "value", self.task_type)))
            except ValueError:
                allowed = ", ".join(t.value for t in TaskType)
                raise ConfigError(f"task_type {self.task_type!r} is not one of: {allowed}, or None.") from None
        if self.peft_version is None:
            self.peft_version = PEFT_FORMAT_VERSION

    # -- dict round trip ---------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: enums as strings, sets as sorted lists."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], source: str | None = None, **overrides: Any) -> PeftConfig:
        """Build a config from a dict; on the base class, dispatch on ``peft_type``.

        Unknown keys are dropped with one warning naming them; known keys are type-checked
        and a mismatch raises :class:`ConfigError` naming the field (and ``source``).
        """
        from .plugins import hook, registry

        if not isinstance(config_dict, dict):
            raise ConfigError(f"{_where(source)}an adapter config must be a JSON object, got {type(config_dict).__name__}.")
        data = dict(config_dict)
        data.update(overrides)
        hook().peft_core_upgrade_config(config_dict=data)
        target = cls
        own_type = cls.__dataclass_fields__["peft_type"].default
        peft_type = data.get("peft_type")
        if own_type is None:  # the base class: dispatch
            if not isinstance(peft_type, str) or not peft_type:
                raise ConfigError(f"{_where(source)}the config has no 'peft_type' string; cannot tell which method wrote it.")
            target = _method_config_class(peft_type, source)
        elif isinstance(peft_type, str) and peft_type and peft_type.upper() != str(own_type).upper():
            # like PEFT, a method class reading another method's config dispatches instead of
            # silently relabelling it (LoraConfig.from_pretrained on an IA3 adapter → IA3Config)
            target = _method_config_class(peft_type, source)
        return target._from_known_fields(data, source)

    @classmethod
    def _from_known_fields(cls, data: dict[str, Any], source: str | None) -> PeftConfig:
        known = {f.name: f for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - set(known))
        if unknown:
            warnings.warn(
                f"{_where(source)}ignoring config fields this version of {cls.__name__} does not know: "
                f"{', '.join(unknown)} (written by a newer version?).",
                UserWarning,
                stacklevel=3,
            )
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for name, value in data.items():
            if name not in known:
                continue
            if not _matches(value, hints.get(name, Any)):
                raise ConfigError(
                    f"{_where(source)}field {name!r} of {cls.__name__} has the wrong type: got "
                    f"{type(value).__name__} {value!r:.80}, expected {_type_name(hints.get(name))}."
                )
            kwargs[name] = value
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            if source:
                raise ConfigError(f"{_where(source)}{exc}") from None
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{_where(source)}invalid {cls.__name__}: {exc}") from exc

    # -- files ---------------------------------------------------------------------------

    def save_pretrained(self, save_directory: str | os.PathLike, durable: bool = False, **kwargs: Any) -> None:
        """Write ``adapter_config.json`` into ``save_directory`` atomically (and fsynced if ``durable``).

        Other keyword arguments become extra keys of the JSON file, as in PEFT.
        """
        path = Path(save_directory)
        if path.is_file():
            raise ConfigError(f"save_directory {str(path)!r} is a file; pass a directory.")
        data = self.to_dict()
        data.update({k: _jsonable(v) for k, v in kwargs.items()})
        atomic_write_text(path / CONFIG_NAME, json.dumps(data, indent=2, sort_keys=True), durable)

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, subfolder: str | None = None, **kwargs: Any
    ) -> PeftConfig:
        """Read ``adapter_config.json`` from a local directory (no downloads, ever)."""
        path = Path(pretrained_model_name_or_path)
        if subfolder:
            path = path / subfolder
        file = path / CONFIG_NAME if path.is_dir() else path
        if not file.is_file():
            raise LoadError(
                f"no {CONFIG_NAME} at {str(path)!r}. peft-core loads adapters from local directories only; "
                "download the adapter first (e.g. with huggingface_hub.snapshot_download) and pass its path."
            )
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: also over-long integers
            raise ConfigError(f"{file}: not valid JSON ({type(exc).__name__}: {str(exc):.200}).") from None
        return cls.from_dict(data, source=str(file), **kwargs)

    # -- helpers -------------------------------------------------------------------------

    def copy(self, **changes: Any) -> PeftConfig:
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass
class PromptLearningConfig(PeftConfig):
    """Fields every prompt-learning method shares (PEFT's names); shape fields come from the model.

    ``token_dim``, ``num_layers``, ``num_attention_heads`` and ``num_transformer_submodules``
    may be left ``None``: :meth:`fill_from_model` reads them from the model's config when the
    adapter is added, so a config written for one model size needs no editing for another.
    """

    num_virtual_tokens: Optional[int] = None
    token_dim: Optional[int] = None
    num_transformer_submodules: Optional[int] = None
    num_attention_heads: Optional[int] = None
    num_layers: Optional[int] = None
    modules_to_save: Optional[list[str]] = None

    is_prompt_learning: ClassVar[bool] = True
    #: True for methods whose prompt is the attention cache (prefix tuning): with grouped-query
    #: attention the prefix has the key/value heads' shape, not the hidden size
    prompt_is_kv_cache: ClassVar[bool] = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_virtual_tokens is None or isinstance(self.num_virtual_tokens, bool) \
                or not isinstance(self.num_virtual_tokens, int) or self.num_virtual_tokens < 1:
            raise ConfigError(f"num_virtual_tokens must be a positive integer (how many virtual tokens the prompt "
                              f"has), got {self.num_virtual_tokens!r}.")
        for name in ("token_dim", "num_transformer_submodules", "num_attention_heads", "num_layers"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer or None (read from the model), got {value!r}.")
        if self.num_transformer_submodules not in (None, 1, 2):
            raise ConfigError("num_transformer_submodules must be 1 (encoder or decoder only), 2 (encoder-decoder) "
                              f"or None, got {self.num_transformer_submodules!r}.")

    def fill_from_model(self, model_config: Any) -> None:
        """Fill the shape fields left ``None`` from a transformers config (text part for multimodal models)."""
        text = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
        if self.num_transformer_submodules is None:
            self.num_transformer_submodules = 2 if str(self.task_type) == TaskType.SEQ_2_SEQ_LM.value else 1
        sources = {
            "num_layers": ("num_hidden_layers", "num_layers", "n_layer"),
            "token_dim": ("hidden_size", "n_embd", "d_model"),
            "num_attention_heads": ("num_attention_heads", "n_head", "num_heads", "encoder_attention_heads"),
        }
        for field_name, names in sources.items():
            if getattr(self, field_name) is not None:
                continue
            value = next((getattr(text, n) for n in names if isinstance(getattr(text, n, None), int)), None)
            if value is None:
                raise ConfigError(f"cannot read {field_name} from the model's config (looked for {', '.join(names)}); "
                                  f"set {field_name} in {type(self).__name__}.")
            setattr(self, field_name, value)
        kv_heads = getattr(text, "num_key_value_heads", None)
        if self.prompt_is_kv_cache and isinstance(kv_heads, int):  # PEFT's rule, applied on every load too
            head_dim = getattr(text, "head_dim", None) or self.token_dim // self.num_attention_heads
            self.token_dim, self.num_attention_heads = head_dim * kv_heads, kv_heads
        if getattr(self, "encoder_hidden_size", 0) is None:  # reparameterized prompts: hidden size of the encoder
            self.encoder_hidden_size = self.token_dim


def _method_config_class(peft_type: str, source: str | None) -> type[PeftConfig]:
    """The config class of ``peft_type``; an unknown method's error names the field and the file."""
    from .errors import UnknownMethodError
    from .plugins import registry

    try:
        return registry().get(peft_type).config_class
    except UnknownMethodError as exc:
        if not source:
            raise
        raise UnknownMethodError(f"{_where(source)}field 'peft_type': {exc}") from None


def _where(source: str | None) -> str:
    return f"{source}: " if source else ""


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    return value


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _matches(value: Any, hint: Any) -> bool:
    """Does a JSON-decoded ``value`` fit the annotation ``hint``? Lenient where JSON is lossy."""
    if hint is Any or hint is None:
        return True
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is Literal:
        return value in typing.get_args(hint)
    if origin in (list, tuple, set, frozenset, typing.Sequence, __import__("collections.abc").abc.Sequence):
        if not isinstance(value, (list, tuple, set, frozenset)):
            return False
        args = typing.get_args(hint)
        return not args or args[0] is Ellipsis or all(_matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if isinstance(hint, type):
        if hint is bool:
            return isinstance(value, bool)
        if hint is int:
            return isinstance(value, int) and not isinstance(value, bool)
        if hint is float:
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        if issubclass(hint, enum.Enum):
            return isinstance(value, (hint, str))
        if dataclasses.is_dataclass(hint):
            return isinstance(value, (hint, dict))
        return isinstance(value, hint)
    return True


def nested_config(cls: type[Any], value: Any, field_name: str) -> Any:
    """``value`` as the dataclass ``cls``: itself, or built from the dict a loaded ``adapter_config.json`` holds.

    Sub-configs (a LoRA config's ``eva_config``, ``corda_config``) are dataclasses in memory
    but plain dicts on disk; ``field_name`` names the field in errors, so a typo points at it.
    """
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ConfigError(f"{field_name} has unknown fields {unknown}; known: {sorted(known)}.")
        return cls(**value)
    article = "an" if cls.__name__[:1] in "AEIOU" else "a"
    raise ConfigError(f"{field_name} must be {article} {cls.__name__} or a dict of its fields, "
                      f"got {type(value).__name__}.")
