"""Typed view of the validated ``cache`` config section (defaults live in cache.schema.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from multibeta.core.config import Section
from multibeta.core.levels import level_grid

DeltaMethod = Literal["finite_difference", "jvp"]


@dataclass(frozen=True)
class CacheConfig(Section):
    """Options of the latent cache; see ``workflow/schemas/cache.schema.yaml``."""

    SECTION = "cache"

    levels: int | tuple[float, ...]
    spacing: Literal["uniform", "denser_near_0"]
    dtype: Literal["float32", "float16"]
    delta: DeltaMethod
    batch_size: int
    schedule_points: int

    def grid(self) -> np.ndarray:
        """The level times ``[K]`` (float64), t_0 = 0, t_{K-1} = 1."""
        levels = list(self.levels) if isinstance(self.levels, tuple) else self.levels
        return level_grid(levels, self.spacing)

