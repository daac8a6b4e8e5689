"""The Δ targets dμ_t/dt of the latent cache (level layout and interpolation: multibeta.core).

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


logger = logging.getLogger(__name__)


class Encoder(Protocol):
    """What the cache needs of the VAE: ``encode(x [N,C,H,W], t [N]) -> μ [N,d]``, σ_t and β_t."""

    def encode(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...

    def sigma(self, t: torch.Tensor) -> torch.Tensor: ...

    def beta(self, t: torch.Tensor) -> torch.Tensor: ...


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
