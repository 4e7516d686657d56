"""Incremental PCA in torch: principal directions of data that arrives in batches.

Data-driven initialisations (EVA) need the top right-singular vectors of every adapted
layer's *inputs* over many calibration batches. Stacking all activations first would cost
``tokens × hidden`` memory per layer; instead each batch is folded into a small summary
(the current components scaled by their singular values, plus a row that carries the shift
of the mean), so memory stays ``(n_components + batch) × features``. This is the classic
incremental algorithm of Ross et al. (2008), as scikit-learn's ``IncrementalPCA`` uses.

Choices that matter to callers:

* mean and sum of squares are float64 whatever the input dtype, and so is every fold
  after the first batch, so long streams of float32 activations do not drift;
* signs are fixed after every SVD (each component's largest-magnitude entry is positive),
  so results are deterministic and comparable between batches;
* ``lowrank=True`` uses ``torch.svd_lowrank`` (randomised) on the folded matrix, seeded by
  ``lowrank_seed`` inside a forked RNG so the caller's random stream is left untouched.
"""

from __future__ import annotations

import torch

from .errors import ConfigError

__all__ = ["IncrementalPCA"]


class IncrementalPCA:
    """Principal components fitted batch by batch with :meth:`partial_fit`.

    After fitting, ``components_`` is ``(n_components, n_features)`` (rows are unit
    directions, most variance first), ``singular_values_`` their singular values of the
    centred data seen so far, ``explained_variance_`` / ``explained_variance_ratio_`` the
    share of variance each explains, ``mean_`` / ``var_`` the per-feature statistics and
    ``n_samples_seen_`` the number of rows folded in.

    ``n_components=None`` keeps ``min(rows of the first batch, n_features)`` components.
    ``lowrank`` trades exactness for speed on wide inputs (``q`` random probes, ``2 ×
    n_components`` unless ``lowrank_q`` is given; ``lowrank_niter`` power iterations).
    """

    def __init__(
        self,
        n_components: int | None = None,
        lowrank: bool = False,
        lowrank_q: int | None = None,
        lowrank_niter: int = 4,
        lowrank_seed: int | None = None,
    ) -> None:
        if n_components is not None and (isinstance(n_components, bool) or n_components <= 0):
            raise ConfigError(f"n_components must be a positive integer or None, got {n_components!r}.")
        if lowrank:
            if lowrank_q is None and n_components is None:
                raise ConfigError("lowrank=True needs n_components (or lowrank_q) to size the random projection.")
            if lowrank_q is not None and n_components is not None and lowrank_q < n_components:
                raise ConfigError(f"lowrank_q ({lowrank_q}) must be at least n_components ({n_components}).")
        self.n_components = n_components
        self.lowrank = lowrank
        self.lowrank_q = lowrank_q if lowrank_q is not None or n_components is None else 2 * n_components
        self.lowrank_niter = lowrank_niter
        self.lowrank_seed = lowrank_seed
        self.n_samples_seen_ = 0
        self.n_features_: int | None = None
        self.mean_: torch.Tensor | None = None
        self.var_: torch.Tensor | None = None
        self._sum_squares: torch.Tensor | None = None  # per-feature sum of squared deviations (float64)

    @property
    def fitted(self) -> bool:
        return hasattr(self, "components_")

    def partial_fit(self, batch: torch.Tensor) -> IncrementalPCA:
        """Fold one ``(rows, features)`` batch into the components."""
        x = self._checked(batch)
        rows = x.shape[0]
        if self.n_components is None:
            self.n_components = min(rows, x.shape[1])
        seen = self.n_samples_seen_
        total = seen + rows
        batch_mean = x.mean(dim=0, dtype=torch.float64)
        centred = x.double() - batch_mean
        batch_ss = centred.square().sum(dim=0)
        if seen == 0:
            # nothing to fold yet: decompose in the input dtype (the random probes of lowrank
            # mode are drawn in this dtype, so float32 input gives Hugging Face PEFT's probes)
            mean, sum_squares, folded = batch_mean, batch_ss, centred.to(x.dtype)
        else:
            shift = self.mean_ - batch_mean
            mean = self.mean_ + (batch_mean - self.mean_) * (rows / total)
            sum_squares = self._sum_squares + batch_ss + shift.square() * (seen * rows / total)
            # the previous fit, the new rows, and one row that carries the move of the mean
            mean_row = (shift * (seen * rows / total) ** 0.5).unsqueeze(0)
            history = self.singular_values_.unsqueeze(1) * self.components_
            folded = torch.cat([history.double(), centred, mean_row])
        _, s, vt = self._svd(folded)
        vt = _fix_signs(vt)
        k = self.n_components
        self.components_ = vt[:k]
        self.singular_values_ = s[:k]
        self.explained_variance_ = s[:k].square() / max(total - 1, 1)
        self.explained_variance_ratio_ = s[:k].square() / sum_squares.sum()
        self.n_samples_seen_ = total
        self.mean_, self._sum_squares, self.var_ = mean, sum_squares, sum_squares / total
        return self

    def fit(self, data: torch.Tensor, batch_size: int | None = None) -> IncrementalPCA:
        """Fit on ``data`` in batches of ``batch_size`` rows (``5 × features`` by default)."""
        data = torch.as_tensor(data)
        size = batch_size or 5 * data.shape[1]
        for start in range(0, data.shape[0], size):
            self.partial_fit(data[start:start + size])
        return self

    def transform(self, data: torch.Tensor) -> torch.Tensor:
        """Coordinates of ``data`` on the components (centred by the fitted mean)."""
        if not self.fitted:
            raise ConfigError("IncrementalPCA is not fitted yet; call partial_fit with at least one batch first.")
        data = torch.as_tensor(data)
        return ((data.double() - self.mean_) @ self.components_.double().T).to(data.dtype)

    def _checked(self, batch: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(batch)
        if x.dim() != 2:
            raise ConfigError(f"partial_fit takes a 2-d (rows, features) batch, got shape {tuple(x.shape)}.")
        if x.dtype not in (torch.float32, torch.float64):
            x = x.float()
        rows, features = x.shape
        if self.n_features_ is None:
            self.n_features_ = features
        elif features != self.n_features_:
            raise ConfigError(f"this batch has {features} features but the first had {self.n_features_}; "
                              "feed batches of one layer's inputs only.")
        if self.n_components is not None and self.n_components > features:
            raise ConfigError(f"n_components={self.n_components} exceeds the {features} features; lower n_components.")
        if self.n_components is not None and self.n_components > rows:
            raise ConfigError(f"a batch of {rows} rows cannot fit {self.n_components} components; "
                              "use batches with at least n_components rows.")
        return x

    def _svd(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self.lowrank:
            return torch.linalg.svd(x, full_matrices=False)
        q = self.lowrank_q if self.lowrank_q is not None else 2 * self.n_components
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, enabled=self.lowrank_seed is not None):
            if self.lowrank_seed is not None:
                torch.manual_seed(self.lowrank_seed)
            u, s, v = torch.svd_lowrank(x, q=q, niter=self.lowrank_niter)
        return u, s, v.mH


def _fix_signs(vt: torch.Tensor) -> torch.Tensor:
    """Make each row's largest-magnitude entry positive (an SVD leaves signs arbitrary)."""
    pivots = vt.abs().argmax(dim=1)
    signs = torch.sign(vt[torch.arange(vt.shape[0]), pivots])
    signs[signs == 0] = 1
    return vt * signs.unsqueeze(1)
