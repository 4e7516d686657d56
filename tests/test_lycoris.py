"""The shared LyCORIS pieces (peft_core.lycoris): factorisation, dropout masks, the factor algebra."""

from __future__ import annotations

import pytest
import torch

from peft_core.lycoris import (
    DEFAULT_TARGET_MODULES,
    factorization,
    hadamard_product,
    kronecker_product,
    module_dropped,
    rank_dropout_mask,
    tucker_rebuild,
)


@pytest.mark.parametrize(("dimension", "factor", "expected"), [
    (256, -1, (16, 16)), (128, -1, (8, 16)), (127, -1, (1, 127)), (128, 4, (4, 32)), (12, -1, (3, 4)),
    (8, -1, (2, 4)), (1, -1, (1, 1)), (32, 3, (2, 16)), (128, 64, (64, 2)), (30, 7, (5, 6)),
])
def test_factorization_examples(dimension, factor, expected):
    assert factorization(dimension, factor) == expected


def test_factorization_always_multiplies_back():
    for dimension in range(1, 400):
        for factor in (-1, 1, 2, 3, 5, 8, 17):
            m, n = factorization(dimension, factor)
            assert m * n == dimension, (dimension, factor)


@pytest.mark.parity
def test_factorization_matches_peft_everywhere():
    reference = pytest.importorskip("peft.tuners.lokr.layer").factorization
    for dimension in range(1, 600):
        for factor in (-1, 1, 2, 3, 4, 5, 6, 8, 12, 16, 32, 100):
            assert factorization(dimension, factor) == reference(dimension, factor), (dimension, factor)


@pytest.mark.parity
def test_default_targets_are_peft_lycoris_table():
    from peft.utils import TRANSFORMERS_MODELS_TO_LOHA_TARGET_MODULES_MAPPING as loha
    from peft.utils import TRANSFORMERS_MODELS_TO_LOKR_TARGET_MODULES_MAPPING as lokr

    assert DEFAULT_TARGET_MODULES == dict(loha) == dict(lokr)


def test_rank_dropout_mask_rows_and_rescaling():
    like = torch.zeros(64, 5, 3, 3)
    torch.manual_seed(0)
    mask = rank_dropout_mask(64, 0.5, rescale=False, like=like)
    assert mask.shape == (64, 1, 1, 1) and set(mask.unique().tolist()) == {0.0, 1.0}
    torch.manual_seed(0)
    scaled = rank_dropout_mask(64, 0.5, rescale=True, like=like)
    kept = mask.sum()
    assert torch.allclose(scaled, mask * 64 / kept)  # kept rows scaled so the mask's mean is 1
    assert torch.isclose(scaled.mean(), torch.tensor(1.0))


def test_rank_dropout_mask_dropping_everything_stays_finite():
    mask = rank_dropout_mask(4, 0.999999, rescale=True, like=torch.zeros(4, 3))
    assert torch.equal(mask, torch.zeros(4, 1))


def test_module_dropout_only_in_training():
    assert not any(module_dropped(0.99, training=False) for _ in range(50))
    assert not any(module_dropped(0.0, training=True) for _ in range(50))
    torch.manual_seed(0)
    draws = [module_dropped(0.5, training=True) for _ in range(60)]
    assert any(draws) and not all(draws)


def test_hadamard_product_is_elementwise_product_of_low_rank_pairs():
    gen = torch.Generator().manual_seed(0)
    w1a, w1b, w2a, w2b = (torch.randn(s, generator=gen) for s in [(6, 2), (2, 5), (6, 2), (2, 5)])
    delta = hadamard_product(w1a, w1b, w2a, w2b, 0.5)
    assert torch.allclose(delta, 0.5 * (w1a @ w1b) * (w2a @ w2b))
    assert torch.linalg.matrix_rank(delta) <= 4  # rank up to r² from two rank-2 factors


def test_tucker_rebuild_contracts_core_with_mode_factors():
    gen = torch.Generator().manual_seed(1)
    core = torch.randn(2, 2, 3, 3, generator=gen)
    out_f, in_f = torch.randn(2, 7, generator=gen), torch.randn(2, 4, generator=gen)
    kernel = tucker_rebuild(core, out_f, in_f)
    assert kernel.shape == (7, 4, 3, 3)
    expected = sum(core[a, b][None, None] * out_f[a][:, None, None, None] * in_f[b][None, :, None, None]
                   for a in range(2) for b in range(2))
    assert torch.allclose(kernel, expected, atol=1e-6)


def test_kronecker_product_lifts_w1_over_conv_kernels():
    gen = torch.Generator().manual_seed(2)
    w1, w2 = torch.randn(2, 3, generator=gen), torch.randn(4, 5, 3, 3, generator=gen)
    delta = kronecker_product(w1, w2, 2.0)
    assert delta.shape == (8, 15, 3, 3)
    # block (i, j) of the (out, in) grid is w1[i, j] · w2 · scale
    assert torch.allclose(delta[4:8, 10:15], 2.0 * w1[1, 2] * w2)
    flat = kronecker_product(w1, w2[:, :, 0, 0], 1.0)
    assert torch.allclose(flat, torch.kron(w1, w2[:, :, 0, 0]))
