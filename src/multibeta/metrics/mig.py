"""Mutual Information Gap (MIG).

Chen, Li, Grosse & Duvenaud, "Isolating Sources of Disentanglement in Variational
Autoencoders", NeurIPS 2018 (arXiv:1802.04942); implementation as
google-research/disentanglement_lib ``evaluation/metrics/mig.py``:

1. discretise each code dimension into ``num_bins`` equal-width histogram bins
   (:func:`multibeta.metrics.utils.histogram_discretize`, 20 bins in disentanglement_lib);
2. ``m[i, k] = I(z_i; v_k)`` between discretised dimension i and factor k (nats);
3. ``MIG = mean_k (m_(1)k - m_(2)k) / H(v_k)`` with m_(1), m_(2) the largest and second
   largest entries of column k.

Range [0, 1]: 1 when each factor is captured by exactly one dimension (and the binning
keeps all its values apart), 0 when no dimension is informative or two are equally so.
Factors are the discrete class indices (as disentanglement_lib uses factor indices).
Constant factors (entropy 0) are dropped and reported as ``mig_n_factors``.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from multibeta.metrics.config import MigConfig
from multibeta.metrics.utils import (
    Timer,
    check_codes_factors,
    discrete_entropy,
    discrete_mutual_info,
    histogram_discretize,
    sample_rows,
    select_varying_factors,
)

logger = logging.getLogger(__name__)


def _mig(codes: np.ndarray, factors: np.ndarray, num_bins: int) -> tuple[float, np.ndarray]:
    """MIG of codes [N, D] (D >= 2) against discrete factors [N, F] (non-constant).

    Returns:
        (MIG, per-factor normalised gap [F]).
    """
    if codes.shape[1] < 2:
        raise ValueError("MIG needs a code with at least 2 dimensions")
    discretized = histogram_discretize(codes, num_bins)
    m = discrete_mutual_info(discretized, factors)
    entropy = discrete_entropy(factors)
    sorted_m = np.sort(m, axis=0)[::-1]
    gaps = (sorted_m[0, :] - sorted_m[1, :]) / entropy
    return float(np.mean(gaps)), gaps


def compute_mig(
    codes: np.ndarray,
    factor_classes: np.ndarray,
    cfg: MigConfig,
    *,
    seed: int,
    factor_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """MIG of a representation on a seeded random subset of ``cfg.n_train`` rows.

    Args:
        codes: float [N, D], one code per image (e.g. the cached mu_t).
        factor_classes: int [N, F] ground-truth factor class indices of the same images.
        cfg: ``metrics.mig`` options.
        seed: seed of the row subset.
        factor_names: names for the per-factor entries (``factor_<j>`` when None).

    Returns:
        ``mig``, ``mig.<factor>`` per factor, ``mig_n_factors``, ``mig_n_points``,
        ``seed``, ``elapsed_s``.
    """
    timer = Timer()
    codes, factors = check_codes_factors(codes, factor_classes)
    rng = np.random.default_rng(seed)
    rows = sample_rows(len(codes), cfg.n_train, rng)
    keep, names = select_varying_factors(factors[rows], factor_names)
    score, gaps = _mig(codes[rows], factors[rows][:, keep], cfg.num_bins)
    result = {"mig": score, "mig_n_factors": len(names), "mig_n_points": len(rows)}
    result.update({f"mig.{name}": gap for name, gap in zip(names, gaps)})
    logger.info("MIG %.4f on %d points", score, len(rows))
    return timer.finish(result, seed)
