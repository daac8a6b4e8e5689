"""Schedules shared by the stages: noise levels over t and learning rate over steps.

- :class:`SigmaTable`: the multi-β VAE's posterior std σ_t, tabulated on a dense t grid
  (stored in the latent cache) and linearly interpolated, so Stage 2 never needs the VAE.
- :func:`cosine_alpha_bar`: the standard cosine schedule of Nichol & Dhariwal (2021), used by
  the ``standard_ldm`` baseline.
- :func:`lr_factor`: linear warm-up, then constant or cosine decay to a floor; the one
  learning-rate schedule of every trainer (VAE, denoiser, factor classifier).
"""

from __future__ import annotations

import math

import numpy as np
import torch


class SigmaTable(torch.nn.Module):
    """σ_t by linear interpolation of a tabulated, monotone schedule.

    Args:
        t_grid: ascending times ``[M]`` covering [0, 1].
        sigma: σ at those times ``[M]`` (non-decreasing).
    """

    def __init__(self, t_grid: np.ndarray | torch.Tensor, sigma: np.ndarray | torch.Tensor) -> None:
        super().__init__()
        # copies: the two buffers must never share memory (a table built from one array for
        # both, then filled by load_state_dict, would otherwise end with σ in both)
        t_grid = torch.tensor(np.asarray(t_grid), dtype=torch.float64)
        sigma = torch.tensor(np.asarray(sigma), dtype=torch.float64)
        if t_grid.ndim != 1 or t_grid.shape != sigma.shape or len(t_grid) < 2:
            raise ValueError("t_grid and sigma must be 1-D arrays of the same length >= 2")
        if torch.any(torch.diff(t_grid) <= 0):
            raise ValueError("t_grid must be strictly ascending")
        if torch.any(torch.diff(sigma) < 0):
            raise ValueError("sigma must be non-decreasing in t")
        self.register_buffer("t_grid", t_grid)
        self.register_buffer("sigma_grid", sigma)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """σ_t for ``t`` of any shape (clamped to the table's range), in ``t``'s dtype."""
        tg = self.t_grid
        tt = t.to(torch.float64).clamp(tg[0], tg[-1])
        k = torch.searchsorted(tg, tt.contiguous(), right=True).clamp(1, len(tg) - 1)
        t0, t1 = tg[k - 1], tg[k]
        s0, s1 = self.sigma_grid[k - 1], self.sigma_grid[k]
        w = (tt - t0) / (t1 - t0)
        return (s0 + w * (s1 - s0)).to(t.dtype if t.is_floating_point() else torch.float32)

    def derivative(self, t: torch.Tensor) -> torch.Tensor:
        """dσ/dt of the piecewise-linear interpolant (right derivative at grid points)."""
        tg = self.t_grid
        tt = t.to(torch.float64).clamp(tg[0], tg[-1])
        k = torch.searchsorted(tg, tt.contiguous(), right=True).clamp(1, len(tg) - 1)
        slope = (self.sigma_grid[k] - self.sigma_grid[k - 1]) / (tg[k] - tg[k - 1])
        return slope.to(t.dtype if t.is_floating_point() else torch.float32)


def cosine_alpha_bar(t: torch.Tensor, s: float = 0.008) -> torch.Tensor:
    """ᾱ(t) = cos²((t + s)/(1 + s) · π/2) / cos²(s/(1 + s) · π/2) for t in [0, 1].

    The forward process of ``standard_ldm`` is z_t = sqrt(ᾱ) z_0 + sqrt(1 − ᾱ) ε.
    ᾱ is clipped to [1e-5, 1] so that t = 1 stays finite.
    """
    f = torch.cos((t.to(torch.float64) + s) / (1 + s) * math.pi / 2) ** 2
    f0 = math.cos(s / (1 + s) * math.pi / 2) ** 2
    return (f / f0).clamp(1e-5, 1.0).to(t.dtype if t.is_floating_point() else torch.float32)


def lr_factor(
    step: int, *, warmup: int, total: int, floor: float = 0.0, decay: str = "cosine"
) -> float:
    """The learning rate of step ``step`` (0-based) as a fraction of the peak rate.

    Linear warm-up ``(step + 1) / warmup`` over the first ``warmup`` steps, then either
    ``constant`` (1) or ``cosine`` decay from 1 to ``floor`` over the remaining
    ``total − warmup`` steps (reaching ``floor`` at ``step = total``).

    Args:
        step: the optimiser step, 0-based.
        warmup: warm-up steps (0: none).
        total: the run's total steps.
        floor: the final rate as a fraction of the peak rate, in [0, 1].
        decay: ``cosine`` or ``constant``.
    """
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"the learning-rate floor is a fraction of the peak rate in [0, 1], got {floor}")
    if step < warmup:
        return (step + 1) / warmup
    if decay == "constant":
        return 1.0
    if decay != "cosine":
        raise ValueError(f"unknown learning-rate decay {decay!r}; use cosine or constant")
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
