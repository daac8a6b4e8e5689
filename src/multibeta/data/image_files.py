"""Helpers of the sources that decode users' image files in worker processes (CelebA, folder)."""

from __future__ import annotations

import os

import numpy as np


def default_workers() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def compact_rows(images: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """``images[ok]`` without a second full-size copy: the kept rows (bool ``ok`` ``[N]``) are
    moved down in place and a view of the first ``ok.sum()`` rows is returned."""
    for dst, src in enumerate(np.flatnonzero(ok)):
        if dst != src:
            images[dst] = images[src]
    return images[: int(ok.sum())]
