"""How AdaMSS splits a weight into subspaces: randomized SVD, KMeans on the left singular vectors, QR init.

Everything here is a deterministic function of the base weight and the config: the SVD runs
under ``random_seed`` (the global RNG is restored afterwards) and KMeans under a fixed seed,
so the grouping of output rows — which is not saved — comes out the same when an adapter is
loaded again, in peft-core and in Hugging Face PEFT alike. The per-subspace initial factors
do draw from the global RNG (as PEFT's do), so a seeded run creates the same adapter.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from peft_core.buffers import forked_seed
from peft_core.errors import ConfigError

#: KMeans settings of the reference implementation: random init, one run, ten Lloyd iterations, fixed seed
KMEANS_SEED = 123456789
KMEANS_ITERATIONS = 10


@dataclass
class Subspaces:
    """The decomposition of one weight: the input projection and, per subspace, its rows and initial factors."""

    projection: torch.Tensor  # (R, in [+1]): top right singular vectors, the frozen ``adamss_newB``
    rows: list[torch.Tensor]  # output rows of each subspace
    A: list[torch.Tensor]  # (rank_i, R) each
    B: list[torch.Tensor]  # (len(rows_i), rank_i) each


def cluster_rows(left_vectors: torch.Tensor, num_subspaces: int) -> list[torch.Tensor]:
    """Group the rows of ``left_vectors`` (one per output feature) into at most ``num_subspaces`` KMeans clusters."""
    try:
        from sklearn.cluster import KMeans
    except ImportError:  # pragma: no cover - scikit-learn is a dependency of this distribution
        raise ConfigError("AdaMSS clusters singular vectors with scikit-learn; "
                          "install it (pip install scikit-learn).") from None
    points = left_vectors.detach().cpu().float().numpy()
    k = min(num_subspaces, points.shape[0])
    labels = KMeans(n_clusters=k, init="random", n_init=1, max_iter=KMEANS_ITERATIONS,
                    random_state=KMEANS_SEED).fit_predict(points)
    labels = torch.from_numpy(labels).long()
    found = int(labels.max()) + 1
    return [torch.nonzero(labels == i).flatten() for i in range(min(found, k))]


def _subspace_rank(block: torch.Tensor, subspace_rank: int, dynamic: bool, threshold: float) -> int:
    """Rank of one subspace: fixed (capped by its row count) or the number of significant singular values."""
    if not dynamic:
        return max(1, min(block.shape[0], subspace_rank))
    gram = block @ block.T
    _, singular, _ = torch.svd_lowrank(gram, q=min(gram.shape), niter=2)
    significant = int((singular > threshold * singular[0]).sum())
    return max(1, min(significant, subspace_rank, singular.numel()))


def decompose(weight: torch.Tensor, config: object) -> Subspaces:
    """Decompose ``weight`` (``(out, in)``, the bias appended as a last column when there is one)."""
    weight = weight.detach().float()
    rank = min(config.r, *weight.shape)
    with forked_seed(config.random_seed, weight.device):
        U, _, V = torch.svd_lowrank(weight, q=rank, niter=2)
    left, projection = U[:, :rank], V[:, :rank].T.contiguous()
    rows = cluster_rows(left, config.num_subspaces)
    As, Bs = [], []
    for members in rows:
        block = left[members, :config.r]  # (rows in the subspace, R)
        r_i = _subspace_rank(block, config.subspace_rank, config.use_dynamic_rank, config.svd_threshold)
        gram = block @ block.T
        basis, _, _ = torch.svd_lowrank(gram, q=min(gram.shape[0], r_i), niter=2)
        # orthonormal directions of the R-dim input subspace that this group of rows spans most
        q, _ = torch.linalg.qr(block.T @ basis[:, :r_i], mode="reduced")
        As.append(q.T.contiguous())
        if config.init_weights == "orthogonal":
            Bs.append(torch.zeros(members.numel(), r_i, device=weight.device))
        else:
            Bs.append(torch.randn(members.numel(), r_i, device=weight.device) * 0.01)
    return Subspaces(projection=projection, rows=rows, A=As, B=Bs)
