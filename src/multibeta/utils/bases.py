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

ICA's objective has several local optima on a VAE's codes, which are close to Gaussian: on
the default run's codes one FastICA start lands in one of four to seven optima depending on
its seed, and a perturbation of the codes by 1e-6 of their std is enough to move a single
start into another optimum (and the FactorVAE score in the basis by up to 0.07 at t ≤ 0.5;
benchmarks/ica_stability.py). So the basis
is fitted from :attr:`IcaSettings.restarts` seeded starts, each run to convergence, and the
one with the highest ICA objective (:func:`ica_objective`, the negentropy approximation
FastICA maximises) is kept; :func:`fit_ica_restarts` returns them all, best first, and
:func:`distinct_optima` one per distinct solution, for the spread of scores over restarts.

A :class:`Basis` maps codes ``[N, d]`` to coordinates ``[N, K]`` and gives the direction in
latent space along which each coordinate moves alone (for traversals).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

BasisName = Literal["identity", "pca", "ica"]
BASES: tuple[str, ...] = ("identity", "pca", "ica")
#: E[log cosh ν] for ν ~ N(0, 1): the Gaussian reference of the negentropy approximation.
GAUSSIAN_LOGCOSH = 0.37456720749992
#: Two ICA solutions are the same optimum when every component of one has a partner in the
#: other (up to sign) with |cos| above this.
SAME_OPTIMUM_COS = 0.99


@dataclass(frozen=True)
class IcaSettings:
    """FastICA restarts (``metrics.ica``).

    Attributes:
        restarts: seeded starts; the one with the highest :func:`ica_objective` is kept.
        max_iter: fixed-point iterations allowed per start.
        tol: FastICA's convergence tolerance (change of the unmixing matrix per iteration).
    """

    restarts: int = 64
    max_iter: int = 5000
    tol: float = 1e-5


DEFAULT_ICA = IcaSettings()
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
        fit: how an ``ica`` basis was fitted (``objective``, ``n_iter``, ``converged``,
            ``restarts``, ``restarts_converged``, ``seed``); empty for the others.
    """

    name: str
    mean: np.ndarray
    unmixing: np.ndarray
    directions: np.ndarray
    scales: np.ndarray
    explained: np.ndarray
    fit: dict[str, Any] = field(default_factory=dict)

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


def ica_objective(sources: np.ndarray) -> float:
    """FastICA's objective (logcosh contrast) of ``sources`` [N, K]: Σ_k (E G(y_k) − E G(ν))²,
    y_k the k-th source standardised, G = log cosh, ν ~ N(0, 1). Higher is more non-Gaussian."""
    y = np.asarray(sources, dtype=np.float64)
    y = (y - y.mean(axis=0)) / np.maximum(y.std(axis=0), 1e-300)
    g = np.logaddexp(y, -y) - np.log(2.0)  # log cosh without overflow
    return float(((g.mean(axis=0) - GAUSSIAN_LOGCOSH) ** 2).sum())


@dataclass(frozen=True)
class IcaFit:
    """One FastICA start: its seed, objective, iterations, convergence and basis."""

    seed: int
    objective: float
    n_iter: int
    converged: bool
    basis: Basis


def _ica_basis(centred: np.ndarray, mean: np.ndarray, total_var: float, seed: int,
               settings: IcaSettings) -> IcaFit:
    import warnings

    from sklearn.decomposition import FastICA
    from sklearn.exceptions import ConvergenceWarning

    d = centred.shape[1]
    ica = FastICA(n_components=d, whiten="unit-variance", max_iter=settings.max_iter, tol=settings.tol,
                  random_state=seed)
    with warnings.catch_warnings():
        # non-convergence is recorded per start (IcaFit.converged) and reported per level
        warnings.simplefilter("ignore", ConvergenceWarning)
        ica.fit(centred)
    converged = int(ica.n_iter_) < settings.max_iter
    mixing = ica.mixing_.T  # [K, d]: latent displacement per unit of each source
    unmixing = ica.components_  # [K, d]; sources = centred @ unmixing.T (mean removed by us)
    norms = np.linalg.norm(mixing, axis=1)
    order = np.argsort(-norms, kind="stable")
    mixing, unmixing, norms = mixing[order], unmixing[order], norms[order]
    directions = mixing / np.maximum(norms, 1e-300)[:, None]
    oriented = _orient(directions)
    flip = np.sign((oriented * directions).sum(axis=1))
    directions, unmixing = oriented, unmixing * flip[:, None]
    objective = ica_objective(centred @ unmixing.T)
    basis = Basis("ica", mean, unmixing, directions, norms, norms**2 / total_var,
                  {"objective": objective, "n_iter": int(ica.n_iter_), "converged": converged, "seed": seed})
    return IcaFit(seed, objective, int(ica.n_iter_), converged, basis)


def fit_ica_restarts(codes: np.ndarray, *, seed: int = 0, settings: IcaSettings = DEFAULT_ICA,
                     n_jobs: int = 1) -> list[IcaFit]:
    """Every FastICA start on codes ``[N, d]`` (seeds ``seed * 1000 + r``), best first: converged
    starts before the others, then by decreasing :func:`ica_objective`, then by seed.

    ``n_jobs`` > 1 runs the starts in that many worker processes (joblib); each start is
    deterministic on its own, so the result does not depend on ``n_jobs``.

    Raises:
        ValueError: fewer than two codes, or ``settings.restarts < 1``.
    """
    x = np.asarray(codes, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"fitting a basis needs codes [N >= 2, d], got shape {x.shape}")
    if settings.restarts < 1:
        raise ValueError(f"ICA needs at least one start, got restarts={settings.restarts}")
    total_var = max(float(x.var(axis=0).sum()), 1e-300)
    fit = _fit_rows(x, seed)
    mean = fit.mean(axis=0)
    centred = fit - mean
    seeds = [seed * 1000 + r for r in range(settings.restarts)]
    if n_jobs > 1 and len(seeds) > 1:
        from joblib import Parallel, delayed

        fits = Parallel(n_jobs=min(n_jobs, len(seeds)))(
            delayed(_ica_basis)(centred, mean, total_var, s, settings) for s in seeds)
    else:
        fits = [_ica_basis(centred, mean, total_var, s, settings) for s in seeds]
    fits.sort(key=lambda f: (not f.converged, -f.objective, f.seed))
    return fits


def same_optimum(a: Basis, b: Basis, cos: float = SAME_OPTIMUM_COS) -> bool:
    """Whether two ICA bases are one solution up to the order and signs of their components."""
    ua = a.unmixing / np.linalg.norm(a.unmixing, axis=1, keepdims=True)
    ub = b.unmixing / np.linalg.norm(b.unmixing, axis=1, keepdims=True)
    from scipy.optimize import linear_sum_assignment

    match = np.abs(ua @ ub.T)
    rows, cols = linear_sum_assignment(-match)
    return bool(match[rows, cols].min() > cos)


def distinct_optima(fits: list[IcaFit]) -> list[tuple[IcaFit, int]]:
    """One entry per distinct converged solution among ``fits`` (best first), with the number of
    starts that reached it."""
    out: list[list[Any]] = []
    for f in fits:
        if not f.converged:
            continue
        for entry in out:
            if same_optimum(entry[0].basis, f.basis):
                entry[1] += 1
                break
        else:
            out.append([f, 1])
    return [(f, n) for f, n in out]


def best_ica_basis(fits: list[IcaFit]) -> Basis:
    """The basis of the best start of :func:`fit_ica_restarts`, its ``fit`` recording the
    objective, whether it converged, and how many of the starts did."""
    best = fits[0].basis
    info = dict(best.fit, restarts=len(fits), restarts_converged=sum(f.converged for f in fits))
    return Basis(best.name, best.mean, best.unmixing, best.directions, best.scales, best.explained, info)


def fit_basis(codes: np.ndarray, name: BasisName | str, *, seed: int = 0,
              ica: IcaSettings = DEFAULT_ICA, n_jobs: int = 1) -> Basis:
    """Fit basis ``name`` to codes ``[N, d]`` (no labels used); ``ica``: the FastICA restarts,
    run in ``n_jobs`` processes (:func:`fit_ica_restarts`).

    An ``ica`` basis is the best of :func:`fit_ica_restarts`; its ``fit`` records the objective,
    whether that start converged, and how many of the starts did.

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
    if name == "pca":
        fit = _fit_rows(x, seed)
        mean = fit.mean(axis=0)
        _, s, vh = np.linalg.svd(fit - mean, full_matrices=False)
        vh = _orient(vh)
        var = s**2 / max(1, len(fit) - 1)
        return Basis("pca", mean, vh, vh, np.sqrt(var), var / max(var.sum(), 1e-300))
    if name == "ica":
        return best_ica_basis(fit_ica_restarts(x, seed=seed, settings=ica, n_jobs=n_jobs))
    raise ValueError(f"unknown basis {name!r}; use one of {', '.join(BASES)}")
