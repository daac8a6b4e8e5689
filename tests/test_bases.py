"""Unsupervised latent bases: ICA recovers rotated independent factors that PCA cannot separate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from multibeta.metrics.config import MetricsConfig
from multibeta.metrics.levels import rotate
from multibeta.metrics.mig import compute_mig
from multibeta.sampling.edit import basis_directions
from multibeta.utils.bases import (
    GAUSSIAN_LOGCOSH, Basis, IcaSettings, distinct_optima, fit_basis, fit_ica_restarts, ica_objective,
    same_optimum,
)
from multibeta.workflow.config import section_defaults


def _rotated_factors(n: int = 8000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes of three independent uniform factors (two of equal variance, as dSprites' x and y)
    plus two noise dimensions, and the same codes under a random rotation."""
    rng = np.random.default_rng(seed)
    factors = np.stack([rng.integers(0, 32, n), rng.integers(0, 32, n), rng.integers(0, 6, n)], axis=1)
    codes = factors / np.array([32.0, 32.0, 6.0]) - 0.5
    codes = np.concatenate([codes * np.array([1.0, 1.0, 0.7]), 0.01 * rng.standard_normal((n, 2))], axis=1)
    codes += 0.02 * rng.standard_normal(codes.shape)
    q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    return codes, codes @ q, factors


def _mig(codes: np.ndarray, factors: np.ndarray) -> float:
    cfg = MetricsConfig.from_section(section_defaults("metrics", {}))
    return compute_mig(codes, factors, cfg.mig, seed=0)["mig"]


def test_ica_recovers_rotated_independent_factors() -> None:
    codes, rotated, factors = _rotated_factors()
    axes, mixed = _mig(codes, factors), _mig(rotated, factors)
    ica = _mig(rotate(rotated, "ica"), factors)
    pca = _mig(rotate(rotated, "pca"), factors)
    assert mixed < 0.5 * axes  # the rotation destroys axis alignment
    assert ica == pytest.approx(axes, abs=0.05)  # ICA undoes it
    assert pca < ica - 0.15  # PCA cannot split the equal-variance pair


def test_basis_directions_move_one_coordinate() -> None:
    _, rotated, _ = _rotated_factors(seed=1)
    for name in ("identity", "pca", "ica"):
        basis = fit_basis(rotated, name, seed=0)
        assert basis.directions.shape == (5, 5)
        np.testing.assert_allclose(np.linalg.norm(basis.directions, axis=1), 1.0, atol=1e-9)
        coords = basis.transform(rotated)
        # a move along direction k changes coordinate k only
        moved = basis.transform(rotated[:10] + 0.3 * basis.directions[2])
        delta = moved - coords[:10]
        assert np.abs(np.delete(delta, 2, axis=1)).max() < 1e-4
        assert np.all(np.abs(delta[:, 2]) > 1e-3)
        # scales are the std of the codes along each coordinate's direction
        if name != "ica":
            np.testing.assert_allclose(basis.scales, coords.std(axis=0, ddof=1 if name == "pca" else 0), rtol=1e-3)
    ica = basis_directions(torch.as_tensor(rotated), "ica", 3)
    assert ica.vectors.shape == (3, 5) and ica.labels[0].startswith("IC1")
    # deterministic for a seed
    again = basis_directions(torch.as_tensor(rotated), "ica", 3)
    torch.testing.assert_close(ica.vectors, again.vectors)


def test_fit_basis_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown basis"):
        fit_basis(np.zeros((10, 2)), "svd")
    with pytest.raises(ValueError, match="N >= 2"):
        fit_basis(np.zeros((1, 2)), "pca")


def test_ica_objective_is_negentropy_of_the_logcosh_contrast() -> None:
    rng = np.random.default_rng(0)
    gaussian = rng.standard_normal((200_000, 2))
    uniform = rng.uniform(-1, 1, (200_000, 1))
    assert ica_objective(gaussian) < 1e-6  # E log cosh ν is the Gaussian reference
    # uniform source: E log cosh(√3 u), u ~ U[-1, 1], by quadrature
    grid = np.linspace(-1, 1, 2_000_001)
    expected = (np.mean(np.log(np.cosh(np.sqrt(3) * grid))) - GAUSSIAN_LOGCOSH) ** 2
    assert ica_objective(uniform) == pytest.approx(expected, rel=0.02)
    # scale-free and additive over sources
    assert ica_objective(np.hstack([5 * uniform, gaussian])) == pytest.approx(ica_objective(uniform), rel=1e-3)


def _weak_sources(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four discrete uniform factors, each blended with Gaussian noise (weakly non-Gaussian, as a
    VAE's codes), plus one Gaussian dimension, under a random rotation."""
    rng = np.random.default_rng(seed)
    factors = rng.integers(0, 8, (n, 4))
    uniform = ((factors + rng.random((n, 4))) / 8 - 0.5) * np.sqrt(12)
    sources = np.concatenate([0.8 * uniform + 0.6 * rng.standard_normal((n, 4)),
                              rng.standard_normal((n, 1))], axis=1) * np.linspace(1.0, 0.6, 5)
    q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    return sources @ q, factors


def test_ica_keeps_the_best_of_its_restarts_and_records_the_fit() -> None:
    codes, _ = _weak_sources()
    settings = IcaSettings(restarts=5, max_iter=3000, tol=1e-5)
    fits = fit_ica_restarts(codes, seed=0, settings=settings)
    assert len(fits) == 5 and len({f.seed for f in fits}) == 5
    converged = [f for f in fits if f.converged]
    assert converged and fits[0].converged
    assert fits[0].objective == max(f.objective for f in converged)
    for f in fits:  # the objective is the one of the basis' own sources
        assert f.objective == pytest.approx(ica_objective(f.basis.transform(codes)), rel=1e-6)
        assert f.converged == (f.n_iter < settings.max_iter)
    basis = fit_basis(codes, "ica", seed=0, ica=settings)
    np.testing.assert_array_equal(basis.unmixing, fits[0].basis.unmixing)
    assert basis.fit["restarts"] == 5 and basis.fit["restarts_converged"] == len(converged)
    assert basis.fit["objective"] == fits[0].objective and basis.fit["converged"]
    # a start that runs out of iterations is recorded as not converged, and sorts last
    short = fit_ica_restarts(codes, seed=0, settings=IcaSettings(restarts=2, max_iter=1, tol=1e-12))
    assert not any(f.converged for f in short)
    optima = distinct_optima(fits)
    assert sum(n for _, n in optima) == len(converged)
    assert same_optimum(fits[0].basis, optima[0][0].basis)
    # the same solution with its components permuted and sign-flipped is the same optimum
    b = fits[0].basis
    shuffled = Basis("ica", b.mean, -b.unmixing[::-1], b.directions[::-1], b.scales[::-1], b.explained[::-1])
    assert same_optimum(b, shuffled)
    with pytest.raises(ValueError, match="at least one start"):
        fit_ica_restarts(codes, settings=IcaSettings(restarts=0))


def test_ica_scores_do_not_move_under_a_tiny_perturbation_of_the_codes() -> None:
    codes, factors = _weak_sources(seed=3)
    cfg = MetricsConfig.from_section(section_defaults("metrics", {"ica": {"restarts": 8}}))
    noisy = codes + 1e-6 * codes.std(axis=0) * np.random.default_rng(7).standard_normal(codes.shape)
    scores = [compute_mig(rotate(c, "ica", 0, cfg.ica), factors, cfg.mig, seed=0)["mig"] for c in (codes, noisy)]
    assert abs(scores[0] - scores[1]) <= 0.01
    a, b = (fit_basis(c, "ica", ica=cfg.ica) for c in (codes, noisy))
    assert same_optimum(a, b) and a.fit["converged"] and b.fit["converged"]


def test_ica_restarts_in_worker_processes_give_the_same_basis() -> None:
    codes, _ = _weak_sources(n=1500)
    settings = IcaSettings(restarts=3, max_iter=2000, tol=1e-5)
    serial = fit_basis(codes, "ica", ica=settings)
    parallel = fit_basis(codes, "ica", ica=settings, n_jobs=2)
    np.testing.assert_array_equal(serial.unmixing, parallel.unmixing)
    assert serial.fit == parallel.fit


def test_level_metrics_reuse_the_ica_starts_of_the_same_codes() -> None:
    from multibeta.metrics import levels

    codes, _ = _weak_sources(n=1500, seed=5)
    cfg = MetricsConfig.from_section(section_defaults("metrics", {"ica": {"restarts": 3}}))
    first = levels.ica_fits(codes, cfg)
    assert levels.ica_fits(codes.copy(), cfg) is first  # same codes and settings: not refitted
    other = MetricsConfig.from_section(section_defaults("metrics", {"ica": {"restarts": 2}}))
    assert len(levels.ica_fits(codes, other)) == 2
    np.testing.assert_array_equal(levels.best_ica_basis(first).unmixing,
                                  fit_basis(codes, "ica", ica=cfg.ica).unmixing)
