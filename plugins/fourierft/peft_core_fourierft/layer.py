"""FourierFT layers: a weight update that lives in the frequency domain.

Each adapter owns ``n_frequency`` trainable coefficients (``fourierft_spectrum``) placed at
fixed positions of an ``(out, in)`` spectrum; the update is the real part of that sparse
spectrum's inverse 2-D DFT, times ``scaling``. The positions are not saved: they are drawn
again from ``random_loc_seed`` with a private generator, the same draw PEFT makes, so a
saved adapter needs only its coefficients.

The update is dense and additive, so merging goes through the core's weight hooks with the
default ``merged_weight``; the canonical ``(out, in)`` layout makes transformers ``Conv1D``
need nothing special.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from peft_core.buffers import seeded_randperm
from peft_core.errors import ConfigError, TargetModulesError
from peft_core.layer import AdapterLayer
from peft_core.weights import LINEAR, LayerDescription


def spectral_positions(out_features: int, in_features: int, n_frequency: int, seed: int) -> torch.Tensor:
    """``(2, n_frequency)`` row/column positions in the spectrum: a seeded random choice without repeats."""
    flat = seeded_randperm(out_features * in_features, seed)[:n_frequency]
    return torch.stack([flat // in_features, flat % in_features])


class FourierFTLayer(AdapterLayer):
    """FourierFT on ``nn.Linear`` and transformers ``Conv1D``."""

    method = "FOURIERFT"
    adapter_layer_names = ("fourierft_spectrum",)
    other_param_names = ("fourierft_n_frequency", "fourierft_scaling", "fourierft_random_loc_seed", "indices")

    def __init__(self, base_layer: nn.Module, description: LayerDescription) -> None:
        super().__init__(base_layer, description)
        self.fourierft_spectrum = nn.ParameterDict()

    def update_layer(self, adapter_name: str, config: Any, module_name: str = "", **kwargs: Any) -> None:
        out_features, in_features = self.description.out_features, self.description.in_features
        n_frequency = config.n_frequency_for(module_name)
        if n_frequency > out_features * in_features:
            raise ConfigError(
                f"n_frequency={n_frequency} for {module_name!r} exceeds its {out_features}×{in_features} = "
                f"{out_features * in_features} spectrum entries; lower n_frequency (or set it for this module in "
                "n_frequency_pattern)."
            )
        self.fourierft_n_frequency[adapter_name] = n_frequency
        self.fourierft_scaling[adapter_name] = float(config.scaling)
        self.fourierft_random_loc_seed[adapter_name] = config.random_loc_seed
        self.indices[adapter_name] = spectral_positions(out_features, in_features, n_frequency, config.random_loc_seed)
        # drawn even when zeroed, so a seeded run leaves the global RNG where PEFT leaves it
        spectrum = torch.randn(n_frequency)
        if config.init_weights:
            spectrum.zero_()
        self.fourierft_spectrum[adapter_name] = nn.Parameter(spectrum)

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        """``Re(IDFT2(S)) · scaling`` with ``S`` the sparse spectrum, in fp32 (CPU has no half-precision FFT)."""
        coefficients = self.fourierft_spectrum[adapter_name]
        rows, cols = self.indices[adapter_name].to(coefficients.device)
        dense = torch.zeros(self.description.out_features, self.description.in_features, device=coefficients.device)
        dense = dense.index_put((rows, cols), coefficients.float())
        delta = torch.fft.ifft2(dense).real * self.fourierft_scaling[adapter_name]
        return delta.to(coefficients.dtype)

    def apply_adapter(self, x: torch.Tensor, result: torch.Tensor, adapter_name: str) -> torch.Tensor:
        delta = self.get_delta_weight(adapter_name)
        return (result + F.linear(x.to(delta.dtype), delta)).to(result.dtype)


def create_fourierft_layer(
    target: nn.Module, description: LayerDescription, config: Any, adapter_name: str, module_name: str = ""
) -> FourierFTLayer:
    """The ``MethodSpec.layer_factory`` of FourierFT; corrects ``fan_in_fan_out`` to the layer's layout as PEFT does."""
    if description.kind != LINEAR:
        raise TargetModulesError(
            f"FourierFT cannot adapt {module_name!r} ({description.kind}); it adapts nn.Linear and Conv1D layers."
        )
    if description.fan_in_fan_out != config.fan_in_fan_out:
        layout = "Conv1D (stored (in, out))" if description.fan_in_fan_out else "nn.Linear"
        warnings.warn(f"target {module_name!r} is a {layout} layer; "
                      f"setting fan_in_fan_out={description.fan_in_fan_out}.",
                      UserWarning, stacklevel=2)
        config.fan_in_fan_out = description.fan_in_fan_out
    layer = FourierFTLayer(target, description)
    layer.update_layer(adapter_name, config, module_name=module_name)
    return layer
