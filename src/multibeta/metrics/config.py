"""Typed view of the validated ``metrics`` config section.

Every default lives in ``workflow/schemas/metrics.schema.yaml``; these dataclasses carry
none of their own and are built with ``MetricsConfig.from_section(section)`` from a
validated section (tests: ``section_defaults("metrics", overrides)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from multibeta.core.config import Section
from multibeta.utils.bases import IcaSettings

FeatureSpaceName = Literal["inception", "factor_classifier"]
DciEstimator = Literal["gbt", "random_forest", "logistic"]
LpipsMode = Literal["auto", "always", "never"]

#: Tolerance when matching requested ``metrics.levels`` to the cached level times.
LEVEL_MATCH_TOL = 1e-6


@dataclass(frozen=True)
class GenerationConfig:
    """FID/KID options (``metrics.generation``)."""

    feature_spaces: tuple[FeatureSpaceName, ...]
    n_reference: int
    max_samples: int | None
    kid_subset_size: int
    kid_subsets: int
    batch_size: int


@dataclass(frozen=True)
class FactorClassifierConfig:
    """Domain feature-space classifier (``metrics.factor_classifier``)."""

    steps: int
    batch_size: int
    learning_rate: float
    channels: int
    width: int
    holdout_fraction: float
    max_images: int | None


@dataclass(frozen=True)
class ReconstructionConfig:
    """Reconstruction metrics (``metrics.reconstruction``)."""

    n_images: int
    batch_size: int
    lpips: LpipsMode


@dataclass(frozen=True)
class MigConfig:
    """MIG (``metrics.mig``)."""

    n_train: int
    num_bins: int


@dataclass(frozen=True)
class DciConfig:
    """DCI (``metrics.dci``)."""

    n_train: int
    n_test: int
    estimator: DciEstimator
    best_level_estimator: DciEstimator | None


@dataclass(frozen=True)
class FactorVaeConfig:
    """FactorVAE score (``metrics.factorvae``)."""

    batch_size: int
    n_train: int
    n_eval: int
    n_variance_estimate: int
    prune_threshold: float


@dataclass(frozen=True)
class SapConfig:
    """SAP (``metrics.sap``)."""

    n_train: int
    n_test: int
    continuous_factors: bool


@dataclass(frozen=True)
class TadConfig:
    """TAD (``metrics.tad``)."""

    n_images: int
    folds: int
    auroc_threshold: float
    entropy_reduction_threshold: float
    from_factors: Literal["median", "none"]


@dataclass(frozen=True)
class MetricsConfig(Section):
    """The whole ``metrics`` section; see ``workflow/schemas/metrics.schema.yaml``."""

    SECTION = "metrics"

    seed: int
    levels: tuple[float, ...] | None
    rotations: tuple[str, ...]
    ica: IcaSettings
    primary_basis: str
    weights_dir: str
    inception_weights: str | None
    lpips_weights: str | None
    download_timeout_s: float
    generation: GenerationConfig
    factor_classifier: FactorClassifierConfig
    reconstruction: ReconstructionConfig
    mig: MigConfig
    dci: DciConfig
    factorvae: FactorVaeConfig
    sap: SapConfig
    tad: TadConfig


def select_levels(cached_t: np.ndarray, levels: tuple[float, ...] | None) -> np.ndarray:
    """Indices into the cache's level grid ``cached_t`` [K] of the levels to evaluate.

    Args:
        cached_t: the latent cache's level times (ascending).
        levels: ``MetricsConfig.levels``; None selects every level.

    Raises:
        ValueError: a requested time is not a cached level (names ``metrics.levels``).
    """
    cached_t = np.asarray(cached_t, dtype=np.float64)
    if levels is None:
        return np.arange(len(cached_t))
    out = []
    for t in levels:
        k = int(np.argmin(np.abs(cached_t - t)))
        if abs(cached_t[k] - t) > LEVEL_MATCH_TOL:
            raise ValueError(
                f"metrics.levels asks for t={t}, which is not a level of the latent cache "
                f"(cached: {np.round(cached_t, 6).tolist()}). Use cached times or null for all."
            )
        out.append(k)
    return np.asarray(out, dtype=np.int64)
