"""The edit study of one experiment: direction families fitted per factor, edits measured.

For each family of :data:`~multibeta.sampling.config.DIRECTION_FAMILIES` one direction per factor is fitted on
cached training latents (``attribute``: linear probes at t_b; ``pca`` / ``ica``: the component
best matched to each factor; ``attribute_t0``: probes at t = 0, edited without the denoiser),
held-out images are moved along each by ``amounts`` standard deviations, denoised to t = 0,
decoded and read by the factor classifier (:func:`multibeta.metrics.edits.measure_edits`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from multibeta.metrics.edits import EditScores, classifier_probabilities, measure_edits, symmetry_class_maps
from multibeta.sampling.config import DIRECTION_FAMILIES, DirectionsConfig
from multibeta.sampling.directions import (
    attribute_directions, denoise_function, edit_images, edit_pipeline, match_directions,
    select_directions,
)
from multibeta.sampling.edit import Directions, basis_directions
from multibeta.sampling.loading import SamplingModels
from multibeta.utils.bases import DEFAULT_ICA, IcaSettings
from multibeta.utils.device import Runtime

logger = logging.getLogger(__name__)

#: Level of the ``attribute_t0`` family (edited and decoded at t = 0, no denoiser).
T0_FAMILY = "attribute_t0"


@dataclass(frozen=True)
class FamilyResult:
    """One family's directions, scores and the edits of one image for the figure.

    Attributes:
        directions: one direction per factor ``[F, d]``.
        scores: the measured selectivity.
        t: the level edited at.
        denoised: whether edits are denoised to t = 0 before decoding.
        grid: edits of one held-out image ``[F, A_grid, C, H, W]``.
    """

    directions: Directions
    scores: EditScores
    t: float
    denoised: bool
    grid: torch.Tensor


def fit_family(
    family: str,
    latents_at: Callable[[float], torch.Tensor],
    labels: np.ndarray,
    names: Sequence[str],
    sizes: Sequence[int],
    cfg: DirectionsConfig,
    *,
    seed: int,
    ica: IcaSettings = DEFAULT_ICA,
) -> tuple[Directions, float, dict[str, float]]:
    """One direction per factor for ``family``, the level it edits at, and probe scores.

    Args:
        latents_at: ``t -> [N, d]`` cached training latents at level t.
        labels: their classes ``[N, F]``.
        ica: the FastICA starts of the ``ica`` family (``metrics.ica``).
    """
    t = 0.0 if family == T0_FAMILY else float(cfg.t_b)
    latents = latents_at(t)
    if family in ("attribute", T0_FAMILY):
        probes = attribute_directions(latents, labels, names, sizes, orientation=cfg.orientation, seed=seed)
        return probes.directions, t, probes.summary()
    found = basis_directions(latents, family, cfg.n_components, seed=seed, ica=ica)
    match = match_directions(latents, labels, found, names=names, sizes=sizes)
    return select_directions(found, match, names), t, {}


def run_edit_study(
    models: SamplingModels,
    classifier: torch.nn.Module,
    latents_at: Callable[[float], torch.Tensor],
    fit_labels: np.ndarray,
    images: torch.Tensor,
    image_labels: np.ndarray | None,
    names: Sequence[str],
    sizes: Sequence[int],
    cfg: DirectionsConfig,
    *,
    runtime: Runtime,
    seed: int = 0,
    ica: IcaSettings = DEFAULT_ICA,
) -> tuple[dict[str, FamilyResult], dict[str, float]]:
    """Fit and measure every family of :data:`DIRECTION_FAMILIES` (``ica``: the FastICA starts of
    the ``ica`` family, ``metrics.ica``).

    Returns:
        ``{family: FamilyResult}`` and flat metrics: ``<family>.<EditScores.summary key>`` and
        ``<family>.probe_score.<factor>`` for the probe families.
    """
    probabilities = classifier_probabilities(classifier, runtime.device)
    maps = symmetry_class_maps(names, sizes)
    results: dict[str, FamilyResult] = {}
    metrics: dict[str, float] = {}
    for family in DIRECTION_FAMILIES:
        directions, t, probe_summary = fit_family(family, latents_at, fit_labels, names, sizes, cfg,
                                                  seed=seed, ica=ica)
        denoise = None if t == 0.0 else denoise_function(models.denoiser, models.sigma, t_b=t,
                                                         settings=cfg, device=runtime)
        pipe = edit_pipeline(models.encoder, models.decoder, t=t, denoise=denoise,
                             batch_size=cfg.batch_size, device=runtime)
        scores = measure_edits(images, directions, cfg.amounts, encode=pipe.encode, render=pipe.render,
                               probabilities=probabilities, names=names, class_maps=maps,
                               labels=image_labels, family=family, seed=seed)
        grid = edit_images(images[:1], directions, cfg.grid_amounts, pipe)[0]
        results[family] = FamilyResult(directions, scores, t, denoise is not None, grid)
        metrics.update({f"{family}.{k}": v for k, v in scores.summary().items()})
        metrics.update({f"{family}.{k}": v for k, v in probe_summary.items()})
        logger.info("edits %s at t=%.2f: mean score %.3f, target change %.3f", family, t,
                    float(np.mean(scores.score)), float(np.mean(scores.target_change)))
    return results, metrics
