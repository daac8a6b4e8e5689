"""Figures of factor-aligned edit directions: one image grid per family, one score chart.

- :func:`save_direction_grid`: rows = factors (the family's direction for each), columns =
  edit amounts in std units, for one image (:func:`multibeta.sampling.directions.edit_images`),
  like the traversal grids of :mod:`multibeta.sampling.edit`.
- :func:`save_edit_score_plot`: per factor, the edit-disentanglement score and the target
  change of every family side by side (:class:`multibeta.metrics.edits.EditScores`, passed as
  plain arrays since sampling sits below metrics).
"""

from __future__ import annotations

import logging
import os
from typing import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from multibeta.sampling.edit import Directions
from multibeta.sampling.grids import save_image_grid
from multibeta.utils.io import atomic_path

logger = logging.getLogger(__name__)


def direction_grid_title(family: str, t: float, denoised: bool) -> str:
    """e.g. ``attribute directions, edited at t=0.50, denoised to t=0``."""
    how = "denoised to t=0" if denoised else "decoded directly"
    return f"{family} directions, edited at t={t:.2f}, {how}"


def save_direction_grid(
    images: torch.Tensor,
    directions: Directions,
    amounts: Sequence[float],
    path: str | os.PathLike,
    *,
    title: str,
) -> None:
    """PNG grid of one image's edits ``[K, A, C, H, W]``: rows = ``directions.labels``, columns =
    amounts (std units; include 0 for the unedited render). ``title`` e.g. from
    :func:`direction_grid_title`."""
    if images.ndim != 5 or images.shape[0] != len(directions.labels) or images.shape[1] != len(amounts):
        raise ValueError(f"expected images [K={len(directions.labels)}, A={len(amounts)}, C, H, W], "
                         f"got {tuple(images.shape)}")
    save_image_grid(images, path, row_labels=directions.labels,
                    col_labels=[f"{float(a):+.3g} sd" for a in amounts], title=title)


def save_edit_score_plot(
    families: Mapping[str, tuple[Sequence[str], Sequence[float], Sequence[float]]],
    path: str | os.PathLike,
    *,
    title: str = "edit selectivity per factor",
) -> None:
    """Two bar charts, factors on the x axis and one bar per family: the edit-disentanglement
    score (0.5 = no selectivity, dashed) and the change of the target factor (mean TV).

    Args:
        families: family name -> (edited factor names, scores, target changes), e.g.
            ``(names[k] for k in s.targets), s.score, s.target_change`` of an ``EditScores``.
        path: the PNG (written atomically).
    """
    if not families:
        raise ValueError("no direction families to plot")
    factors: list[str] = []
    for names, _, _ in families.values():
        factors += [n for n in names if n not in factors]
    fig = Figure(figsize=(max(5.0, 0.9 * len(factors) * max(1, len(families)) / 2 + 2), 6.0), dpi=100)
    ax_score, ax_change = fig.subplots(2, 1, sharex=True)
    width = 0.8 / len(families)
    x = np.arange(len(factors))
    for i, (family, (names, scores, changes)) in enumerate(families.items()):
        pos = [factors.index(n) for n in names]
        offset = (i - (len(families) - 1) / 2) * width
        ax_score.bar(x[pos] + offset, scores, width, label=family)
        ax_change.bar(x[pos] + offset, changes, width, label=family)
    ax_score.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    ax_score.set_ylim(0.0, 1.0)
    ax_score.set_ylabel("score")
    ax_score.set_title(title, fontsize=10)
    ax_score.legend(fontsize=8, ncols=min(4, len(families)))
    ax_change.set_ylim(0.0, 1.0)
    ax_change.set_ylabel("target change (TV)")
    ax_change.set_xticks(x, factors, rotation=30 if len(factors) > 6 else 0, fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    logger.info("wrote edit score plot %s (%d families, %d factors)", path, len(families), len(factors))
