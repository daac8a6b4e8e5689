"""Linear interpolation on the level grid 0 = t_0 < ... < t_{K-1} = 1.

Between cached levels μ_t is the linear interpolant; these helpers find the segment of a time
and interpolate (or take the slope of) per-level values. Read by the latent cache, the
diffusion process and the denoiser's preconditioning.
"""

from __future__ import annotations

import torch


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
