"""Separated Attribute Predictability (SAP) score.

Kumar, Sattigeri & Balakrishnan, "Variational Inference of Disentangled Latent Concepts
from Unlabeled Observations", ICLR 2018 (Section 3); implementation as
google-research/disentanglement_lib ``evaluation/metrics/sap_score.py``:

1. score matrix S [D, F]: how well code dimension i alone predicts factor k;
   - discrete factors (disentanglement_lib's setting, ``continuous_factors: false``): test
     accuracy of ``LinearSVC(C=0.01, class_weight="balanced")`` trained on dimension i
     alone (``n_train`` points, ``n_test`` held-out points);
   - continuous factors: squared correlation cov(z_i, v_k)^2 / (var z_i var v_k),
     0 when var z_i <= 1e-12;
2. SAP = mean over factors of (largest - second largest entry of column k).

Range [0, 1]; 0 when no single dimension stands out. Factors are class indices, as in
disentanglement_lib. In the discrete variant an uninformative dimension still scores
chance accuracy (1/2 for a balanced binary factor), and 1-D linear classifiers with
C=0.01 cannot separate every class of a many-valued factor, so even a perfect code
stays well below 1 (0.5 for binary factors; about 0.2 on dSprites' factors, measured);
the continuous variant reaches 1 for an identity code.
"""

from __future__ import annotations

import logging
import warnings
from typing import Sequence

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from multibeta.metrics.config import SapConfig
from multibeta.metrics.utils import Timer, check_codes_factors, select_varying_factors, split_rows

logger = logging.getLogger(__name__)

#: LinearSVC regularisation of the discrete variant (disentanglement_lib's constant).
SVC_C = 0.01
#: Below this code variance the continuous score is 0 (disentanglement_lib's constant).
MIN_VARIANCE = 1e-12


def _score_matrix(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
    continuous_factors: bool, random_state: int,
) -> np.ndarray:
    """S [D, F] from codes [N, D] and factors [N, F] (test arrays unused when continuous)."""
    num_codes, num_factors = x_train.shape[1], y_train.shape[1]
    score = np.zeros((num_codes, num_factors))
    for i in range(num_codes):
        for k in range(num_factors):
            z, v = x_train[:, i], y_train[:, k]
            if continuous_factors:
                cov = np.cov(z, v.astype(np.float64), ddof=1)
                if cov[0, 0] > MIN_VARIANCE:
                    score[i, k] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1])
            else:
                clf = LinearSVC(C=SVC_C, class_weight="balanced", random_state=random_state)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    clf.fit(z[:, None], v)
                score[i, k] = np.mean(clf.predict(x_test[:, i:i + 1]) == y_test[:, k])
    return score


def _avg_diff_top_two(matrix: np.ndarray) -> float:
    """Mean over columns of (largest - second largest entry)."""
    sorted_matrix = np.sort(matrix, axis=0)
    return float(np.mean(sorted_matrix[-1, :] - sorted_matrix[-2, :]))


def compute_sap(
    codes: np.ndarray,
    factor_classes: np.ndarray,
    cfg: SapConfig,
    *,
    seed: int,
    factor_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """SAP score of a representation on seeded disjoint train/test subsets of the rows.

    Args:
        codes: float [N, D] (D >= 2).
        factor_classes: int [N, F] factor class indices; constant factors are dropped.
        cfg: ``metrics.sap`` options.
        seed: seed of the subsets (and of LinearSVC's coordinate descent).
        factor_names: only used in log messages.

    Returns:
        ``sap``, ``sap_continuous`` (0/1), ``sap_n_train``, ``sap_n_test``, ``sap_n_factors``,
        ``seed``, ``elapsed_s``.
    """
    timer = Timer()
    codes, factors = check_codes_factors(codes, factor_classes)
    if codes.shape[1] < 2:
        raise ValueError("SAP needs a code with at least 2 dimensions")
    rng = np.random.default_rng(seed)
    n_test = 0 if cfg.continuous_factors else cfg.n_test
    if cfg.continuous_factors:
        train = np.sort(rng.permutation(len(codes))[: min(cfg.n_train, len(codes))])
        test = train[:0]
    else:
        train, test = split_rows(len(codes), cfg.n_train, n_test, rng)
    keep, names = select_varying_factors(factors[train], factor_names)
    score = _score_matrix(codes[train], factors[train][:, keep], codes[test], factors[test][:, keep],
                          cfg.continuous_factors, int(rng.integers(2**31 - 1)))
    sap = _avg_diff_top_two(score)
    logger.info("SAP %.4f (%s factors)", sap, "continuous" if cfg.continuous_factors else "discrete")
    return timer.finish({
        "sap": sap,
        "sap_continuous": float(cfg.continuous_factors),
        "sap_n_train": len(train),
        "sap_n_test": len(test),
        "sap_n_factors": len(names),
    }, seed)
