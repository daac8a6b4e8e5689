"""All disentanglement metrics of one code (one level of the latent cache) in one call.

On data with ground-truth factors: MIG, DCI, FactorVAE score and SAP
(:mod:`.mig`, :mod:`.dci`, :mod:`.factorvae`, :mod:`.sap`); on data with binary
attributes: TAD (:mod:`.tad`); on data with factors but no attributes, TAD too, of the factors
binarised by ``metrics.tad.from_factors`` (:func:`.tad.factor_attributes`). Every metric starts
its own generator from ``metrics.seed``, so each result is independent of which other metrics run.
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

import numpy as np

from multibeta.metrics.config import MetricsConfig
from multibeta.metrics.dci import compute_dci
from multibeta.metrics.factorvae import compute_factorvae
from multibeta.metrics.mig import compute_mig
from multibeta.metrics.sap import compute_sap
from multibeta.metrics.tad import compute_tad, factor_attributes

logger = logging.getLogger(__name__)

#: Result keys every metric adds on its own; kept once per metric under ``<metric>_<key>``.
_BOOKKEEPING = ("seed", "elapsed_s")


def _merge(out: dict[str, float], name: str, result: dict[str, float]) -> None:
    for key, value in result.items():
        out[f"{name}_{key}" if key in _BOOKKEEPING else key] = value


def compute_disentanglement(
    codes: np.ndarray,
    cfg: MetricsConfig,
    *,
    factor_classes: np.ndarray | None = None,
    factor_names: Sequence[str] | None = None,
    attributes: np.ndarray | None = None,
    attribute_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """Every applicable disentanglement metric of ``codes`` [N, D].

    Args:
        codes: one code per image (e.g. the cache's mu at one level), rows aligned with the labels.
        cfg: the ``metrics`` options.
        factor_classes: int [N, F] factor classes -> MIG, DCI, FactorVAE score, SAP.
        factor_names: names of the factors.
        attributes: {0, 1} [N, A] binary attributes in dataset row order -> TAD.
        attribute_names: names of the attributes.

    Returns:
        The metrics' keys merged (``seed``/``elapsed_s`` become ``<metric>_seed`` /
        ``<metric>_elapsed_s``), plus ``elapsed_s`` in total.

    Raises:
        ValueError: neither factors nor attributes given.
    """
    if factor_classes is None and attributes is None:
        raise ValueError("disentanglement needs factor_classes (MIG, DCI, FactorVAE, SAP) or attributes (TAD)")
    start = time.perf_counter()
    out: dict[str, float] = {}
    if factor_classes is not None:
        seed = cfg.seed
        _merge(out, "mig", compute_mig(codes, factor_classes, cfg.mig, seed=seed, factor_names=factor_names))
        _merge(out, "dci", compute_dci(codes, factor_classes, cfg.dci, seed=seed, factor_names=factor_names))
        _merge(out, "factorvae", compute_factorvae(codes, factor_classes, cfg.factorvae, seed=seed,
                                                   factor_names=factor_names))
        _merge(out, "sap", compute_sap(codes, factor_classes, cfg.sap, seed=seed, factor_names=factor_names))
    if attributes is not None:
        _merge(out, "tad", compute_tad(codes, attributes, cfg.tad, seed=cfg.seed, attribute_names=attribute_names))
    elif factor_classes is not None and cfg.tad.from_factors != "none":
        derived, names = factor_attributes(factor_classes, factor_names, cfg.tad.from_factors)
        if derived.shape[1]:
            # TAD scores the first n_images rows; factor datasets are stored in factor-grid order,
            # so the rows are a seeded permutation first (the same one at every level)
            rows = np.random.default_rng(cfg.seed).permutation(len(codes))
            _merge(out, "tad", compute_tad(np.asarray(codes)[rows], derived[rows], cfg.tad, seed=cfg.seed,
                                           attribute_names=names))
    out["elapsed_s"] = time.perf_counter() - start
    return out
