"""Time grids for the samplers: which levels t the reverse process visits.

A grid runs from ``t_start`` (1 for generation, t_b for sharpening) down to ``t_end`` = 0.

- ``uniform``: equal steps in t.
- ``quadratic``: t_i = t_end + (t_start − t_end) · (1 − i/N)², so steps shrink linearly towards
  t = 0, where σ_t → 0 and the decoder is most sensitive to the latent (as the quadratic
  "time uniform in sqrt" spacing of DDIM).
- ``logsnr``, ``cosine``, ``edm``: equal steps in a coordinate of the process's log-SNR λ(t)
  (:func:`multibeta.core.logsnr.logsnr_grid`): in λ itself, in the cosine schedule's time
  (the plain DDPM's uniform grid carried over by λ), or EDM's ρ = 7 spacing in σ = e^{−λ/2}.
  They need the process's λ(t) table.
"""

from __future__ import annotations

import torch

from multibeta.core.logsnr import GRID_KINDS, LogSnrTable, logsnr_grid
from multibeta.sampling.settings import SPACINGS, Spacing


def time_grid(
    steps: int,
    spacing: Spacing,
    t_start: float = 1.0,
    t_end: float = 0.0,
    logsnr: LogSnrTable | None = None,
) -> torch.Tensor:
    """Descending times ``[steps + 1]`` (float64) from ``t_start`` to ``t_end``, both included.

    ``t_start == t_end`` gives the one-point grid ``[t_start]`` (no steps: the identity path).
    ``logsnr`` is the process's λ(t), needed by the λ-based spacings.

    Raises:
        ValueError: on ``steps < 1``, ``t_start < t_end``, an unknown spacing, or a λ-based
            spacing without ``logsnr``.
    """
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 0.0 <= t_end <= t_start <= 1.0:
        raise ValueError(f"need 0 <= t_end <= t_start <= 1, got t_start={t_start}, t_end={t_end}")
    if t_start == t_end:
        return torch.tensor([float(t_start)], dtype=torch.float64)
    if spacing in GRID_KINDS:
        if logsnr is None:
            raise ValueError(f"spacing {spacing!r} needs the process's log-SNR table")
        return torch.as_tensor(logsnr_grid(steps, spacing, logsnr, t_start, t_end))
    u = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    if spacing == "quadratic":
        u = u**2
    grid = t_end + (t_start - t_end) * u
    grid[0], grid[-1] = t_start, t_end  # exact end points despite rounding
    return grid


def level_steps(steps: int, t_start: float) -> int:
    """Steps from ``t_start`` to 0 at the density of ``steps`` steps over [0, 1] (at least 1)."""
    return max(1, round(steps * t_start))
