"""LoRA layers on every base layer kind: init, scaling, dropout, bias modes, merging, unloading, training."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from peft_core import LoraConfig, MergeError, PeftModel, get_peft_model, get_peft_model_state_dict
from peft_core.layer import AdapterLayer
from peft_core.wrappers import ModulesToSaveWrapper
from peft_core_lora import LoraConv, LoraEmbedding, LoraLinear


class Single(nn.Module):
    """One base layer (``layer``) followed by a fixed head, so there is a non-target module too."""

    def __init__(self, layer: nn.Module, out_dim: int) -> None:
        super().__init__()
        self.layer = layer
        self.pool = isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d))
        self.head = nn.Linear(out_dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layer(x)
        if self.pool:
            h = h.flatten(2).mean(-1)  # conv: (batch, channels, ...) -> (batch, channels)
        return self.head(h)


def _build(kind: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    if kind == "linear":
        return Single(nn.Linear(6, 8), 8), torch.randn(4, 6)
    if kind == "embedding":
        return Single(nn.Embedding(20, 6), 6), torch.randint(0, 20, (4, 5))
    if kind == "conv1d":
        return Single(nn.Conv1d(4, 6, 3, padding=1), 6), torch.randn(2, 4, 7)
    if kind == "conv2d":
        return Single(nn.Conv2d(3, 5, 3, stride=2, padding=1), 5), torch.randn(2, 3, 6, 6)
    if kind == "conv3d":
        return Single(nn.Conv3d(2, 4, (1, 3, 3), padding=(0, 1, 1)), 4), torch.randn(2, 2, 3, 5, 5)
    if kind == "gpt2_conv1d":
        layer = Conv1D(8, 6)  # nf=out, nx=in; weight stored (in, out)
        nn.init.normal_(layer.weight, std=0.2)
        nn.init.normal_(layer.bias, std=0.2)
        return Single(layer, 8), torch.randn(4, 6)
    raise AssertionError(kind)


KINDS = ["linear", "embedding", "conv1d", "conv2d", "conv3d", "gpt2_conv1d"]
LAYER_CLASS = {"linear": LoraLinear, "gpt2_conv1d": LoraLinear, "embedding": LoraEmbedding,
               "conv1d": LoraConv, "conv2d": LoraConv, "conv3d": LoraConv}


def _peft(kind: str, **kwargs):
    model, x = _build(kind)
    base = copy.deepcopy(model)
    kwargs.setdefault("target_modules", ["layer"])
    kwargs.setdefault("r", 2)
    peft_model = get_peft_model(model, LoraConfig(**kwargs))
    return peft_model, base, x


def _randomize(peft_model, std: float = 0.5) -> None:
    """Make the adapters non-trivial (B non-zero) without touching the base."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * std)


def _layer(peft_model) -> AdapterLayer:
    return peft_model.get_base_model().layer


def _base_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# -- init ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("init", [True, "gaussian"])
def test_identity_at_init(kind, init):
    peft_model, base, x = _peft(kind, init_lora_weights=init)
    layer = _layer(peft_model)
    assert type(layer) is LAYER_CLASS[kind]
    torch.testing.assert_close(peft_model(x), base(x), atol=1e-6, rtol=0)
    # the adapter is not a no-op: its A (or embedding B) factor is random
    factors = [p for n, p in layer.named_parameters() if "lora_" in n]
    assert any(p.abs().sum() > 0 for p in factors)


@pytest.mark.parametrize("kind", KINDS)
def test_init_false_is_not_identity(kind):
    peft_model, base, x = _peft(kind, init_lora_weights=False)
    assert (peft_model(x) - base(x)).abs().max() > 1e-4


def test_default_init_distributions():
    peft_model, _, _ = _peft("linear", r=4)
    layer = _layer(peft_model)
    assert torch.all(layer.lora_B["default"].weight == 0)
    bound = 1 / math.sqrt(6)  # kaiming_uniform(a=sqrt(5)) on fan_in 6
    assert layer.lora_A["default"].weight.abs().max() <= bound
    peft_model, _, _ = _peft("embedding", r=4)
    layer = _layer(peft_model)
    assert torch.all(layer.lora_embedding_A["default"] == 0)
    assert layer.lora_embedding_B["default"].abs().sum() > 0


# -- shapes and scaling ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, shapes",
    [
        ("linear", {"lora_A.weight": (2, 6), "lora_B.weight": (8, 2)}),
        ("gpt2_conv1d", {"lora_A.weight": (2, 6), "lora_B.weight": (8, 2)}),
        ("embedding", {"lora_embedding_A": (2, 20), "lora_embedding_B": (6, 2)}),
        ("conv1d", {"lora_A.weight": (2, 4, 3), "lora_B.weight": (6, 2, 1)}),
        ("conv2d", {"lora_A.weight": (2, 3, 3, 3), "lora_B.weight": (5, 2, 1, 1)}),
        ("conv3d", {"lora_A.weight": (2, 2, 1, 3, 3), "lora_B.weight": (4, 2, 1, 1, 1)}),
    ],
)
def test_factor_shapes_in_peft_layout(kind, shapes):
    peft_model, _, _ = _peft(kind)
    state = get_peft_model_state_dict(peft_model)
    assert {k.removeprefix("base_model.model.layer."): tuple(v.shape) for k, v in state.items()} == shapes


@pytest.mark.parametrize("use_rslora", [False, True])
def test_scaling(use_rslora):
    peft_model, base, x = _peft("linear", r=4, lora_alpha=6, use_rslora=use_rslora, init_lora_weights=False)
    layer = _layer(peft_model)
    expected = 6 / math.sqrt(4) if use_rslora else 6 / 4
    assert layer.scaling["default"] == pytest.approx(expected)
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    want = base.layer(x) + (x @ A.T @ B.T) * expected
    torch.testing.assert_close(layer(x), want, atol=1e-6, rtol=0)
    torch.testing.assert_close(layer.get_delta_weight("default"), (B @ A) * expected)


def test_scaling_gpt2_conv1d_delta_is_transposed_on_merge():
    peft_model, base, x = _peft("gpt2_conv1d", init_lora_weights=False, lora_alpha=4)
    layer = _layer(peft_model)
    delta = layer.get_delta_weight("default")
    assert delta.shape == (8, 6)  # canonical (out, in)
    before = layer.base_layer.weight.detach().clone()
    layer.merge()
    torch.testing.assert_close(layer.base_layer.weight.detach(), before + delta.T)  # stored (in, out)


# -- dropout ---------------------------------------------------------------------------------


def test_dropout_only_in_train_mode():
    peft_model, base, x = _peft("linear", lora_dropout=0.5, init_lora_weights=False)
    layer = _layer(peft_model)
    assert isinstance(layer.lora_dropout["default"], nn.Dropout)
    peft_model.eval()
    first, second = layer(x), layer(x)
    torch.testing.assert_close(first, second)
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    torch.testing.assert_close(first, base.layer(x) + (x @ A.T @ B.T) * layer.scaling["default"])
    peft_model.train()
    torch.manual_seed(3)
    outs = [layer(x) for _ in range(4)]
    assert any((o - first).abs().max() > 1e-5 for o in outs)
    assert any((a - b).abs().max() > 1e-5 for a, b in zip(outs, outs[1:]))
    # no dropout configured: an Identity, train and eval agree
    peft_model, _, _ = _peft("linear", init_lora_weights=False)
    layer = _layer(peft_model)
    assert isinstance(layer.lora_dropout["default"], nn.Identity)
    peft_model.train()
    torch.testing.assert_close(layer(x), layer(x))


# -- bias modes ------------------------------------------------------------------------------


def _trainable(peft_model) -> set[str]:
    return {n.removeprefix("base_model.model.") for n, p in peft_model.named_parameters() if p.requires_grad}


def _saved(peft_model) -> set[str]:
    return {k.removeprefix("base_model.model.") for k in get_peft_model_state_dict(peft_model)}


def test_bias_none():
    peft_model, _, _ = _peft("linear")
    lora = {"layer.lora_A.default.weight", "layer.lora_B.default.weight"}
    assert _trainable(peft_model) == lora
    assert _saved(peft_model) == {"layer.lora_A.weight", "layer.lora_B.weight"}


def test_bias_all():
    peft_model, _, _ = _peft("linear", bias="all")
    assert _trainable(peft_model) == {"layer.lora_A.default.weight", "layer.lora_B.default.weight",
                                      "layer.base_layer.bias", "head.bias"}
    assert _saved(peft_model) == {"layer.lora_A.weight", "layer.lora_B.weight", "layer.base_layer.bias", "head.bias"}


def test_bias_lora_only():
    peft_model, _, _ = _peft("linear", bias="lora_only")
    assert _trainable(peft_model) == {"layer.lora_A.default.weight", "layer.lora_B.default.weight", "layer.base_layer.bias"}
    assert _saved(peft_model) == {"layer.lora_A.weight", "layer.lora_B.weight", "layer.base_layer.bias"}


@pytest.mark.parametrize("kind", ["linear", "gpt2_conv1d", "conv2d"])
def test_lora_bias_saved_trained_and_merged(kind):
    peft_model, base, x = _peft(kind, lora_bias=True, init_lora_weights=False)
    assert "layer.lora_B.bias" in _saved(peft_model)
    assert "layer.lora_B.default.bias" in _trainable(peft_model)
    layer = _layer(peft_model)
    with torch.no_grad():
        layer.lora_B["default"].bias.fill_(0.3)
    unmerged = peft_model(x)
    bias_before = layer.base_layer.bias.detach().clone()
    peft_model.merge_adapter()
    torch.testing.assert_close(layer.base_layer.bias.detach(), bias_before + 0.3 * layer.scaling["default"])
    torch.testing.assert_close(peft_model(x), unmerged, atol=1e-5, rtol=0)
    peft_model.unmerge_adapter()
    torch.testing.assert_close(layer.base_layer.bias.detach(), bias_before, atol=1e-6, rtol=0)


def test_lora_bias_on_embedding_is_rejected():
    from peft_core import ConfigError

    with pytest.raises(ConfigError, match="lora_bias=True is not available for embedding"):
        _peft("embedding", lora_bias=True)


# -- merging ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_merge_unmerge_roundtrip(kind):
    peft_model, base, x = _peft(kind, init_lora_weights=False, lora_alpha=3)
    _randomize(peft_model)
    layer = _layer(peft_model)
    weight_before = layer.base_layer.weight.detach().clone()
    unmerged = peft_model(x)
    peft_model.merge_adapter()
    assert layer.merged and layer.merged_adapters == ["default"]
    assert (layer.base_layer.weight - weight_before).abs().max() > 1e-3
    torch.testing.assert_close(peft_model(x), unmerged, atol=1e-5, rtol=1e-5)
    peft_model.merge_adapter()  # merging twice is a no-op
    torch.testing.assert_close(peft_model(x), unmerged, atol=1e-5, rtol=1e-5)
    peft_model.unmerge_adapter()
    assert not layer.merged
    torch.testing.assert_close(layer.base_layer.weight.detach(), weight_before, atol=1e-6, rtol=0)
    torch.testing.assert_close(peft_model(x), unmerged, atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", ["linear", "embedding", "conv2d"])
def test_safe_merge_with_nan_adapter_leaves_weights_untouched(kind):
    peft_model, base, x = _peft(kind, init_lora_weights=False)
    layer = _layer(peft_model)
    name = next(n for n, _ in layer.named_parameters() if "lora_" in n and n.split(".")[0].endswith("A"))
    with torch.no_grad():
        dict(layer.named_parameters())[name].view(-1)[0] = float("nan")
    before = _base_state(peft_model.get_base_model())
    with pytest.raises(MergeError, match="NaN") as info:
        peft_model.merge_adapter(safe_merge=True)
    assert "layer" in str(info.value)
    with pytest.raises(MergeError, match="NaN"):
        peft_model.merge_and_unload(safe_merge=True)
    assert not layer.merged
    after = _base_state(peft_model.get_base_model())
    assert after.keys() == before.keys()
    for key in before:
        assert torch.equal(after[key], before[key]) or (before[key].isnan() == after[key].isnan()).all() and torch.equal(
            after[key].nan_to_num(), before[key].nan_to_num()), key
    assert isinstance(peft_model.get_base_model().layer, AdapterLayer)  # merge_and_unload did not unload


@pytest.mark.parametrize("kind", KINDS)
def test_merge_and_unload(kind):
    peft_model, base, x = _peft(kind, init_lora_weights=False)
    _randomize(peft_model)
    expected = peft_model(x)
    merged = peft_model.merge_and_unload()
    assert not any(isinstance(m, (AdapterLayer, ModulesToSaveWrapper)) for m in merged.modules())
    assert type(merged.layer) is type(base.layer)
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(merged(x), expected, atol=1e-5, rtol=1e-5)
    assert set(merged.state_dict()) == set(base.state_dict())


@pytest.mark.parametrize("merge_first", [False, True])
def test_unload_returns_base_exactly(merge_first):
    peft_model, base, x = _peft("conv2d", init_lora_weights=False)
    _randomize(peft_model)
    if merge_first:
        peft_model.merge_adapter()
    plain = peft_model.unload()
    assert not any(isinstance(m, AdapterLayer) for m in plain.modules())
    state, want = plain.state_dict(), base.state_dict()
    assert set(state) == set(want)
    for key in want:
        torch.testing.assert_close(state[key], want[key], atol=1e-6 if merge_first else 0, rtol=0)
    torch.testing.assert_close(plain(x), base(x), atol=1e-5 if merge_first else 0, rtol=0)


# -- disabling -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["linear", "embedding", "conv3d", "gpt2_conv1d"])
def test_disable_adapter_context(kind):
    peft_model, base, x = _peft(kind, init_lora_weights=False)
    adapted = peft_model(x)
    with peft_model.disable_adapter():
        torch.testing.assert_close(peft_model(x), base(x), atol=0, rtol=0)
    torch.testing.assert_close(peft_model(x), adapted)
    # disabling while merged unmerges, and gives base output
    peft_model.merge_adapter()
    with peft_model.disable_adapter():
        torch.testing.assert_close(peft_model(x), base(x), atol=1e-5, rtol=0)
    torch.testing.assert_close(peft_model(x), adapted, atol=1e-5, rtol=0)


# -- parameters and training -----------------------------------------------------------------


def test_trainable_parameter_counts(capsys):
    peft_model, base, _ = _peft("linear", r=4)
    total = sum(p.numel() for p in base.parameters()) + 4 * (6 + 8)
    assert peft_model.get_nb_trainable_parameters() == (4 * (6 + 8), total)
    peft_model.print_trainable_parameters()
    out = capsys.readouterr().out.strip()
    assert out == f"trainable params: 56 || all params: {total:,d} || trainable%: {100 * 56 / total:.4f}"
    peft_model, base, _ = _peft("conv2d", r=2, bias="lora_only")
    lora = 2 * 3 * 3 * 3 + 5 * 2
    assert peft_model.get_nb_trainable_parameters() == (lora + 5, sum(p.numel() for p in base.parameters()) + lora)


def test_get_base_model_is_the_users_model():
    model, _ = _build("linear")
    peft_model = get_peft_model(model, LoraConfig(target_modules=["layer"]))
    assert isinstance(peft_model, PeftModel)
    assert peft_model.get_base_model() is model
    assert isinstance(model.layer, LoraLinear)


@pytest.mark.parametrize("kind", ["linear", "embedding", "conv1d", "gpt2_conv1d"])
def test_only_adapter_params_train_and_loss_goes_down(kind):
    peft_model, base, x = _peft(kind, r=4, lora_alpha=8)
    peft_model.train()
    frozen = {n: p.detach().clone() for n, p in peft_model.named_parameters() if not p.requires_grad}
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n, p in peft_model.named_parameters() if p.requires_grad)
    target = torch.randn(peft_model(x).shape, generator=torch.Generator().manual_seed(5))
    opt = torch.optim.AdamW(trainable, lr=0.05)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(peft_model(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    for n, p in peft_model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
            assert p.grad is None, n


def test_failed_add_adapter_leaves_no_trace():
    from peft_core import ConfigError
    from peft_core.conformance.models import mlp

    peft_model = get_peft_model(mlp(), LoraConfig(target_modules=["emb", "lin0"], r=2))
    layers = {n: m for n, m in peft_model.named_modules() if isinstance(m, AdapterLayer)}
    before = {n: p.detach().clone() for n, p in peft_model.named_parameters()}
    # the existing embedding layer refuses lora_bias half way through update_layer (r, alpha already set)
    with pytest.raises(ConfigError, match="lora_bias=True is not available for embedding"):
        peft_model.add_adapter("second", LoraConfig(target_modules=["lin0", "emb"], r=3, lora_bias=True))
    assert list(peft_model.peft_config) == ["default"]
    for name, layer in layers.items():
        assert layer.adapter_names == ["default"], name
        for attr in layer.other_param_names:
            assert "second" not in getattr(layer, attr), (name, attr)
    assert {n: p.detach() for n, p in peft_model.named_parameters()}.keys() == before.keys()


def _mixed_layer(rank: int = 4, tokens: int = 6):
    torch.manual_seed(0)
    model = get_peft_model(nn.Sequential(nn.Linear(8, 10)), LoraConfig(r=rank, target_modules=["0"], init_lora_weights=False),
                           adapter_name="a")
    model.add_adapter("b", LoraConfig(r=rank, lora_alpha=3, target_modules=["0"], init_lora_weights=False))
    return model, torch.randn(4, tokens, 8)


@pytest.mark.parametrize("tokens", [6, 2])  # rows of ≥ r tokens gather per row; shorter rows are grouped
def test_mixed_batch_gathered_rows_equal_each_adapter_alone(tokens):
    model, x = _mixed_layer(tokens=tokens)
    names = ["b", "__base__", "a", "b"]
    layer = model.base_model.model[0]
    calls = []
    gather = layer._gathered_routed
    layer._gathered_routed = lambda *args: calls.append(out := gather(*args)) or out
    with torch.no_grad():
        mixed = model(x, adapter_names=names)
        alone = {"__base__": layer.base_layer(x)}
        for name in ("a", "b"):
            model.set_adapter(name)
            alone[name] = model(x)
    assert (calls[0] is not None) == (tokens >= 4)
    for i, name in enumerate(names):
        torch.testing.assert_close(mixed[i], alone[name][i], rtol=1e-5, atol=1e-6)


def test_mixed_batch_gathered_rows_backpropagate_like_grouped_rows():
    model, x = _mixed_layer()
    layer = model.base_model.model[0]
    for param in layer.parameters():
        param.requires_grad_(param is not layer.base_layer.weight and param is not layer.base_layer.bias)
    grads = []
    for gathered in (True, False):
        if not gathered:
            layer._gathered_routed = lambda *args: None
        model.zero_grad()
        model(x, adapter_names=["a", "a", "b", "__base__"]).square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in layer.named_parameters() if p.requires_grad})
    assert set(grads[0]) == {f"lora_{f}.{n}.weight" for f in "AB" for n in "ab"}
    for name, grad in grads[0].items():
        assert grad.abs().sum() > 0
        torch.testing.assert_close(grad, grads[1][name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(5, 6), (2, 3, 6)])
def test_fused_linear_forward_equals_the_general_path(bias: bool, shape: tuple[int, ...],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-place fused product gives the general path's outputs and gradients exactly."""
    taken: list[bool] = []
    plain = LoraLinear._fused_forward
    monkeypatch.setattr(LoraLinear, "_fused_forward", lambda self, x: taken.append((out := plain(self, x)) is not None) or out)
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(6, 8, bias=bias), nn.Tanh(), nn.Linear(8, 4, bias=bias))
    config = LoraConfig(r=3, lora_alpha=5, target_modules="all-linear", init_lora_weights=False)
    fused, general = get_peft_model(copy.deepcopy(base), config), get_peft_model(copy.deepcopy(base), copy.deepcopy(config))
    general.load_state_dict(fused.state_dict())
    calls: list[str] = []
    for name, module in general.named_modules():
        if isinstance(module, LoraLinear):  # a hook on the base layer: the fused path must step aside
            module.base_layer.register_forward_hook(lambda *args, name=name: calls.append(name))
    x = torch.randn(*shape, requires_grad=True)
    out_fused, out_general = fused(x), general(x)
    assert len(calls) == 2 and taken == [True, True, False, False]
    assert torch.equal(out_fused, out_general)
    out_fused.square().sum().backward()
    grad_x, x.grad = x.grad.clone(), None
    out_general.square().sum().backward()
    assert torch.equal(grad_x, x.grad)
    grads = {n: p.grad for n, p in general.named_parameters() if p.requires_grad}
    for n, p in fused.named_parameters():
        if p.requires_grad:
            assert torch.equal(p.grad, grads[n]), n


def test_fused_linear_forward_steps_aside_under_autocast(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under autocast the base product comes back in the autocast dtype; LoRA must still train there."""
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))
    config = LoraConfig(r=3, target_modules="all-linear", init_lora_weights=False)
    model = get_peft_model(copy.deepcopy(base), config)
    x = torch.randn(5, 6)
    runs = []
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(LoraLinear, "_fused_forward", lambda self, x: None)
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        out.float().square().sum().backward()
        runs.append((out, {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}))
    (out, grads), (general_out, general_grads) = runs
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, general_out)
    assert grads.keys() == general_grads.keys() and all(torch.equal(grads[n], general_grads[n]) for n in grads)


@pytest.mark.parametrize("where", ["lora_A", "lora_B", "lora_dropout"])
def test_hooks_on_an_adapters_modules_see_every_call(where: str) -> None:
    """The fused paths use the factors' weights directly; a hook on a factor (or the dropout) sends them aside."""
    model, x = _mixed_layer()
    layer = model.base_model.model[0]
    routed = ["a", "b", "a", "__base__"]
    model.set_adapter("a")
    single, mixed = model(x), model(x, adapter_names=routed)
    model.set_adapter(["a", "b"])  # two active adapters: apply_adapter per adapter
    both = model(x)
    seen: list[str] = []
    for name in ("a", "b"):
        getattr(layer, where)[name].register_forward_hook(lambda *args, name=name: seen.append(name))
    assert torch.equal(model(x), both) and seen == ["a", "b"]
    model.set_adapter("a")
    seen.clear()
    assert torch.equal(model(x), single) and seen == ["a"]
    seen.clear()
    grouped = model(x, adapter_names=routed)  # rows grouped per adapter: other kernels than the gathered bmm
    torch.testing.assert_close(grouped, mixed, rtol=1e-5, atol=1e-6)
    assert sorted(set(seen)) == ["a", "b"]


def test_forward_on_meta_tensors_gives_shapes() -> None:
    """Shape tracing on the meta device goes through the fused path (autocast has no 'meta' type)."""
    with torch.device("meta"):
        base = nn.Sequential(nn.Linear(6, 8), nn.Linear(8, 4))
    model = get_peft_model(base, LoraConfig(r=2, target_modules="all-linear"))
    out = model(torch.empty(3, 5, 6, device="meta"))
    assert out.shape == (3, 5, 4) and out.is_meta
