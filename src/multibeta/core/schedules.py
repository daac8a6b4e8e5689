"""Schedules shared by the stages: noise levels over t and learning rate over steps.

- :class:`SigmaTable`: the multi-β VAE's posterior std σ_t, tabulated on a dense t grid
  (stored in the latent cache) and linearly interpolated, so Stage 2 never needs the VAE.
- :func:`sigma_rms`: the one number that stands for a per-dimension σ_{t,j} wherever one is
  needed (logs, reports, c_in, λ(t), the bundle's σ_1): the RMS over dimensions.
- :func:`cosine_alpha_bar`: the standard cosine schedule of Nichol & Dhariwal (2021), used by
  the ``standard_ldm`` baseline.
- :func:`lr_factor`: linear warm-up, then constant or cosine decay to a floor; the one
  learning-rate schedule of every trainer (VAE, denoiser, factor classifier).
"""

from __future__ import annotations

import math

import numpy as np
import torch


def sigma_rms(sigma: torch.Tensor | np.ndarray | float) -> torch.Tensor | np.ndarray | float:
    """σ̄ = sqrt(mean_j σ_j²) over the last axis of a per-dimension σ (``[..., d]`` → ``[...]``).

    The RMS, not the mean, because the noise power mean_j σ_j² is what the signal power (the
    mean over dimensions of E[μ_t²]) is compared with in the log-SNR. A shared σ_t stored with a
    last axis of 1 (``[..., 1]``) comes back exactly (sqrt(σ²) = σ in floating point); a plain
    number (a shared schedule without that axis) is returned as it is.
    """
    if isinstance(sigma, torch.Tensor):
        return sigma.pow(2).mean(-1).sqrt()
    a = np.asarray(sigma, dtype=np.float64)
    if a.ndim == 0:
        return float(a)
    return np.sqrt(np.mean(np.square(a), axis=-1))


class SigmaTable(torch.nn.Module):
    """σ_t by linear interpolation of a tabulated, monotone schedule.

    Args:
        t_grid: ascending times ``[M]`` covering [0, 1].
        sigma: σ at those times, ``[M]`` (one σ_t for every latent dimension) or ``[M, d]``
            (a per-dimension schedule, ``vae.sigma_stagger``); non-decreasing in t.
    """

    def __init__(self, t_grid: np.ndarray | torch.Tensor, sigma: np.ndarray | torch.Tensor) -> None:
        super().__init__()
        # copies: the two buffers must never share memory (a table built from one array for
        # both, then filled by load_state_dict, would otherwise end with σ in both)
        t_grid = torch.tensor(np.asarray(t_grid), dtype=torch.float64)
        sigma = torch.tensor(np.asarray(sigma), dtype=torch.float64)
        if t_grid.ndim != 1 or sigma.ndim not in (1, 2) or sigma.shape[0] != len(t_grid) or len(t_grid) < 2:
            raise ValueError("t_grid must be 1-D and sigma [M] or [M, d], both with the same M >= 2")
        if torch.any(torch.diff(t_grid) <= 0):
            raise ValueError("t_grid must be strictly ascending")
        if torch.any(torch.diff(sigma, dim=0) < 0):
            raise ValueError("sigma must be non-decreasing in t")
        self.register_buffer("t_grid", t_grid)
        self.register_buffer("sigma_grid", sigma)

    @property
    def per_dimension(self) -> bool:
        """True for a ``[M, d]`` table (σ differs between latent dimensions)."""
        return self.sigma_grid.ndim == 2

    def _segment(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tg = self.t_grid
        tt = t.to(torch.float64).clamp(tg[0], tg[-1])
        k = torch.searchsorted(tg, tt.contiguous(), right=True).clamp(1, len(tg) - 1)
        return k, tt

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """σ_t for ``t`` of any shape (clamped to the table's range), in ``t``'s dtype:
        shape ``t.shape`` (shared) or ``t.shape + (d,)`` (per dimension)."""
        k, tt = self._segment(t)
        t0, t1 = self.t_grid[k - 1], self.t_grid[k]
        s0, s1 = self.sigma_grid[k - 1], self.sigma_grid[k]
        w = (tt - t0) / (t1 - t0)
        if self.per_dimension:
            w = w[..., None]
        return (s0 + w * (s1 - s0)).to(t.dtype if t.is_floating_point() else torch.float32)

    def columns(self, t: torch.Tensor) -> torch.Tensor:
        """σ_t for times ``t`` [N] shaped to scale latents [N, d]: ``[N, 1]`` (shared) or
        ``[N, d]`` (per dimension)."""
        sigma = self(t)
        return sigma if self.per_dimension else sigma[:, None]

    def rms(self, t: torch.Tensor) -> torch.Tensor:
        """σ̄_t = sqrt(mean_j σ_{t,j}²), shape ``t.shape``: the noise level of the whole latent
        (σ_t itself for a shared table), for everything that needs one number per t."""
        sigma = self(t)
        return sigma_rms(sigma) if self.per_dimension else sigma

    def derivative(self, t: torch.Tensor) -> torch.Tensor:
        """dσ/dt of the piecewise-linear interpolant (right derivative at grid points)."""
        k, _ = self._segment(t)
        tg = self.t_grid
        dt = tg[k] - tg[k - 1]
        slope = (self.sigma_grid[k] - self.sigma_grid[k - 1]) / (dt[..., None] if self.per_dimension else dt)
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
