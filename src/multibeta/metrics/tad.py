"""Total AUROC Difference (TAD) for data with binary attributes (CelebA).

Yeats, Liu, Womble, Li & Chen, "NashAE: Disentangling Representations Through
Adversarial Covariance Minimization", ECCV 2022; evaluation protocol of InfoDiffusion
(Wang, Yang, Hochberg, Kleinberg & Kuleshov, ICML 2023, ``eval_disentanglement.py``),
reproduced here exactly:

1. take the first ``n_images`` (10,000) codes z [N, D] and binary attributes a [N, A];
2. split them with ``KFold(n_splits=folds (5), shuffle=True, random_state=seed)``; for
   each fold, standardise the codes with a ``StandardScaler`` fitted on the fold's
   training part, and compute TAD on that training part (the test part is not used by
   TAD; InfoDiffusion uses it for a linear probe);
3. TAD of one fold:
   - ``AUROC[i, d] = max(roc_auc(a_i, z_d), roc_auc(a_i, -z_d))`` for every attribute i
     and code dimension d (computed from ranks, equal to scikit-learn's ``roc_auc_score``;
     a dimension can predict an attribute with either sign);
   - ``diff_i = AUROC[i, d*] - max_{d != d*} AUROC[i, d]`` with d* = argmax_d AUROC[i, d]
     (best minus second-best single dimension);
   - entropy reduction ``r_i = max_{j != i} I(a_i; a_j) / H(a_i)`` (natural logs; the
     fraction of the attribute's entropy explained by the most informative other
     attribute; InfoDiffusion writes it ``1 - (H_i - max_j I_ij) / H_i``);
   - attribute i is *captured* if ``max_d AUROC[i, d] >= auroc_threshold`` (0.75) and
     ``r_i <= entropy_reduction_threshold`` (0.2);
   - ``TAD = sum over captured attributes of diff_i``; ``tad_attributes`` = their number;
4. report the mean (and standard deviation) over folds of TAD and of the number of
   captured attributes.

A code with one dimension per attribute scores up to (number of nearly independent
attributes) x (AUROC gap); random codes score ~0. Edge cases (not reachable in
InfoDiffusion's CelebA setting, handled explicitly here): an attribute constant on a
fold's training part gets AUROC 0.5 for every dimension and entropy reduction NaN, so it
is never captured; a code with one dimension has no second-best, taken here as AUROC 0.5
(chance), so diff = AUROC - 0.5 (InfoDiffusion's code would subtract 0 there).
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
from scipy.stats import rankdata
from sklearn.model_selection import KFold
from sklearn.preprocessing import StandardScaler

from multibeta.metrics.config import TadConfig
from multibeta.metrics.utils import Timer, binary_entropy_reduction

logger = logging.getLogger(__name__)

#: AUROC of an uninformative predictor (constant attribute, missing second-best).
CHANCE_AUROC = 0.5


def _auroc_matrix(codes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``max(AUROC(a_i, z_d), AUROC(a_i, -z_d))`` for labels [N, A] and codes [N, D] -> [A, D].

    All pairs at once by the Mann-Whitney form of the AUROC: with r the ranks of z_d among the
    N codes (ties share their mean rank, as in scikit-learn's ``roc_auc_score``),
    AUROC = (Σ_{positives} r − n₊(n₊ + 1)/2) / (n₊ n₋). A constant attribute scores 0.5.
    """
    labels = np.asarray(labels, dtype=np.float64)
    ranks = rankdata(np.asarray(codes, dtype=np.float64), axis=0)  # [N, D], ties averaged
    n_pos = labels.sum(axis=0)  # [A]
    n_neg = labels.shape[0] - n_pos
    rank_sums = labels.T @ ranks  # [A, D]
    out = np.full((labels.shape[1], codes.shape[1]), CHANCE_AUROC)
    ok = (n_pos > 0) & (n_neg > 0)
    auc = (rank_sums[ok] - (n_pos[ok] * (n_pos[ok] + 1) / 2)[:, None]) / (n_pos[ok] * n_neg[ok])[:, None]
    out[ok] = np.maximum(auc, 1.0 - auc)  # either sign of z_d may predict the attribute
    return out


def _tad(
    codes: np.ndarray, labels: np.ndarray, auroc_threshold: float, entropy_reduction_threshold: float,
) -> tuple[float, np.ndarray, np.ndarray]:
    """TAD of (standardised) codes [N, D] and binary labels [N, A].

    Returns:
        (TAD, captured mask [A], AUROC matrix [A, D]).
    """
    aurocs = _auroc_matrix(codes, labels)
    best = aurocs.max(axis=1)
    if aurocs.shape[1] > 1:
        second = np.sort(aurocs, axis=1)[:, -2]
    else:
        second = np.full(len(best), CHANCE_AUROC)
    diffs = best - second
    reduction = binary_entropy_reduction(labels)
    with np.errstate(invalid="ignore"):
        captured = (best >= auroc_threshold) & (reduction <= entropy_reduction_threshold)
    return float(diffs[captured].sum()), captured, aurocs


def compute_tad(
    codes: np.ndarray,
    attributes: np.ndarray,
    cfg: TadConfig,
    *,
    seed: int,
    attribute_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """TAD with InfoDiffusion's protocol (first ``n_images``, k-fold, standardised codes).

    Args:
        codes: float [N, D] codes of the images in dataset row order.
        attributes: {0, 1} [N, A] binary attributes of the same images.
        cfg: ``metrics.tad`` options.
        seed: ``random_state`` of the shuffled KFold (InfoDiffusion uses 0).
        attribute_names: names for the per-attribute capture frequencies.

    Returns:
        ``tad`` and ``tad_std`` (over folds), ``tad_attributes`` and ``tad_attributes_std``
        (number captured), ``tad_captured.<name>`` (fraction of folds in which each
        attribute is captured), ``tad_n_images``, ``tad_folds``, ``seed``, ``elapsed_s``.
    """
    timer = Timer()
    codes = np.asarray(codes, dtype=np.float64)
    labels = np.asarray(attributes).astype(np.int64)
    if codes.ndim != 2 or labels.ndim != 2 or len(codes) != len(labels):
        raise ValueError(f"codes must be [N, D] and attributes [N, A]; got {codes.shape} and {labels.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("attributes must be binary (0/1)")
    n = min(cfg.n_images, len(codes))
    if n < cfg.n_images:
        logger.warning("TAD: only %d images (metrics.tad.n_images is %d)", n, cfg.n_images)
    codes, labels = codes[:n], labels[:n]
    names = list(attribute_names) if attribute_names is not None else [f"attr_{i}" for i in range(labels.shape[1])]
    scores, counts, captured_sum = [], [], np.zeros(labels.shape[1])
    for train, _test in KFold(n_splits=cfg.folds, shuffle=True, random_state=seed).split(codes):
        z = StandardScaler().fit(codes[train]).transform(codes[train])
        score, captured, _ = _tad(z, labels[train], cfg.auroc_threshold, cfg.entropy_reduction_threshold)
        scores.append(score)
        counts.append(captured.sum())
        captured_sum += captured
    result = {
        "tad": float(np.mean(scores)),
        "tad_std": float(np.std(scores)),
        "tad_attributes": float(np.mean(counts)),
        "tad_attributes_std": float(np.std(counts)),
        "tad_n_images": n,
        "tad_folds": cfg.folds,
    }
    result.update({f"tad_captured.{name}": c / cfg.folds for name, c in zip(names, captured_sum)})
    logger.info("TAD %.4f +- %.4f, %.1f attributes captured", result["tad"], result["tad_std"], result["tad_attributes"])
    return timer.finish(result, seed)


def factor_attributes(factor_classes: np.ndarray, factor_names: Sequence[str] | None = None,
                      rule: str = "median") -> tuple[np.ndarray, list[str]]:
    """Binary attributes from integer factor classes, for TAD on data without attributes
    (``metrics.tad.from_factors``).

    ``median``: attribute k is 1 where factor k lies strictly above its median over the rows
    (a factor whose classes are uniform, as in dSprites, gives about half ones; shape with
    classes 0, 1, 2 gives "shape > 1"). Factors with one class are left out.

    Args:
        factor_classes: int [N, F].
        factor_names: the factors' names (``factor_k`` when None).

    Returns:
        ``attributes`` {0, 1} [N, F'] and their names ``<factor>>median``.

    Raises:
        ValueError: an unknown rule.
    """
    if rule != "median":
        raise ValueError(f"unknown metrics.tad.from_factors rule {rule!r}; use median or none")
    classes = np.asarray(factor_classes)
    names = list(factor_names) if factor_names is not None else [f"factor_{k}" for k in range(classes.shape[1])]
    columns, kept = [], []
    for k in range(classes.shape[1]):
        above = classes[:, k] > np.median(classes[:, k])
        if above.any() and not above.all():
            columns.append(above.astype(np.int64))
            kept.append(f"{names[k]}>median")
    return (np.stack(columns, axis=1) if columns else np.zeros((len(classes), 0), np.int64)), kept

