"""Labelled PNG image grids (samples, sharpening, traversals), written atomically.

Images are tiled into one mosaic (fast for hundreds of images) and drawn with a matplotlib
``Figure`` (no pyplot state), with optional row/column labels and a title.
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from multibeta.utils.io import atomic_path

logger = logging.getLogger(__name__)

ZOOM = 1.5
"""Displayed inches per 100 image pixels."""


def _as_float_array(images: torch.Tensor | np.ndarray) -> np.ndarray:
    arr = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    return np.clip(arr.astype(np.float32), 0.0, 1.0)


def tile(images: torch.Tensor | np.ndarray, pad: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """Tile ``[R, K, C, H, W]`` images (float in [0, 1] or uint8) into a mosaic.

    Returns:
        ``[R·(H + pad) + pad, K·(W + pad) + pad, C]`` float32 in [0, 1].
    """
    arr = _as_float_array(images)
    if arr.ndim != 5:
        raise ValueError(f"expected images [R, K, C, H, W], got shape {arr.shape}")
    rows, cols, ch, h, w = arr.shape
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, ch), pad_value, dtype=np.float32)
    for r in range(rows):
        for k in range(cols):
            y, x = pad + r * (h + pad), pad + k * (w + pad)
            out[y : y + h, x : x + w] = arr[r, k].transpose(1, 2, 0)
    return out


def save_image_grid(
    images: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    *,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    title: str | None = None,
    pad: int = 2,
) -> None:
    """Write ``[R, K, C, H, W]`` images (C = 1 or 3) as a labelled PNG grid, atomically."""
    mosaic = tile(images, pad=pad)
    rows, cols, ch, h, w = np.shape(images)
    if ch not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {ch}")
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"{len(row_labels)} row labels for {rows} rows")
    if col_labels is not None and len(col_labels) != cols:
        raise ValueError(f"{len(col_labels)} column labels for {cols} columns")
    height_px, width_px = mosaic.shape[:2]
    fig = Figure(figsize=(width_px / 100 * ZOOM, height_px / 100 * ZOOM), dpi=100)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    if ch == 1:
        ax.imshow(mosaic[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(mosaic, interpolation="nearest")
    for spine in ax.spines.values():
        spine.set_visible(False)
    centers_y = [pad + r * (h + pad) + h / 2 for r in range(rows)]
    centers_x = [pad + k * (w + pad) + w / 2 for k in range(cols)]
    ax.set_yticks(centers_y if row_labels is not None else [])
    if row_labels is not None:
        ax.set_yticklabels(list(row_labels), fontsize=8)
    ax.xaxis.tick_top()
    ax.set_xticks(centers_x if col_labels is not None else [])
    if col_labels is not None:
        ax.set_xticklabels(list(col_labels), fontsize=8)
    ax.tick_params(length=0)
    if title:
        ax.set_title(title, fontsize=10, pad=24 if col_labels is not None else 6)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight", pad_inches=0.05)
    logger.info("wrote image grid %s (%d x %d images)", path, rows, cols)


def save_sample_grid(
    images: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    *,
    n_cols: int,
    title: str | None = None,
) -> None:
    """Write ``[N, C, H, W]`` images as an unlabelled grid with ``n_cols`` per row (last row
    padded with blank tiles)."""
    arr = _as_float_array(images)
    if arr.ndim != 4 or len(arr) == 0:
        raise ValueError(f"expected a non-empty [N, C, H, W] array, got shape {arr.shape}")
    n = len(arr)
    n_cols = min(n_cols, n)
    n_rows = -(-n // n_cols)
    blank = np.ones((n_rows * n_cols - n, *arr.shape[1:]), dtype=np.float32)
    grid = np.concatenate([arr, blank]).reshape(n_rows, n_cols, *arr.shape[1:])
    save_image_grid(grid, path, title=title)
