"""Primitives shared by the disentanglement metrics (as disentanglement_lib's ``utils.py``).

Layouts are ``[N, D]`` (one row per image) throughout. Information quantities are in nats
(natural log), as ``sklearn.metrics.mutual_info_score`` returns them.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import numpy as np
from sklearn.metrics import mutual_info_score

logger = logging.getLogger(__name__)


def histogram_discretize(codes: np.ndarray, num_bins: int) -> np.ndarray:
    """Discretise each column into ``num_bins`` equal-width bins over its own range.

    Exactly disentanglement_lib's ``_histogram_discretize``: bin edges from
    ``np.histogram(column, num_bins)``, labels ``np.digitize(column, edges[:-1])`` in
    1..num_bins (the maximum falls in the last bin; a constant column falls in one bin).

    Args:
        codes: float [N, D].
        num_bins: bins per column.

    Returns:
        int64 [N, D] bin labels.
    """
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be [N, D], got shape {codes.shape}")
    out = np.zeros(codes.shape, dtype=np.int64)
    for j in range(codes.shape[1]):
        edges = np.histogram(codes[:, j], num_bins)[1]
        out[:, j] = np.digitize(codes[:, j], edges[:-1])
    return out


def discrete_entropy(labels: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each column of discrete labels [N, F] -> [F]."""
    labels = np.asarray(labels)
    return np.array([mutual_info_score(labels[:, j], labels[:, j]) for j in range(labels.shape[1])])


def discrete_mutual_info(codes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mutual information (nats) between discrete code columns [N, D] and labels [N, F] -> [D, F]."""
    codes, labels = np.asarray(codes), np.asarray(labels)
    if codes.shape[0] != labels.shape[0]:
        raise ValueError(f"codes has {codes.shape[0]} rows but labels has {labels.shape[0]}")
    m = np.zeros((codes.shape[1], labels.shape[1]))
    for i in range(codes.shape[1]):
        for j in range(labels.shape[1]):
            m[i, j] = mutual_info_score(labels[:, j], codes[:, i])
    return m


def binary_mutual_information(labels: np.ndarray) -> np.ndarray:
    """I(a_i; a_j) in nats for every pair of binary labels [N, A] -> [A, A] (diagonal: H(a_i)).

    From the 2×2 joint frequencies of each pair, all pairs at once (equal to scikit-learn's
    ``mutual_info_score`` pair by pair). Each column's larger value counts as 1.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be [N, A], got shape {labels.shape}")
    for j in range(labels.shape[1]):
        if np.unique(labels[:, j]).size > 2:
            raise ValueError(f"label column {j} is not binary")
    ones = (labels == labels.max(axis=0, keepdims=True)).astype(np.float64)
    n = len(ones)
    p1 = ones.mean(axis=0)  # [A]
    p11 = ones.T @ ones / n  # [A, A]
    joint = {
        (1, 1): p11,
        (1, 0): p1[:, None] - p11,
        (0, 1): p1[None, :] - p11,
        (0, 0): 1.0 - p1[:, None] - p1[None, :] + p11,
    }
    marginal = {1: p1, 0: 1.0 - p1}
    mi = np.zeros_like(p11)
    with np.errstate(divide="ignore", invalid="ignore"):
        for (x, y), pxy in joint.items():
            pxy = np.clip(pxy, 0.0, 1.0)
            product = np.outer(marginal[x], marginal[y])
            term = pxy * np.log(pxy / product)
            # 0·log 0 = 0; the tolerance absorbs rounding of the differences above
            mi += np.where((pxy > 1e-12) & (product > 0), term, 0.0)
    return np.maximum(mi, 0.0)


def binary_entropy_reduction(labels: np.ndarray) -> np.ndarray:
    """For binary labels [N, A]: the largest fraction of each label's entropy explained by another.

    ``r_i = max_{j != i} I(a_i; a_j) / H(a_i)``, the "proportion of entropy reduced by
    another trait" of NashAE/InfoDiffusion's TAD (there ``1 - (H_i - max_j I_ij) / H_i``).
    A constant label (H = 0) gives NaN, which never passes a ``<=`` threshold. With a
    single label the maximum over an empty set is taken as 0.
    """
    mi = binary_mutual_information(labels)
    a = mi.shape[0]
    entropy = np.diag(mi).copy()
    off = mi - np.diag(entropy)
    best_other = off.max(axis=1) if a > 1 else np.zeros(a)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(entropy > 0, best_other / np.where(entropy > 0, entropy, 1.0), np.nan)


def varying_columns(labels: np.ndarray) -> np.ndarray:
    """Boolean mask [F] of the label columns that take more than one value."""
    labels = np.asarray(labels)
    return np.array([np.unique(labels[:, j]).size > 1 for j in range(labels.shape[1])], dtype=bool)


def sample_rows(n_total: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``min(n, n_total)`` distinct row indices drawn uniformly (sorted)."""
    n = min(int(n), int(n_total))
    if n < int(n_total):
        return np.sort(rng.choice(n_total, size=n, replace=False))
    return np.arange(n_total)


def split_rows(
    n_total: int, n_train: int, n_test: int, rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint random train and test row indices.

    disentanglement_lib draws train and test points independently from the full
    generative dataset. From a finite table we draw them disjointly; when fewer than
    ``n_train + n_test`` rows exist, both counts are scaled down in proportion (logged).
    """
    want = n_train + n_test
    if want > n_total:
        n_train_used = max(1, int(round(n_total * n_train / want)))
        n_test_used = max(1, n_total - n_train_used)
        n_train_used = n_total - n_test_used
        logger.warning(
            "only %d rows for %d train + %d test points: using %d + %d",
            n_total, n_train, n_test, n_train_used, n_test_used,
        )
        n_train, n_test = n_train_used, n_test_used
    perm = rng.permutation(n_total)
    return np.sort(perm[:n_train]), np.sort(perm[n_train:n_train + n_test])


def check_codes_factors(codes: np.ndarray, factors: np.ndarray, what: str = "factor_classes") -> tuple[np.ndarray, np.ndarray]:
    """Validate ``codes`` [N, D] (finite floats) and ``factors`` [N, F] (same N); return them as arrays."""
    codes = np.asarray(codes, dtype=np.float64)
    factors = np.asarray(factors)
    if codes.ndim != 2 or factors.ndim != 2:
        raise ValueError(f"codes must be [N, D] and {what} [N, F]; got {codes.shape} and {factors.shape}")
    if codes.shape[0] != factors.shape[0]:
        raise ValueError(f"codes has {codes.shape[0]} rows but {what} has {factors.shape[0]}")
    if not np.isfinite(codes).all():
        raise ValueError("codes contain NaN or inf values")
    return codes, factors


def select_varying_factors(
    factors: np.ndarray, names: Sequence[str] | None,
) -> tuple[np.ndarray, list[str]]:
    """Mask of the non-constant factor columns (a constant factor has entropy 0, so no
    metric is defined for it), logging the ones dropped.

    Returns:
        (boolean mask [F], names of the kept factors; ``factor_<j>`` when ``names`` is None).
    """
    names = list(names) if names is not None else [f"factor_{j}" for j in range(factors.shape[1])]
    if len(names) != factors.shape[1]:
        raise ValueError(f"{len(names)} factor names for {factors.shape[1]} factor columns")
    keep = varying_columns(factors)
    if not keep.all():
        logger.warning("ignoring constant factors: %s", [n for n, k in zip(names, keep) if not k])
    if not keep.any():
        raise ValueError("every factor is constant on the given rows; no disentanglement metric is defined")
    return keep, [n for n, k in zip(names, keep) if k]


class Timer:
    """Wall-clock timer that stamps results with ``seed`` and ``elapsed_s``."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def finish(self, result: dict[str, Any], seed: int | None) -> dict[str, float]:
        """Add ``seed`` (when given) and ``elapsed_s``; convert values to plain floats."""
        out = {k: float(v) for k, v in result.items()}
        if seed is not None:
            out["seed"] = float(seed)
        out["elapsed_s"] = time.perf_counter() - self.start
        return out
