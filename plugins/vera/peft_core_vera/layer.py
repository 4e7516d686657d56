"""The VeRA layer: two trained vectors scale slices of the adapter's shared frozen projections.

For a layer with ``in`` inputs and ``out`` outputs the change is
``ΔW = diag(λ_b) · B[:out] · diag(λ_d) · A[:, :in]`` (canonical ``(out, in)`` layout), and the
forward adds ``λ_b ⊙ B[:out] (λ_d ⊙ A[:, :in] dropout(x))``. ``A`` and ``B`` are not the layer's:
they live once per adapter in the tuner's :class:`~peft_core.shared.SharedTensors`, which the
layer reaches through ``shared_tensors`` (a plain reference, so the state dict holds them once).
Merging is additive, so the core's default merge protocol applies; ``Conv1D`` needs nothing
special because the core reads and writes its weight in the canonical layout.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from peft_core.errors import TargetModulesError
from peft_core.layer import AdapterLayer
from peft_core.shared import SharedTensors
from peft_core.weights import LINEAR, LayerDescription


class VeraLinear(AdapterLayer):
    """VeRA on ``nn.Linear`` and transformers ``Conv1D``."""

    method = "VERA"
    adapter_layer_names = ("vera_lambda_b", "vera_lambda_d", "vera_dropout")
    other_param_names = ("r",)

    def __init__(self, base_layer: nn.Module, description: LayerDescription) -> None:
        super().__init__(base_layer, description)
        self.vera_lambda_b = nn.ParameterDict()
        self.vera_lambda_d = nn.ParameterDict()
        self.vera_dropout = nn.ModuleDict()
        self.__dict__["shared_tensors"] = None  # set by init_shared; not a submodule (held once, by the tuner)

    def update_layer(self, adapter_name: str, config: Any, **kwargs: Any) -> None:
        self.r[adapter_name] = config.r
        self.vera_dropout[adapter_name] = nn.Dropout(config.vera_dropout) if config.vera_dropout > 0 else nn.Identity()
        lambda_b = torch.ones(self.description.out_features)
        lambda_d = torch.randn(config.r)  # drawn even when reset below: a seed leaves the RNG where PEFT leaves it
        if config.init_weights:
            lambda_b.zero_()
            lambda_d.fill_(config.d_initial)
        self.vera_lambda_b[adapter_name] = nn.Parameter(lambda_b)
        self.vera_lambda_d[adapter_name] = nn.Parameter(lambda_d)

    def attach_projections(self, store: SharedTensors) -> None:
        self.__dict__["shared_tensors"] = store

    def projections(self, adapter_name: str, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """This layer's slices ``A[:, :in]`` and ``B[:out]`` of the adapter's shared projections."""
        store = self.shared_tensors
        if store is None:
            raise TargetModulesError("this VeRA layer was built outside a tuner and has no projections; "
                                     "add VeRA adapters with get_peft_model or add_adapter.")
        d = self.description
        vera_a = store.get("vera_A", adapter_name)[:, : d.in_features]
        vera_b = store.get("vera_B", adapter_name)[: d.out_features, :]
        return vera_a.to(device=device, dtype=dtype), vera_b.to(device=device, dtype=dtype)

    def apply_adapter(self, x: torch.Tensor, result: torch.Tensor, adapter_name: str) -> torch.Tensor:
        lambda_d, lambda_b = self.vera_lambda_d[adapter_name], self.vera_lambda_b[adapter_name]
        vera_a, vera_b = self.projections(adapter_name, lambda_d.dtype, x.device)
        h = self.vera_dropout[adapter_name](x.to(lambda_d.dtype))
        return (result + lambda_b * F.linear(lambda_d * F.linear(h, vera_a), vera_b)).to(result.dtype)

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        lambda_d = self.vera_lambda_d[adapter_name].detach()
        lambda_b = self.vera_lambda_b[adapter_name].detach()
        # half-precision matmuls are slow and lossy on CPU: compute the delta in fp32 there
        dtype = torch.float32 if lambda_d.dtype in (torch.float16, torch.bfloat16) else lambda_d.dtype
        vera_a, vera_b = self.projections(adapter_name, dtype, lambda_d.device)
        return (lambda_b.to(dtype).unsqueeze(-1) * vera_b) @ (lambda_d.to(dtype).unsqueeze(-1) * vera_a)


def create_vera_layer(
    target: nn.Module, description: LayerDescription, config: Any, adapter_name: str, module_name: str = ""
) -> VeraLinear:
    """The ``MethodSpec.layer_factory`` of VeRA; keeps ``fan_in_fan_out`` truthful as PEFT does."""
    if description.kind != LINEAR:
        raise TargetModulesError(f"VeRA cannot adapt {module_name!r} ({description.kind}); it adapts linear layers "
                                 "(nn.Linear and transformers' Conv1D).")
    if description.fan_in_fan_out != config.fan_in_fan_out:
        layout = "Conv1D (stored (in, out))" if description.fan_in_fan_out else "nn.Linear"
        warnings.warn(f"target {module_name!r} is a {layout} layer; setting fan_in_fan_out={description.fan_in_fan_out}.",
                      UserWarning, stacklevel=2)
        config.fan_in_fan_out = description.fan_in_fan_out
    layer = VeraLinear(target, description)
    layer.update_layer(adapter_name, config, module_name=module_name)
    return layer
