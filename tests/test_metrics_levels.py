"""Per-level metrics: the PCA basis recovers axis-aligned factors from a rotated code."""

from __future__ import annotations

import numpy as np

from multibeta.metrics.config import MetricsConfig
from multibeta.metrics.levels import rotate
from multibeta.metrics.mig import compute_mig
from multibeta.workflow.config import section_defaults


def test_identity_rotation_is_a_no_op() -> None:
    codes = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    assert rotate(codes, "identity") is codes


def test_pca_basis_undoes_a_rotation_of_the_factors() -> None:
    rng = np.random.default_rng(0)
    n = 4000
    classes = np.stack([rng.integers(0, 10, n), rng.integers(0, 10, n)], axis=1)
    # factors with distinct variances, so the principal axes are the factor axes
    codes = np.stack([3.0 * classes[:, 0], 1.0 * classes[:, 1]], axis=1).astype(np.float64)
    codes += rng.normal(scale=0.05, size=codes.shape)
    angle = np.pi / 4
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    rotated = (codes @ rotation.T).astype(np.float32)
    cfg = MetricsConfig.from_section(section_defaults("metrics", {"mig": {"n_train": n}}))
    mig_rotated = compute_mig(rotated, classes, cfg.mig, seed=0)["mig"]
    mig_pca = compute_mig(rotate(rotated, "pca"), classes, cfg.mig, seed=0)["mig"]
    assert mig_pca > 0.7 and mig_pca > mig_rotated + 0.3
