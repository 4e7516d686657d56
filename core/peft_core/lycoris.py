"""Building blocks shared by the LyCORIS-family plugins (LoHa, LoKr, …).

These methods all describe a weight *delta* through small factors — a Hadamard product of
two low-rank pairs (LoHa), a Kronecker product (LoKr), optionally with a Tucker core over
a convolution's kernel ("effective conv2d", FedPara's Proposition 3) — and run it next to
the frozen base layer: ``base(x) + conv_or_linear(x, ΔW)``. What they share lives here:

* :class:`LycorisConfig` — the fields every LyCORIS config has, validated once;
* :class:`LycorisLayer` — an :class:`~peft_core.layer.AdapterLayer` that owns rank/alpha
  bookkeeping, rank and module dropout, running the delta as a linear/conv op, and
  merging; a method only says which tensors it creates and how they multiply out;
* the factor algebra: :func:`hadamard_product`, :func:`tucker_rebuild`,
  :func:`kronecker_product`, :func:`factorization`;
* the dropout helpers :func:`rank_dropout_mask` and :func:`module_dropped`.

Numerical conventions follow Hugging Face PEFT (``peft==0.21.2``) so that adapters saved
by either library mean the same thing in the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from .config import PeftConfig
from .errors import ConfigError, TargetModulesError
from .layer import AdapterLayer
from .lowrank import check_dropout, check_positive_int
from .targeting import check_target_fields, pattern_value
from .weights import CONV, LINEAR, LayerDescription

#: Modules LyCORIS methods adapt when ``target_modules`` is not given, by ``model.config.model_type``
#: (the table Hugging Face PEFT uses for LoHa and LoKr).
DEFAULT_TARGET_MODULES: dict[str, Any] = {
    **dict.fromkeys(
        ["bart", "opt", "gptj", "gpt_neo", "llama", "llama4", "mistral", "mixtral", "stablelm", "gemma", "gemma2",
         "gemma3_text", "qwen2", "qwen3"],
        ["q_proj", "v_proj"],
    ),
    **dict.fromkeys(["t5", "mt5"], ["q", "v"]),
    **dict.fromkeys(["bert", "roberta", "xlm-roberta", "electra", "layoutlm"], ["query", "value"]),
    **dict.fromkeys(["gpt2", "gpt_bigcode"], ["c_attn"]),
    **dict.fromkeys(["bloom", "gpt_neox", "chatglm", "RefinedWebModel", "RefinedWeb", "falcon"], ["query_key_value"]),
    "blip-2": ["q", "v", "q_proj", "v_proj"],
    "deberta-v2": ["query_proj", "value_proj"],
    "deberta": ["in_proj"],
    "mpt": ["Wqkv"],
    "btlm": ["c_proj", "c_attn"],
    "codegen": ["qkv_proj"],
    "phi": ["q_proj", "v_proj", "fc1", "fc2"],
    "gemma4": r".*language_model\..*\.(q_proj|v_proj)",
    "nemotron_h": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "rwkv": ["key", "value", "receptance", "output"],
    "rwkv7": ["r_proj", "k_proj", "v_proj", "o_proj", "key", "value"],
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class LycorisConfig(PeftConfig):
    """Fields every LyCORIS method's config has, with PEFT's names and defaults.

    ``r``/``alpha`` give the scaling ``alpha / r``; ``rank_pattern``/``alpha_pattern`` override
    them per module (keys match a module name or its dotted suffix). ``rank_dropout`` zeroes
    output rows of the delta and ``module_dropout`` skips the whole adapter, both only in
    training. ``use_effective_conv2d`` factors convolution kernels through a Tucker core.
    """

    rank_pattern: Optional[dict] = field(default_factory=dict)
    alpha_pattern: Optional[dict] = field(default_factory=dict)
    r: int = 8
    alpha: float = 8  # PEFT annotates int but accepts any number; float keeps 12.5 loadable
    rank_dropout: float = 0.0
    module_dropout: float = 0.0
    use_effective_conv2d: bool = False
    target_modules: Optional[Union[list[str], str]] = None
    exclude_modules: Optional[Union[list[str], str]] = None
    init_weights: bool = True
    layers_to_transform: Optional[Union[list[int], int]] = None
    layers_pattern: Optional[Union[list[str], str]] = None
    modules_to_save: Optional[list[str]] = None

    supported_layer_kinds: ClassVar[tuple[str, ...]] = (LINEAR, CONV)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_target_fields(self)
        check_positive_int("r", self.r)
        if not _is_number(self.alpha):
            raise ConfigError(f"alpha must be a number (the scaling is alpha / r), got {self.alpha!r}.")
        check_dropout("rank_dropout", self.rank_dropout)
        check_dropout("module_dropout", self.module_dropout)
        if not isinstance(self.use_effective_conv2d, bool):
            raise ConfigError(f"use_effective_conv2d must be True or False, got {self.use_effective_conv2d!r}.")
        for name in ("rank_pattern", "alpha_pattern"):
            pattern = getattr(self, name)
            if pattern is None:
                setattr(self, name, {})
            elif not isinstance(pattern, dict):
                raise ConfigError(f"{name} must be a dict of module-name pattern -> value, got {pattern!r}.")
        for key, r in self.rank_pattern.items():
            check_positive_int(f"rank_pattern[{key!r}]", r)
        for key, alpha in self.alpha_pattern.items():
            if not _is_number(alpha):
                raise ConfigError(f"alpha_pattern[{key!r}] must be a number, got {alpha!r}.")

    def default_target_modules(self, model_type: str | None) -> Any:
        return DEFAULT_TARGET_MODULES.get(model_type or "")


# -- factor algebra -----------------------------------------------------------------------


def hadamard_product(w1a: torch.Tensor, w1b: torch.Tensor, w2a: torch.Tensor, w2b: torch.Tensor,
                     scale: float) -> torch.Tensor:
    """``(w1a @ w1b) ⊙ (w2a @ w2b) · scale``: two rank-``r`` matrices whose product has rank up to ``r²``."""
    return (w1a @ w1b) * (w2a @ w2b) * torch.tensor(scale)


def tucker_rebuild(core: torch.Tensor, out_factor: torch.Tensor, in_factor: torch.Tensor) -> torch.Tensor:
    """A conv kernel ``(out, in, kh, kw)`` from a Tucker core ``(r, r, kh, kw)`` and mode factors.

    ``out_factor`` is ``(r, out)`` and ``in_factor`` ``(r, in)`` (rank first, the layout PEFT
    saves as ``hada_w*_a``/``hada_w*_b`` and ``lokr_w2_a``/``lokr_w2_b``).
    """
    return torch.einsum("abkl,ao,bi->oikl", core, out_factor, in_factor)


def kronecker_product(w1: torch.Tensor, w2: torch.Tensor, scale: float) -> torch.Tensor:
    """``kron(w1, w2) · scale``; a 4-D ``w2`` (conv kernel) gets ``w1`` lifted to ``(a, c, 1, 1)``.

    For a 3-D ``w2`` (a Conv1d kernel) ``w1`` is left 2-D and ``torch.kron`` pads it in front,
    as PEFT does; the reshape to the weight shape then gives the same delta PEFT builds.
    ``w2`` is copied to canonical strides first: a Tucker rebuild of a Conv1d kernel ``(b, d, k, 1)``
    can carry a stride on its size-1 axis that ``torch.kron`` cannot view (PEFT fails there).
    """
    if w2.dim() == 4:
        w1 = w1[:, :, None, None]
    return torch.kron(w1, w2.clone(memory_format=torch.contiguous_format)) * scale


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """Split ``dimension`` into ``(m, n)`` with ``m · n = dimension``, the split PEFT's LoKr picks.

    A positive ``factor`` that divides ``dimension`` is used as is: ``(factor, dimension //
    factor)``, in that order. Otherwise the divisors of ``dimension`` no larger than ``factor``
    (all of them for ``-1``) are tried from small to large, stopping at the first one that
    reaches ``√dimension``; the result is sorted (smaller first). ``factorization(128) == (8, 16)``,
    ``factorization(127) == (1, 127)``, ``factorization(128, 4) == (4, 32)``.
    """
    if factor > 0 and dimension % factor == 0:
        return factor, dimension // factor
    limit = dimension if factor == -1 else factor
    best = 1
    for m in range(2, dimension + 1):
        if dimension % m:
            continue
        if m > limit:
            break
        best = m
        if m * m >= dimension:
            break
    other = dimension // best
    return (best, other) if best <= other else (other, best)


# -- dropout ------------------------------------------------------------------------------


def rank_dropout_mask(rows: int, p: float, rescale: bool, like: torch.Tensor) -> torch.Tensor:
    """A ``(rows, 1, …)`` 0/1 mask keeping each output row of a delta with probability ``1 - p``.

    With ``rescale`` the mask is divided by its mean so the expected delta is unchanged (LoHa
    always rescales, LoKr only with ``rank_dropout_scale``). A mask that drops every row stays
    all zeros instead of dividing by zero.
    """
    keep = (torch.rand(rows) > p).to(like.dtype)
    if rescale:
        mean = keep.mean()
        keep = keep / mean if mean > 0 else keep
    return keep.view(-1, *[1] * (like.dim() - 1)).to(like.device)


def module_dropped(p: float, training: bool) -> bool:
    """Whether LyCORIS module dropout skips an adapter for this forward (never outside training).

    A draw is made in every training forward, even with ``p == 0``, as PEFT does, so seeded
    training runs consume the global RNG the same way.
    """
    return training and not bool(torch.rand(1) > p)


# -- the layer ----------------------------------------------------------------------------


_CONV_OPS = {1: F.conv1d, 2: F.conv2d}  # Conv3d is refused in LycorisLayer.__init__, as PEFT refuses it


class LycorisLayer(AdapterLayer):
    """An additive-delta adapter layer: ``result + op(x, ΔW)``, ``op`` the base's linear/conv.

    Subclasses list their tensors in ``adapter_layer_names`` (all ``nn.ParameterDict``s,
    created here), and implement :meth:`create_parameters` (shapes and init of one adapter)
    and :meth:`factor_delta` (the scaled delta from the factors, any shape with the weight's
    number of elements). Everything else — patterns, scaling, dropout, running the delta,
    merging through the weight hooks — is shared.
    """

    other_param_names = ("r", "alpha", "scaling", "rank_dropout", "rank_dropout_scale", "module_dropout")
    #: whether rank dropout divides the kept rows by their fraction (LoKr makes this a config field)
    rescales_rank_dropout: ClassVar[bool] = True

    def __init__(self, base_layer: nn.Module, description: LayerDescription) -> None:
        super().__init__(base_layer, description)
        if description.kind == CONV and description.conv_dim not in (1, 2):
            raise TargetModulesError(
                f"{self.method} adapts Linear, Conv1d and Conv2d layers, not {description.conv_dim}-d convolutions; "
                "leave this module out of target_modules."
            )
        for attr in self.adapter_layer_names:
            setattr(self, attr, nn.ParameterDict())

    # -- to implement ---------------------------------------------------------------------

    def create_parameters(self, adapter_name: str, r: int, config: Any) -> None:
        """Create (and initialise, following ``config.init_weights``) the tensors of one adapter."""
        raise NotImplementedError

    def factor_delta(self, adapter_name: str) -> torch.Tensor:
        """The scaled delta built from the factors; reshaped to :attr:`weight_shape` by the caller."""
        raise NotImplementedError

    # -- shapes ---------------------------------------------------------------------------

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """The canonical ``(out, in / groups, *kernel)`` shape of the base weight."""
        d = self.description
        groups = d.extra.get("groups", 1) if d.kind == CONV else 1
        return (d.out_features, d.in_features // groups, *d.kernel_size)

    def uses_tucker(self, config: Any) -> bool:
        """Effective conv2d only pays off with a real kernel; 1×1 (or size-1) kernels stay flat, as in PEFT."""
        kernel = self.description.kernel_size
        return bool(config.use_effective_conv2d) and bool(kernel) and any(k != 1 for k in kernel)

    def tucker_kernel(self) -> tuple[int, int]:
        """The Tucker core's spatial shape: a Conv1d kernel ``(k,)`` is held as ``(k, 1)``."""
        kernel = self.description.kernel_size
        return (kernel[0], 1) if len(kernel) == 1 else (kernel[0], kernel[1])

    def new_parameter(self, *shape: int) -> nn.Parameter:
        return nn.Parameter(torch.empty(*shape, device=self.description.device))

    # -- bookkeeping ----------------------------------------------------------------------

    @property
    def adapter_names(self) -> list[str]:
        """Adapters this layer holds: LoKr's containers are filled selectively, so look in all of them."""
        names: dict[str, None] = {}
        for attr in self.adapter_layer_names:
            names.update(dict.fromkeys(getattr(self, attr).keys()))
        return list(names)

    def update_layer(self, adapter_name: str, config: Any, module_name: str = "", **kwargs: Any) -> None:
        r = pattern_value(config.rank_pattern or {}, module_name, config.r)
        alpha = pattern_value(config.alpha_pattern or {}, module_name, config.alpha)
        check_positive_int(f"the rank of {module_name!r}", r)
        self.r[adapter_name] = r
        self.alpha[adapter_name] = alpha
        self.scaling[adapter_name] = alpha / r
        self.rank_dropout[adapter_name] = config.rank_dropout
        self.rank_dropout_scale[adapter_name] = getattr(config, "rank_dropout_scale", self.rescales_rank_dropout)
        self.module_dropout[adapter_name] = config.module_dropout
        self.create_parameters(adapter_name, r, config)

    def set_scale(self, adapter_name: str, scale: float) -> None:
        """Set the scaling to ``scale`` times its configured ``alpha / r`` (rescaling helpers use this)."""
        if adapter_name in self.r:
            self.scaling[adapter_name] = scale * self.alpha[adapter_name] / self.r[adapter_name]

    # -- delta, forward -------------------------------------------------------------------

    def get_delta_weight(self, adapter_name: str, apply_rank_dropout: bool = False) -> torch.Tensor:
        """The adapter's ``(out, in / groups, *kernel)`` delta; rank dropout only when asked (training)."""
        delta = self.factor_delta(adapter_name).reshape(self.weight_shape)
        p = self.rank_dropout[adapter_name]
        if apply_rank_dropout and p > 0:
            delta = delta * rank_dropout_mask(delta.shape[0], p, self.rank_dropout_scale[adapter_name], delta)
        return delta

    def run_delta(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """``x`` through the base layer's operation with ``delta`` as the weight and no bias."""
        d = self.description
        if d.kind == LINEAR:
            return F.linear(x, delta)
        extra = d.extra
        return _CONV_OPS[d.conv_dim](x, delta, stride=extra.get("stride", 1), padding=extra.get("padding", 0),
                                     dilation=extra.get("dilation", 1), groups=extra.get("groups", 1))

    def apply_adapter(self, x: torch.Tensor, result: torch.Tensor, adapter_name: str) -> torch.Tensor:
        if module_dropped(self.module_dropout[adapter_name], self.training):
            return result
        delta = self.get_delta_weight(adapter_name, apply_rank_dropout=self.training)
        # added in the wider of the two dtypes, then rounded once (an fp32 adapter over a bf16 base)
        return (result + self.run_delta(x.to(delta.dtype), delta)).to(result.dtype)


def kaiming(*params: torch.Tensor) -> None:
    """PEFT's default LyCORIS init for each tensor: Kaiming-uniform with ``a = √5`` (in the order given)."""
    for param in params:
        nn.init.kaiming_uniform_(param, a=math.sqrt(5))


# -- conformance --------------------------------------------------------------------------

#: leaf names a LyCORIS method can target in each tiny model of ``peft_core.conformance.models``
#: (the MLP's ``lin1`` is kept for ``modules_to_save``; GPT-2's Conv1D goes beyond PEFT)
CONFORMANCE_TARGETS = {
    "mlp": ["lin0", "conv1d"],
    "convnet": ["conv0", "conv1", "head"],
    "tiny_llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "tiny_gpt2": ["c_attn", "c_proj", "c_fc"],
    "tiny_bert": ["query", "key", "value"],
}
_TASK_TYPES = {"tiny_llama": [None, "CAUSAL_LM"], "tiny_bert": [None, "SEQ_CLS"]}
#: always targeted: with tiny random init, changing only queries/keys moves the loss less than fp32 resolves
_ALWAYS = {"tiny_llama": {"v_proj"}, "tiny_bert": {"value"}}


def conformance_configs(st: Any, kind: str, config_class: type, method_fields: Any) -> Any:
    """A Hypothesis strategy of valid LyCORIS configs for model ``kind``.

    The shared fields (targets, rank and alpha with their patterns, dropouts, effective
    conv2d, layer selection, task type, modules to save) are drawn here; ``method_fields(draw)``
    adds the method's own (``init_weights``, LoKr's decomposition options).
    """
    from .conformance.strategies import model_kind_fields  # imports hypothesis: only when asked

    names = CONFORMANCE_TARGETS[kind]

    @st.composite
    def build(draw: Any) -> Any:
        targets = sorted(draw(st.sets(st.sampled_from(names), min_size=1, max_size=len(names)))
                         | _ALWAYS.get(kind, set()))
        fields: dict[str, Any] = {}
        if kind == "tiny_llama" and draw(st.booleans()):
            fields["layers_to_transform"] = draw(st.sampled_from([0, [1], [0, 1]]))
        if draw(st.booleans()):
            fields["rank_pattern"] = {targets[0]: draw(st.integers(1, 6))}
        if draw(st.booleans()):
            fields["alpha_pattern"] = {targets[-1]: draw(st.sampled_from([1, 4.5, 16]))}
        fields.update(model_kind_fields(draw, kind, _TASK_TYPES))
        fields.pop("fan_in_fan_out", None)  # LyCORIS configs have no such field: Conv1D is described as it is
        return config_class(
            target_modules=targets,
            r=draw(st.integers(1, 6)),
            alpha=draw(st.sampled_from([1, 4, 8, 12.5])),
            rank_dropout=draw(st.sampled_from([0.0, 0.0, 0.3])),
            module_dropout=draw(st.sampled_from([0.0, 0.0, 0.5])),
            use_effective_conv2d=draw(st.booleans()),
            **fields,
            **method_fields(draw),
        )

    return build()


#: config arguments every LyCORIS config must refuse
INVALID_FIELDS: list[dict[str, Any]] = [
    {"r": 0},
    {"r": -2},
    {"r": 2.5},
    {"r": True},
    {"alpha": "big"},
    {"rank_dropout": 1.0},
    {"module_dropout": -0.1},
    {"use_effective_conv2d": "yes"},
    {"rank_pattern": {"q_proj": 0}},
    {"rank_pattern": ["q_proj"]},
    {"alpha_pattern": {"q_proj": None}},
    {"target_modules": r".*lin0", "layers_to_transform": [0]},
    {"target_modules": ["lin0"], "layers_pattern": "layers"},
    {"task_type": "NOT_A_TASK"},
    {"target_modules": ["emb"]},
]
