"""Unsupervised latent bases: ICA recovers rotated independent factors that PCA cannot separate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from multibeta.metrics.config import MetricsConfig
from multibeta.metrics.levels import rotate
from multibeta.metrics.mig import compute_mig
from multibeta.sampling.edit import basis_directions
from multibeta.utils.bases import fit_basis
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
