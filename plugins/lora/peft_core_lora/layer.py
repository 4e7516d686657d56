"""LoRA layers: ``result + (alpha / r) · B(A(dropout(x)))``, readable in one screen each.

Everything about adapter bookkeeping, merging and mixed batches is inherited from
:class:`peft_core.layer.AdapterLayer`; a LoRA layer only says how its two factors are
built, applied, and multiplied into a weight delta (canonical ``(out, in, *kernel)``
layout, so Conv1D's transposed storage is the weight hook's business, not ours).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from peft_core.errors import ConfigError, TargetModulesError, UnsupportedOperation
from peft_core.layer import AdapterLayer
from peft_core.modules import (autocast_enabled, calls_forward_directly, module_dict, new_module, set_child,
                               set_parameter)
from peft_core.targeting import pattern_value
from peft_core.weights import CONV, EMBEDDING, LINEAR, LayerDescription


class LoraLayer(AdapterLayer):
    """What every LoRA layer shares: rank, alpha, scaling, dropout, init, variants."""

    method = "LORA"
    other_param_names = ("r", "lora_alpha", "scaling", "use_rslora", "lora_dropout", "lora_variant")

    #: per-token weights of each adapter's low-rank path (``hookspecs.TokenWeights``; X-LoRA sets one)
    token_weights: Any = None
    #: the layer's path in the model, for variants that depend on it (block-diagonal LoRA matches names)
    module_name: str = ""

    def __init__(self, base_layer: nn.Module, description: LayerDescription) -> None:
        super().__init__(base_layer, description)
        self.lora_dropout = module_dict()  # setattr: it replaces the plain dict other_param_names made

    def set_token_weights(self, provider: Any) -> None:
        """Install a :class:`~peft_core_lora.hookspecs.TokenWeights` provider (``None`` removes it).

        Kept out of the module tree (a provider may hold modules of its own, like X-LoRA's
        classifier, which must not be saved or moved as part of this layer).
        """
        self.__dict__["token_weights"] = provider

    def _token_weighted(self, hidden: torch.Tensor, adapter_name: str, x: torch.Tensor) -> torch.Tensor:
        weight = self.token_weights(self, adapter_name, x)
        return hidden if weight is None else hidden * weight

    def update_layer(self, adapter_name: str, config: Any, module_name: str = "", **kwargs: Any) -> None:
        if module_name:
            self.__dict__["module_name"] = module_name
        r = pattern_value(config.rank_pattern or {}, module_name, config.r)
        alpha = pattern_value(config.alpha_pattern or {}, module_name, config.lora_alpha)
        self.r[adapter_name] = r
        self.lora_alpha[adapter_name] = alpha
        self.use_rslora[adapter_name] = config.use_rslora
        self.scaling[adapter_name] = alpha / math.sqrt(r) if config.use_rslora else alpha / r
        p = config.lora_dropout
        dropout = new_module(nn.Dropout, p=float(p), inplace=False) if p > 0 else new_module(nn.Identity)
        set_child(self._modules["lora_dropout"], adapter_name, dropout)
        self.create_factors(adapter_name, r, config)
        self.reset_lora_parameters(adapter_name, config.init_lora_weights, config)
        from .plugin import variant_for

        variant = variant_for(config, self.description.kind)
        if variant is not None:
            variant.init(self, adapter_name, config)
            self.lora_variant[adapter_name] = variant
            # a variant's own per-adapter containers are saved, placed, trained and deleted like LoRA's
            extra = tuple(n for n in getattr(variant, "adapter_layer_names", ()) if n not in self.adapter_layer_names)
            if extra:
                self.__dict__["adapter_layer_names"] = (*self.adapter_layer_names, *extra)

    def create_factors(self, adapter_name: str, r: int, config: Any) -> None:
        raise NotImplementedError

    def reset_lora_parameters(self, adapter_name: str, init: bool | str, config: Any = None) -> None:
        if init is False:
            return
        if isinstance(init, str) and init != "gaussian":  # served by an extension plugin (PiSSA, EVA, …)
            from peft_core.plugins import hook

            if not hook().peft_core_lora_init(layer=self, adapter_name=adapter_name, config=config, init=init):
                raise ConfigError(f"init_lora_weights={init!r}: no installed plugin initialises it for this layer.")
            return
        self.default_init(adapter_name, init)

    def default_init(self, adapter_name: str, init: bool | str) -> None:
        """LoRA's own initialisations: ``True`` (Kaiming A, zero B) and ``"gaussian"``."""
        children = self._modules
        A, B = children["lora_A"][adapter_name], children["lora_B"][adapter_name]
        if init is True and A.weight.dim() == 2 and type(A.weight) is nn.Parameter:
            # the same draw, without kaiming_uniform_'s per-call lookups; detached views write the
            # parameters' storage without the cost of entering no_grad (thousands of layers)
            _kaiming_a_sqrt5_(A.weight.detach())
        elif init is True:
            nn.init.kaiming_uniform_(A.weight, a=math.sqrt(5))
        else:  # "gaussian"
            nn.init.normal_(A.weight, std=1 / self.r[adapter_name])
        B.weight.detach().zero_()
        if B.bias is not None:
            B.bias.detach().zero_()

    def set_scale(self, adapter_name: str, scale: float) -> None:
        """Set the scaling to ``scale`` times its configured value (rescaling helpers use this)."""
        r, alpha = self.r[adapter_name], self.lora_alpha[adapter_name]
        base = alpha / math.sqrt(r) if self.use_rslora[adapter_name] else alpha / r
        self.scaling[adapter_name] = scale * base

    def apply_adapter(self, x: torch.Tensor, result: torch.Tensor, adapter_name: str) -> torch.Tensor:
        variant = self.lora_variant.get(adapter_name)
        if variant is not None:
            if self.token_weights is not None:
                raise UnsupportedOperation(f"per-token adapter weights (X-LoRA) do not apply to the LoRA variant of "
                                           f"adapter {adapter_name!r} ({type(variant).__name__}); use plain LoRA adapters.")
            return variant.apply(self, adapter_name, x, result)
        A, B = self.lora_A[adapter_name], self.lora_B[adapter_name]
        x = x.to(A.weight.dtype)
        if self.token_weights is not None:
            x = self._token_weighted(x, adapter_name, x)
        return result + (B(A(self.lora_dropout[adapter_name](x))) * self.scaling[adapter_name]).to(result.dtype)

    def get_delta_bias(self, adapter_name: str) -> torch.Tensor | None:
        bias = self.lora_B[adapter_name].bias
        return None if bias is None else bias * self.scaling[adapter_name]

    def merged_weight(self, weight: torch.Tensor, adapter_name: str) -> torch.Tensor:
        variant = self.lora_variant.get(adapter_name)
        if variant is not None:
            return variant.merged_weight(self, adapter_name, weight)
        return super().merged_weight(weight, adapter_name)

    def merges_additively(self, adapter_name: str) -> bool:
        return self.lora_variant.get(adapter_name) is None  # a variant (DoRA) may depend on the weight

    def unmerged_weight(self, weight: torch.Tensor, adapter_name: str) -> torch.Tensor:
        variant = self.lora_variant.get(adapter_name)
        if variant is not None:
            return variant.unmerged_weight(self, adapter_name, weight)
        return super().unmerged_weight(weight, adapter_name)


def _linear(in_features: int, out_features: int, bias: bool) -> nn.Linear:
    """``nn.Linear(in_features, out_features, bias)``: the same values, the same global-RNG draws.

    Built without ``nn.Linear.__init__`` and ``kaiming_uniform_``'s per-call bookkeeping
    (fan and gain lookups), which were the largest single cost of injecting into many
    small layers. Keeping the draws identical keeps a seed giving the adapter Hugging Face
    PEFT gives (it builds ``nn.Linear`` factors and then re-initialises them).
    """
    layer = new_module(nn.Linear, in_features=in_features, out_features=out_features)
    weight = torch.empty(out_features, in_features)
    extra = torch.empty(out_features) if bias else None
    _kaiming_a_sqrt5_(weight)
    if extra is not None:  # plain tensors: no autograd to keep out of the way
        bound = 1 / math.sqrt(in_features) if in_features > 0 else 0
        extra.uniform_(-bound, bound)
    set_parameter(layer, "weight", weight)
    set_parameter(layer, "bias", extra)
    return layer


def _kaiming_a_sqrt5_(weight: torch.Tensor) -> None:
    """``nn.init.kaiming_uniform_(weight, a=math.sqrt(5))`` for a 2-d weight: the same bound, the same draw."""
    if not weight.numel():  # kaiming_uniform_ leaves empty tensors alone
        return
    std = math.sqrt(2.0 / (1 + math.sqrt(5) ** 2)) / math.sqrt(weight.shape[1])  # gain for a=√5, fan_in
    if not weight.requires_grad:  # a plain tensor being built: entering no_grad costs more than the draw
        weight.uniform_(-math.sqrt(3.0) * std, math.sqrt(3.0) * std)
        return
    with torch.no_grad():
        weight.uniform_(-math.sqrt(3.0) * std, math.sqrt(3.0) * std)


class LoraLinear(LoraLayer):
    """LoRA on ``nn.Linear``, transformers ``Conv1D`` and quantized linears (via the weight hooks)."""

    adapter_layer_names = ("lora_A", "lora_B")

    def __init__(self, base_layer: nn.Module, description: LayerDescription) -> None:
        super().__init__(base_layer, description)
        set_child(self, "lora_A", module_dict())
        set_child(self, "lora_B", module_dict())

    def create_factors(self, adapter_name: str, r: int, config: Any) -> None:
        d, children = self.description, self._modules
        set_child(children["lora_A"], adapter_name, _linear(d.in_features, r, bias=False))
        set_child(children["lora_B"], adapter_name, _linear(r, d.out_features, bias=config.lora_bias))

    def apply_adapter(self, x: torch.Tensor, result: torch.Tensor, adapter_name: str) -> torch.Tensor:
        """``result + s·B(A(dropout(x)))`` with B's product, the scaling and the sum in one ``addmm``.

        The adapter's own FLOPs are tiny; its cost is memory passes over the full-width
        output. Fusing saves two of them (the scaled copy and the sum), which is most of
        the unmerged-inference overhead. Other cases (factors that are not plain, see
        :meth:`_plain_factors`; mixed dtypes; per-token weights) take the plain path.
        """
        factors = self._plain_factors(adapter_name)
        if (factors is None or result.dtype != factors[0].dtype or self.token_weights is not None
                or not result.is_contiguous() or result.dim() < 1):
            return super().apply_adapter(x, result, adapter_name)
        A, B = factors
        hidden = F.linear(self.lora_dropout[adapter_name](x.to(A.dtype)), A)
        out = torch.addmm(result.reshape(-1, result.shape[-1]), hidden.reshape(-1, hidden.shape[-1]), B.t(),
                          alpha=self.scaling[adapter_name])
        return out.view(result.shape)

    def _plain_factors(self, name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """:meth:`hook_free_factors` of a plain LoRA adapter (no variant); ``None`` for the general path."""
        return None if name in self.lora_variant else self.hook_free_factors(name)

    def hook_free_factors(self, name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """A's and B's weights, when a fused product may use them in place of calling the factors.

        That is when adapter ``name``'s factors are bias-free ``nn.Linear`` modules and they and
        its dropout are modules nobody hooks: a hook on ``lora_A``, ``lora_B`` or the dropout
        must see its call, as it does in PEFT, which calls them. ``None`` otherwise.
        """
        A, B, dropout = self.lora_A[name], self.lora_B[name], self.lora_dropout[name]
        if (type(A) is not nn.Linear or type(B) is not nn.Linear or A.bias is not None or B.bias is not None
                or not (calls_forward_directly(A) and calls_forward_directly(B) and calls_forward_directly(dropout))):
            return None
        return A.weight, B.weight

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        fused = None if args or kwargs else self._fused_forward(x)
        return super().forward(x, *args, **kwargs) if fused is None else fused

    def _fused_forward(self, x: torch.Tensor) -> torch.Tensor | None:
        """``x Wᵀ + b + s·(x Aᵀ) Bᵀ`` with the adapter's product added in place into the base product.

        :meth:`apply_adapter`'s ``addmm`` still copies the base output into a new tensor (as any
        out-of-place sum does): one full-width pass per layer and step, forward and inference
        alike. Computing the base ``nn.Linear`` product here, on the flattened input, gives a
        fresh tensor nothing else holds (autograd keeps the matmul's inputs, not its output),
        so the adapter's product can accumulate into it. The same kernels run as on the plain
        path, so the numbers are the same. Only for the plain case: one active unmerged
        adapter with plain factors (:meth:`_plain_factors`), no per-token weights, an
        ``nn.Linear`` base called without hooks, dropout off, one dtype and no autocast (which
        would hand the in-place sum a product of another dtype); ``None`` sends everything else
        to the general path.
        """
        base, active = self.base_layer, self._active_adapters
        if (len(active) != 1 or self._disable_adapters or self._routing is not None or self.merged_adapters
                or self.token_weights is not None or type(base) is not nn.Linear or x.dim() < 2
                or autocast_enabled(x.device.type)):
            return None
        name = active[0]
        factors, dropout, weight = self._plain_factors(name), self.lora_dropout[name], base.weight
        if (factors is None or not (x.dtype == weight.dtype == factors[0].dtype == factors[1].dtype)
                or (dropout.training and not isinstance(dropout, nn.Identity)) or not calls_forward_directly(base)):
            return None
        A, B = factors
        flat = x.reshape(-1, x.shape[-1])
        out = F.linear(flat, weight, base.bias)
        out.addmm_(F.linear(flat, A), B.t(), alpha=self.scaling[name])
        return out.view(*x.shape[:-1], out.shape[-1])

    def _forward_routed(self, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        """A mixed batch in two batched products when that pays; otherwise rows grouped per adapter."""
        gathered = self._gathered_routed(x, result)
        return super()._forward_routed(x, result) if gathered is None else gathered

    def _gathered_routed(self, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor | None:
        """Every row gathers its own adapter's A and B: ``result + s_row·(x A_rowᵀ) B_rowᵀ`` with ``bmm``.

        Grouping rows costs a few small kernels per adapter and layer (selects, products, a
        copy-back of the output). With rows of at least ``r`` tokens the gathered factors are
        no larger than the activations, so two batched products over all rows are cheaper.
        Rows of ``__base__`` (or of adapters this layer lacks) get a zero scale. Anything else
        unusual (factors that are not plain, see :meth:`_plain_factors`; dropout while training,
        mixed ranks or dtypes) returns ``None`` for the grouped path.
        """
        if x.dim() != 3 or result.dim() != 3 or self.token_weights is not None or self._routing is None:
            return None
        names = self._routing.row_names(x.shape[0])
        present = [n for n in dict.fromkeys(names) if n in self.lora_A]
        if not present:
            return None
        factors = [self._plain_factors(n) for n in present]
        if any(f is None for f in factors):
            return None
        first = factors[0][0]
        if x.shape[1] < first.shape[0]:
            return None
        for (A, B), name in zip(factors, present):
            dropout = self.lora_dropout[name]
            if (A.shape != first.shape or A.dtype != result.dtype or B.dtype != result.dtype
                    or (dropout.training and not isinstance(dropout, nn.Identity))):
                return None
        slot = {n: i for i, n in enumerate(present)}
        rows = torch.tensor([slot.get(n, 0) for n in names], device=x.device)
        scale = torch.tensor([self.scaling[n] if n in slot else 0.0 for n in names], dtype=first.dtype, device=x.device)
        A = torch.stack([a for a, _ in factors]).index_select(0, rows)
        B = torch.stack([b for _, b in factors]).index_select(0, rows)
        hidden = torch.bmm(x.to(first.dtype), A.transpose(1, 2)) * scale.view(-1, 1, 1)
        return torch.baddbmm(result, hidden, B.transpose(1, 2))

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        A, B = self.lora_A[adapter_name].weight, self.lora_B[adapter_name].weight
        return (B @ A) * self.scaling[adapter_name]


class LoraEmbedding(LoraLayer):
    """LoRA on ``nn.Embedding``: A is a lookup table (``lora_embedding_A``), B a projection."""

    adapter_layer_names = ("lora_embedding_A", "lora_embedding_B")

    def __init__(self, base_layer: nn.Module, description: LayerDescription) -> None:
        super().__init__(base_layer, description)
        self.lora_embedding_A, self.lora_embedding_B = nn.ParameterDict(), nn.ParameterDict()

    def create_factors(self, adapter_name: str, r: int, config: Any) -> None:
        if config.lora_bias:
            raise ConfigError("lora_bias=True is not available for embedding layers; exclude them or set lora_bias=False.")
        d = self.description
        self.lora_embedding_A[adapter_name] = nn.Parameter(torch.randn(r, d.in_features))
        self.lora_embedding_B[adapter_name] = nn.Parameter(torch.randn(d.out_features, r))

    def default_init(self, adapter_name: str, init: bool | str) -> None:
        nn.init.zeros_(self.lora_embedding_A[adapter_name])
        nn.init.normal_(self.lora_embedding_B[adapter_name])

    def apply_adapter(self, x: torch.Tensor, result: torch.Tensor, adapter_name: str) -> torch.Tensor:
        variant = self.lora_variant.get(adapter_name)
        if variant is not None:
            return variant.apply(self, adapter_name, x, result)
        base = self.base_layer
        A, B = self.lora_embedding_A[adapter_name], self.lora_embedding_B[adapter_name]
        after_a = F.embedding(x, A.T, base.padding_idx, base.max_norm, base.norm_type, base.scale_grad_by_freq, base.sparse)
        if self.token_weights is not None:
            after_a = self._token_weighted(after_a, adapter_name, x)
        return result + ((after_a @ B.T) * self.scaling[adapter_name]).to(result.dtype)

    def get_delta_bias(self, adapter_name: str) -> torch.Tensor | None:
        return None

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        return (self.lora_embedding_B[adapter_name] @ self.lora_embedding_A[adapter_name]) * self.scaling[adapter_name]


_CONV_BY_DIM = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


class LoraConv(LoraLayer):
    """LoRA on ``nn.Conv1d/2d/3d``: A has the base kernel, B is a 1×…×1 convolution."""

    adapter_layer_names = ("lora_A", "lora_B")

    def __init__(self, base_layer: nn.Module, description: LayerDescription) -> None:
        super().__init__(base_layer, description)
        self.lora_A, self.lora_B = nn.ModuleDict(), nn.ModuleDict()

    def create_factors(self, adapter_name: str, r: int, config: Any) -> None:
        d = self.description
        conv = _CONV_BY_DIM[d.conv_dim]
        if d.extra.get("groups", 1) != 1:
            raise TargetModulesError("LoRA on grouped convolutions (groups > 1) is not supported; exclude those layers.")
        self.lora_A[adapter_name] = conv(d.in_features, r, d.kernel_size, d.extra["stride"], d.extra["padding"], bias=False)
        ones = (1,) * d.conv_dim
        self.lora_B[adapter_name] = conv(r, d.out_features, ones, ones, bias=config.lora_bias)

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        A, B = self.lora_A[adapter_name].weight, self.lora_B[adapter_name].weight
        # B is 1×…×1, so conv(B) ∘ conv(A) is one conv whose kernel mixes A's output channels
        delta = torch.einsum("or,ri...->oi...", B.flatten(1), A)
        return delta * self.scaling[adapter_name]


_LAYERS = {LINEAR: LoraLinear, EMBEDDING: LoraEmbedding, CONV: LoraConv}


def create_lora_layer(
    target: nn.Module, description: LayerDescription, config: Any, adapter_name: str, module_name: str = ""
) -> LoraLayer:
    """The ``MethodSpec.layer_factory`` of LoRA: pick the layer class for the module kind."""
    layer = _LAYERS[description.kind](target, description)
    layer.update_layer(adapter_name, config, module_name=module_name)
    return layer
