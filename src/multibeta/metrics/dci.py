"""DCI: disentanglement, completeness and informativeness.

Eastwood & Williams, "A Framework for the Quantitative Evaluation of Disentangled
Representations", ICLR 2018; implementation as google-research/disentanglement_lib
``evaluation/metrics/dci.py``:

1. for each factor k, fit a classifier of the factor class from the whole code on
   ``n_train`` points; its feature importances (absolute values) form column k of the
   importance matrix R [D, F];
2. informativeness = mean over factors of the classifier's accuracy on the train points
   (``informativeness_train``) and on ``n_test`` held-out points (``informativeness_test``);
3. disentanglement = sum_i rho_i (1 - H_F(P_i.)), where P_i. is row i of R normalised to
   sum 1, H_F the entropy in base F, and rho_i = sum_k R_ik / sum R (code importance);
4. completeness = sum_k rho_k (1 - H_D(P_.k)), columns normalised, base D, rho_k the
   factor importance.

As disentanglement_lib, 1e-11 is added to R before the entropies (so an all-zero row has
the uniform, maximal entropy) and an all-zero R weights rows/columns uniformly.

The classifier (``metrics.dci.estimator``) is the one deviation allowed from
disentanglement_lib, whose choice is scikit-learn's ``GradientBoostingClassifier()`` with
default settings (``gbt`` here); it takes minutes per level at 10,000 points when factors
have 32-40 classes. ``random_forest`` (default here; 50 trees of depth 8, all dimensions
considered at each split) uses impurity importances as gbt does and is 10-50x faster;
``logistic`` uses |coefficients| on standardised codes.
Scores from different estimators are not interchangeable; the estimator is recorded.
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np
import scipy.stats
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from multibeta.metrics.config import DciConfig, DciEstimator
from multibeta.metrics.utils import Timer, check_codes_factors, select_varying_factors, split_rows

logger = logging.getLogger(__name__)

#: Added to the importance matrix before entropies (disentanglement_lib's constant).
IMPORTANCE_EPS = 1e-11
#: random_forest estimator: trees and depth (depth bounds the cost and the over-fitting of
#: uninformative dimensions). Every split considers all dimensions (``max_features=None``),
#: as gbt does: with scikit-learn's default sqrt(D) candidates, splits are forced onto
#: uninformative dimensions and an identity code scores D ~ 0.5 instead of 1 (measured).
RF_TREES = 50
RF_MAX_DEPTH = 8
#: logistic estimator: iteration cap of lbfgs.
LOGISTIC_MAX_ITER = 1000
#: Estimator ids recorded in results.
ESTIMATOR_IDS: dict[str, int] = {"gbt": 0, "random_forest": 1, "logistic": 2}


def available_cores() -> int:
    """Cores this process may use (the job's CPU allocation on SLURM, all cores locally)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not available on macOS
        return max(1, os.cpu_count() or 1)


def _fit_importance(
    estimator: DciEstimator, x: np.ndarray, y: np.ndarray, random_state: int,
) -> tuple[np.ndarray, object]:
    """Fit one per-factor classifier on x [N, D], y [N]; return (|importance| [D], predictor)."""
    if estimator == "gbt":
        model = GradientBoostingClassifier(random_state=random_state)
        model.fit(x, y)
        return np.abs(model.feature_importances_), model
    if estimator == "random_forest":
        model = RandomForestClassifier(
            n_estimators=RF_TREES, max_depth=RF_MAX_DEPTH, max_features=None, random_state=random_state,
            n_jobs=available_cores(),  # trees are seeded up front: results do not depend on n_jobs
        )
        model.fit(x, y)
        return np.abs(model.feature_importances_), model
    if estimator == "logistic":
        scaler = StandardScaler().fit(x)
        model = LogisticRegression(max_iter=LOGISTIC_MAX_ITER, random_state=random_state)
        model.fit(scaler.transform(x), y)

        class _Scaled:
            def predict(self, z: np.ndarray) -> np.ndarray:
                return model.predict(scaler.transform(z))

        return np.abs(model.coef_).sum(axis=0), _Scaled()
    raise ValueError(f"unknown DCI estimator {estimator!r}; use one of {sorted(ESTIMATOR_IDS)}")


def _importance_matrix(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
    estimator: DciEstimator, rng: np.random.Generator,
) -> tuple[np.ndarray, float, float]:
    """Importance matrix [D, F] and mean train / test accuracy over factors."""
    num_codes, num_factors = x_train.shape[1], y_train.shape[1]
    importance = np.zeros((num_codes, num_factors))
    train_acc, test_acc = [], []
    for k in range(num_factors):
        imp, model = _fit_importance(estimator, x_train, y_train[:, k], int(rng.integers(2**31 - 1)))
        importance[:, k] = imp
        train_acc.append(np.mean(model.predict(x_train) == y_train[:, k]))
        test_acc.append(np.mean(model.predict(x_test) == y_test[:, k]))
    return importance, float(np.mean(train_acc)), float(np.mean(test_acc))


def _disentanglement(importance: np.ndarray) -> float:
    """Weighted mean over codes of 1 - entropy (base F) of each row of R [D, F]."""
    per_code = 1.0 - scipy.stats.entropy(importance.T + IMPORTANCE_EPS, base=importance.shape[1])
    if importance.sum() == 0.0:
        importance = np.ones_like(importance)
    code_importance = importance.sum(axis=1) / importance.sum()
    return float(np.sum(per_code * code_importance))


def _completeness(importance: np.ndarray) -> float:
    """Weighted mean over factors of 1 - entropy (base D) of each column of R [D, F]."""
    per_factor = 1.0 - scipy.stats.entropy(importance + IMPORTANCE_EPS, base=importance.shape[0])
    if importance.sum() == 0.0:
        importance = np.ones_like(importance)
    factor_importance = importance.sum(axis=0) / importance.sum()
    return float(np.sum(per_factor * factor_importance))


def _dci(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
    estimator: DciEstimator, rng: np.random.Generator,
) -> dict[str, float]:
    """DCI scores from train/test codes [N, D] and factor classes [N, F]."""
    if x_train.shape[1] < 2 or y_train.shape[1] < 2:
        raise ValueError("DCI needs at least 2 code dimensions and 2 factors (entropy bases)")
    importance, train_acc, test_acc = _importance_matrix(x_train, y_train, x_test, y_test, estimator, rng)
    return {
        "dci_disentanglement": _disentanglement(importance),
        "dci_completeness": _completeness(importance),
        "dci_informativeness_train": train_acc,
        "dci_informativeness_test": test_acc,
    }


def compute_dci(
    codes: np.ndarray,
    factor_classes: np.ndarray,
    cfg: DciConfig,
    *,
    seed: int,
    factor_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """DCI of a representation on disjoint seeded train/test subsets of the rows.

    Args:
        codes: float [N, D], one code per image.
        factor_classes: int [N, F] factor class indices of the same images.
        cfg: ``metrics.dci`` options.
        seed: seed of the subsets and of the estimators.
        factor_names: only used in log messages about constant factors.

    Returns:
        ``dci_disentanglement``, ``dci_completeness``, ``dci_informativeness_train``,
        ``dci_informativeness_test``, ``dci_estimator`` (0 gbt, 1 random_forest,
        2 logistic), ``dci_n_train``, ``dci_n_test``, ``dci_n_factors``, ``seed``, ``elapsed_s``.
    """
    timer = Timer()
    codes, factors = check_codes_factors(codes, factor_classes)
    rng = np.random.default_rng(seed)
    train, test = split_rows(len(codes), cfg.n_train, cfg.n_test, rng)
    keep, names = select_varying_factors(factors[train], factor_names)
    result = _dci(codes[train], factors[train][:, keep], codes[test], factors[test][:, keep], cfg.estimator, rng)
    logger.info("DCI (%s): D=%.4f C=%.4f I_test=%.4f", cfg.estimator, result["dci_disentanglement"],
                result["dci_completeness"], result["dci_informativeness_test"])
    result.update({
        "dci_estimator": ESTIMATOR_IDS[cfg.estimator],
        "dci_n_train": len(train),
        "dci_n_test": len(test),
        "dci_n_factors": len(names),
    })
    return timer.finish(result, seed)
