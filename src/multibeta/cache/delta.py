"""Maths on the level grid: level layout, linear interpolation, and the Δ targets dμ_t/dt.

The cache stores μ_{t_k}(x) at K levels 0 = t_0 < ... < t_{K-1} = 1. Between levels μ_t is
the linear interpolant, and Δ_t(x) = dμ_t(x)/dt is either

- ``finite_difference``: on the segment [t_k, t_{k+1}], Δ = (μ_{k+1} − μ_k)/(t_{k+1} − t_k),
  the exact derivative of the interpolant (piecewise constant, right-continuous: a grid point
  t_k < 1 belongs to the segment that starts there, t = 1 to the last segment); or
- ``jvp``: the exact derivative ∂μ_t(x)/∂t at each level by forward-mode autodiff through
  the encoder (:func:`jvp_delta`), linearly interpolated between levels.
"""

from __future__ import annotations

import logging
from typing import Literal, Protocol

import numpy as np
import torch

from multibeta.utils.level_grid import Spacing, level_grid  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)


class Encoder(Protocol):
    """What the cache needs of the VAE: ``encode(x [N,C,H,W], t [N]) -> μ [N,d]``, σ_t and β_t."""

    def encode(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...

    def sigma(self, t: torch.Tensor) -> torch.Tensor: ...

    def beta(self, t: torch.Tensor) -> torch.Tensor: ...


def segment(grid: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The segment of each t and its position in it.

    Args:
        grid: ascending level times ``[K]``.
        t: times ``[B]`` (clamped to [t_0, t_{K-1}]).

    Returns:
        ``k`` int64 ``[B]`` in [0, K−2] and ``w`` ``[B]`` in [0, 1] (float64) with
        t = (1 − w)·t_k + w·t_{k+1}. Grid points t_k < 1 give (k, 0); t = 1 gives (K−2, 1).
    """
    grid = grid.to(torch.float64)
    tt = t.to(device=grid.device, dtype=torch.float64).clamp(grid[0], grid[-1]).contiguous()
    k = (torch.searchsorted(grid, tt, right=True) - 1).clamp(0, len(grid) - 2)
    w = (tt - grid[k]) / (grid[k + 1] - grid[k])
    return k, w


def interpolate_levels(values: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Linear interpolation between two levels.

    Args:
        values: ``[B, 2, d]``, the values at t_k and t_{k+1} of each row.
        w: ``[B]`` position in the segment.

    Returns:
        ``[B, d]`` = (1 − w)·values[:, 0] + w·values[:, 1], in ``values``' dtype (exact at
        w = 0 and w = 1).
    """
    w = w.to(values.dtype)[:, None]
    return (1 - w) * values[:, 0] + w * values[:, 1]


def segment_slope(values: torch.Tensor, grid: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Finite-difference Δ on segment k: (v_{k+1} − v_k)/(t_{k+1} − t_k).

    Args:
        values: ``[B, 2, d]``, the values at t_k and t_{k+1} of each row.
        grid: level times ``[K]``.
        k: segment of each row ``[B]``.
    """
    h = (grid[k + 1] - grid[k]).to(device=values.device, dtype=values.dtype)[:, None]
    return (values[:, 1] - values[:, 0]) / h


def finite_difference_delta(mu: np.ndarray | torch.Tensor, grid: np.ndarray) -> np.ndarray:
    """Δ on every segment: ``mu [N, K, d]`` -> ``[N, K−1, d]`` (float64)."""
    mu = np.asarray(mu, dtype=np.float64)
    h = np.diff(np.asarray(grid, dtype=np.float64))
    return np.diff(mu, axis=1) / h[None, :, None]


def jvp_delta(
    encoder: Encoder, x: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """μ_t(x) and its exact time derivative ∂μ_t(x)/∂t by forward-mode autodiff.

    The encoder must treat examples independently (eval mode, no batch statistics), so the
    JVP with a tangent of ones gives each example's own derivative. Runs in full precision
    (call it outside autocast).

    Args:
        encoder: anything with ``encode(x, t) -> [N, d]``.
        x: images ``[N, C, H, W]``.
        t: times ``[N]``.

    Returns:
        ``(mu [N, d], dmu_dt [N, d])``, without autograd history.
    """
    t = t.to(torch.float32)
    with torch.no_grad():  # forward-mode AD works without the backward graph
        mu, dmu = torch.func.jvp(lambda tt: encoder.encode(x, tt), (t,), (torch.ones_like(t),))
    return mu, dmu
