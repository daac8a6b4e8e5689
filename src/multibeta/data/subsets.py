"""Seeded subsets of a data set: the one draw every source uses for ``data.size``.

dSprites, Shapes3D and MPI3D draw ``data.size`` images with :func:`draw_rows`; CelebA and the
image folder draw theirs with the same generator among the images they keep, so one seed means
the same kind of subset everywhere.
"""

from __future__ import annotations

import numpy as np


def draw_rows(n_total: int, size: int | None, seed: int) -> np.ndarray | None:
    """Sorted rows of a seeded subset without replacement; None for the full set.

    Args:
        n_total: images available.
        size: images wanted (``data.size``); None, or ``n_total``, keeps all.
        seed: ``data.seed``.

    Returns:
        int64 [size] ascending row indices, or None when every row is kept.

    Raises:
        ValueError: ``size`` exceeds ``n_total``.
    """
    if size is None or size >= n_total:
        if size is not None and size > n_total:
            raise ValueError(f"data.size = {size} exceeds the {n_total} images available; "
                             "use null for all")
        return None
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    return np.sort(rng.choice(n_total, size=size, replace=False)).astype(np.int64)


def make_split(n: int, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """Seeded random split: int8 [n] with ``round(n * fraction)`` val (1) and test (2) rows.

    Raises:
        ValueError: when the fractions leave no training images.
    """
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    if n_val + n_test >= n:
        raise ValueError(f"data.val_fraction + data.test_fraction leave no training images of "
                         f"{n}; lower them")
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
    perm = rng.permutation(n)
    split = np.zeros(n, dtype=np.int8)
    split[perm[:n_val]] = 1
    split[perm[n_val : n_val + n_test]] = 2
    return split
