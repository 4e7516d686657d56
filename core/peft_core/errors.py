"""Every error peft-core raises on purpose.

All of them derive from :class:`PeftCoreError`, so a caller can catch one type. Each message
says what went wrong *and what to do about it*; the classes exist so callers and tests can
tell the failure kinds apart without parsing text.
"""

from __future__ import annotations


class PeftCoreError(Exception):
    """Base class of every deliberate peft-core error."""


class ConfigError(PeftCoreError, ValueError):
    """A config is invalid: a field has the wrong type or value, or fields contradict."""


class UnknownMethodError(PeftCoreError, KeyError):
    """A ``peft_type`` names a method no installed plugin provides."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class PluginNotInstalledError(PeftCoreError, ImportError):
    """A public name (``LoraConfig``, …) belongs to a plugin distribution that is not installed."""


class PluginError(PeftCoreError):
    """A plugin failed to load, broke the hook contract, or clashed with another plugin."""


class DuplicateMethodError(PluginError):
    """Two plugins claim the same method name or state-dict prefix."""


class TargetModulesError(PeftCoreError, ValueError):
    """The target rules matched no module, or matched one the method cannot adapt."""


class AdapterNameError(PeftCoreError, ValueError):
    """An adapter name is invalid, already used, or unknown."""


class UnsupportedOperation(PeftCoreError, NotImplementedError):
    """The method does not declare the capability an operation needs."""


class MergeError(PeftCoreError, RuntimeError):
    """Merging would corrupt the base weights (NaN/inf), or the merge state forbids the call."""


class LoadError(PeftCoreError, RuntimeError):
    """A saved adapter cannot be loaded: missing files, unreadable data, keys or shapes that don't fit."""


class SaveError(PeftCoreError, RuntimeError):
    """An adapter cannot be saved where or how it was asked."""
