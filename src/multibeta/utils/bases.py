"""Unsupervised bases of a set of latent codes, fitted without labels.

The multi-β VAE's KL term uses one σ_t for every latent dimension, so it is invariant under
rotations of the latent space: nothing ties the factors of variation to the coordinate axes.
Disentanglement is therefore scored (and traversals drawn) in bases fitted to the codes:

- ``identity``: the coordinate axes as they are;
- ``pca``: the principal axes, in order of decreasing variance (no rescaling). PCA cannot
  separate factors of equal variance (dSprites' x and y): any rotation of their plane is
  equally principal;
- ``ica``: independent component analysis (scikit-learn's FastICA on the whitened codes):
  the directions whose projections are most non-Gaussian, hence as independent as possible.
  Independent, non-Gaussian factors of equal variance (uniform x and y) are recovered up to
  order, sign and scale. Components are ordered by the variance they contribute to the codes
  (the norm of their mixing vector), each sign chosen so the component's largest loading is
  positive.

A :class:`Basis` maps codes ``[N, d]`` to coordinates ``[N, K]`` and gives the direction in
latent space along which each coordinate moves alone (for traversals).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

BasisName = Literal["identity", "pca", "ica"]
BASES: tuple[str, ...] = ("identity", "pca", "ica")
#: FastICA settings: iterations and tolerance of the fixed-point iteration.
ICA_MAX_ITER = 2000
ICA_TOL = 1e-5
#: Codes used to fit a basis (a seeded subset when there are more).
FIT_ROWS = 10_000


@dataclass(frozen=True)
class Basis:
    """A linear basis of latent space fitted to codes.

    Attributes:
        name: ``identity``, ``pca`` or ``ica``.
        mean: ``[d]`` centre subtracted before projecting (zeros for ``identity``).
        unmixing: ``[K, d]``; coordinates are ``(codes - mean) @ unmixing.T``.
        directions: ``[K, d]`` unit vectors: moving a code along ``directions[k]`` changes
            coordinate ``k`` only.
        scales: ``[K]`` std of the fitted codes along ``directions[k]`` (the traversal unit).
        explained: ``[K]`` fraction of the codes' total variance each direction carries.
    """

    name: str
    mean: np.ndarray
    unmixing: np.ndarray
    directions: np.ndarray
    scales: np.ndarray
    explained: np.ndarray

    def transform(self, codes: np.ndarray) -> np.ndarray:
        """Coordinates ``[N, K]`` (float32) of codes ``[N, d]``."""
        return ((np.asarray(codes, dtype=np.float64) - self.mean) @ self.unmixing.T).astype(np.float32)

    def labels(self) -> list[str]:
        """One label per direction, e.g. ``IC1 (31%)``."""
        prefix = {"identity": "z", "pca": "PC", "ica": "IC"}[self.name]
        first = 0 if self.name == "identity" else 1
        return [f"{prefix}{k + first} ({100 * e:.0f}%)" for k, e in enumerate(self.explained)]


def _fit_rows(codes: np.ndarray, seed: int) -> np.ndarray:
    if len(codes) <= FIT_ROWS:
        return codes
    rng = np.random.default_rng(seed)
    return codes[np.sort(rng.choice(len(codes), FIT_ROWS, replace=False))]


def _orient(vectors: np.ndarray) -> np.ndarray:
    """Flip each row so that its largest-magnitude entry is positive (deterministic signs)."""
    idx = np.abs(vectors).argmax(axis=1)
    signs = np.sign(vectors[np.arange(len(vectors)), idx])
    return vectors * np.where(signs == 0, 1.0, signs)[:, None]


def fit_basis(codes: np.ndarray, name: BasisName | str, *, seed: int = 0) -> Basis:
    """Fit basis ``name`` to codes ``[N, d]`` (no labels used).

    Raises:
        ValueError: unknown name, or fewer than two codes.
    """
    x = np.asarray(codes, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"fitting a basis needs codes [N >= 2, d], got shape {x.shape}")
    d = x.shape[1]
    total_var = max(float(x.var(axis=0).sum()), 1e-300)
    if name == "identity":
        eye = np.eye(d)
        var = x.var(axis=0)
        return Basis("identity", np.zeros(d), eye, eye, np.sqrt(var), var / total_var)
    fit = _fit_rows(x, seed)
    mean = fit.mean(axis=0)
    centred = fit - mean
    if name == "pca":
        _, s, vh = np.linalg.svd(centred, full_matrices=False)
        vh = _orient(vh)
        var = s**2 / max(1, len(fit) - 1)
        return Basis("pca", mean, vh, vh, np.sqrt(var), var / max(var.sum(), 1e-300))
    if name == "ica":
        import warnings

        from sklearn.decomposition import FastICA
        from sklearn.exceptions import ConvergenceWarning

        ica = FastICA(n_components=d, whiten="unit-variance", max_iter=ICA_MAX_ITER, tol=ICA_TOL,
                      random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            ica.fit(centred)
        mixing = ica.mixing_.T  # [K, d]: latent displacement per unit of each source
        unmixing = ica.components_  # [K, d]; sources = centred @ unmixing.T (mean removed by us)
        norms = np.linalg.norm(mixing, axis=1)
        order = np.argsort(-norms, kind="stable")
        mixing, unmixing, norms = mixing[order], unmixing[order], norms[order]
        directions = mixing / np.maximum(norms, 1e-300)[:, None]
        oriented = _orient(directions)
        flip = np.sign((oriented * directions).sum(axis=1))
        directions, unmixing = oriented, unmixing * flip[:, None]
        return Basis("ica", mean, unmixing, directions, norms, norms**2 / total_var)
    raise ValueError(f"unknown basis {name!r}; use one of {', '.join(BASES)}")
