"""peft_core.pca.IncrementalPCA against a full SVD of all the data at once.

scikit-learn is not a dependency of the test environment, so the reference is the exact
PCA: the SVD of the centred, stacked batches.
"""

import pytest
import torch

from peft_core.errors import ConfigError
from peft_core.pca import IncrementalPCA


def _data(rows=240, features=12, seed=0, decay=0.0):
    g = torch.Generator().manual_seed(seed)
    scales = torch.linspace(3.0, 0.1, features)  # distinct variances: well-separated components
    if decay:
        scales = decay ** torch.arange(features, dtype=torch.float32)
    return torch.randn(rows, features, generator=g) * scales + torch.randn(features, generator=g)


def _exact(data, k):
    centred = data.double() - data.double().mean(0)
    _, s, vt = torch.linalg.svd(centred, full_matrices=False)
    signs = torch.sign(vt[torch.arange(vt.shape[0]), vt.abs().argmax(1)])
    return s[:k], (vt * signs[:, None])[:k], s.square() / centred.square().sum()


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 2e-5)])
@pytest.mark.parametrize("batch", [40, 60, 240])
def test_batches_give_the_full_svd(batch, dtype, tol):
    data = _data().to(dtype)
    pca = IncrementalPCA(n_components=12)
    for start in range(0, len(data), batch):
        pca.partial_fit(data[start:start + batch])
    s, vt, ratio = _exact(data, 12)
    torch.testing.assert_close(pca.singular_values_.double(), s, rtol=tol, atol=tol)
    torch.testing.assert_close(pca.components_.double(), vt, rtol=tol, atol=tol)
    torch.testing.assert_close(pca.explained_variance_ratio_.double(), ratio[:12], rtol=tol, atol=tol)
    torch.testing.assert_close(pca.mean_, data.double().mean(0), rtol=tol, atol=tol)
    torch.testing.assert_close(pca.var_, data.double().var(0, unbiased=False), rtol=tol, atol=tol)
    assert pca.n_samples_seen_ == len(data)
    torch.testing.assert_close(pca.explained_variance_.double(), s.square() / (len(data) - 1), rtol=tol, atol=tol)


def test_truncated_components_track_the_leading_directions():
    data = _data(rows=400, features=16, seed=1, decay=0.6)  # a spectrum that really is low-rank
    pca = IncrementalPCA(n_components=4)
    for chunk in data.split(50):
        pca.partial_fit(chunk)
    _, vt, _ = _exact(data, 4)
    cos = torch.nn.functional.cosine_similarity(pca.components_, vt)
    assert (cos > 0.99).all(), cos


def test_lowrank_is_seeded_and_leaves_the_global_rng_alone():
    data = _data(decay=0.5)
    fits = []
    for _ in range(2):
        torch.manual_seed(123)
        pca = IncrementalPCA(n_components=3, lowrank=True, lowrank_seed=7)
        for chunk in data.split(60):
            pca.partial_fit(chunk)
        fits.append((pca.components_, torch.rand(1)))
    assert torch.equal(fits[0][0], fits[1][0])
    torch.manual_seed(123)
    assert torch.equal(fits[0][1], torch.rand(1))  # the caller's random stream did not move
    _, vt, _ = _exact(data, 3)
    assert (torch.nn.functional.cosine_similarity(fits[0][0].double(), vt) > 0.999).all()


def test_fit_and_transform():
    data = _data()
    pca = IncrementalPCA(n_components=12).fit(data.double(), batch_size=48)  # all components: exact
    _, vt, _ = _exact(data, 12)
    expected = (data.double() - data.double().mean(0)) @ vt.T
    torch.testing.assert_close(pca.transform(data.double()), expected)
    assert pca.transform(data).dtype == torch.float32  # coordinates come back in the caller's dtype


def test_bad_input_is_a_clear_error():
    with pytest.raises(ConfigError, match="positive"):
        IncrementalPCA(n_components=0)
    with pytest.raises(ConfigError, match="n_components"):
        IncrementalPCA(lowrank=True)
    pca = IncrementalPCA(n_components=4)
    with pytest.raises(ConfigError, match="not fitted"):
        pca.transform(torch.zeros(2, 3))
    with pytest.raises(ConfigError, match="2-d"):
        pca.partial_fit(torch.zeros(2, 3, 4))
    with pytest.raises(ConfigError, match="at least n_components rows"):
        pca.partial_fit(torch.zeros(3, 8))
    pca.partial_fit(torch.randn(8, 8))
    with pytest.raises(ConfigError, match="first had 8"):
        pca.partial_fit(torch.randn(8, 6))
    with pytest.raises(ConfigError, match="exceeds"):
        IncrementalPCA(n_components=9).partial_fit(torch.randn(10, 8))
