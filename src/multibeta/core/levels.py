"""The cache's level times t_k: torch-free, so config checks can use it before any job."""

from __future__ import annotations

from typing import Literal

import numpy as np

Spacing = Literal["uniform", "denser_near_0"]


def level_grid(levels: int | list[float], spacing: Spacing = "uniform") -> np.ndarray:
    """The ascending level times ``[K]`` (float64) with t_0 = 0 and t_{K-1} = 1.

    Args:
        levels: a count K >= 2, laid out by ``spacing``, or an explicit list of times.
        spacing: ``uniform`` (t_k = k/(K−1)) or ``denser_near_0`` (t_k = (k/(K−1))²).

    Raises:
        ValueError: a list that is not strictly ascending from 0 to 1, or an unknown spacing.
    """
    if isinstance(levels, (int, np.integer)) and not isinstance(levels, bool):
        if levels < 2:
            raise ValueError(f"cache.levels must be at least 2, got {levels}")
        u = np.linspace(0.0, 1.0, int(levels))
        if spacing == "uniform":
            grid = u
        elif spacing == "denser_near_0":
            grid = u**2
        else:
            raise ValueError(f"unknown cache.spacing {spacing!r}; use uniform or denser_near_0")
    else:
        grid = np.asarray(levels, dtype=np.float64)
        if grid.ndim != 1 or len(grid) < 2:
            raise ValueError("cache.levels as a list needs at least two times")
        if grid[0] != 0.0 or grid[-1] != 1.0 or np.any(np.diff(grid) <= 0):
            raise ValueError(
                f"cache.levels must be strictly ascending from 0 to 1, got {grid.tolist()}"
            )
    return grid.astype(np.float64)
