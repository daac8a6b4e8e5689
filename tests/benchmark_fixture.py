"""Miniature disentanglement benchmark files in the published layouts, for tests and smoke runs.

- ``make_shapes3d(path, n)``: a ``3dshapes.h5`` with ``images`` uint8 [n, 64, 64, 3] and
  ``labels`` float64 [n, 6], ``n`` rows of the full factor grid (in its C order), labels on the
  published value grids.
- ``make_mpi3d(path, sizes)``: an MPI3D ``.npz`` whose ``images`` uint8 [prod(sizes), 64, 64, 3]
  hold every factor combination of ``sizes`` in C order (the published file has sizes
  (6, 6, 2, 3, 3, 40, 40); tests shrink ``multibeta.data.mpi3d.FACTOR_SIZES`` to ``sizes``).
- ``truncate_file(path, keep)``: the first ``keep`` fraction of a file's bytes (a cut download).

The images are cartoons whose look follows every factor (colours, object size, shape and
position), so the metrics see real signal. This module does not import the readers' modules:
the grids are written out again here, so the tests check the readers against the format.
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import h5py
import numpy as np

SHAPES3D_SIZES = (10, 10, 10, 8, 4, 15)
SHAPES3D_GRIDS = (
    [i / 10 for i in range(10)], [i / 10 for i in range(10)], [i / 10 for i in range(10)],
    list(np.linspace(0.75, 1.25, 8)), [0.0, 1.0, 2.0, 3.0], list(np.linspace(-30.0, 30.0, 15)),
)
MPI3D_SMALL_SIZES = (2, 3, 2, 1, 2, 5, 5)  # 600 images
_MPI3D_COLOURS = [(255, 255, 255), (0, 200, 0), (220, 0, 0), (0, 0, 220), (140, 80, 30), (120, 130, 20)]
_MPI3D_BACKGROUNDS = [(110, 40, 140), (50, 160, 120), (240, 130, 110)]


def _rgb(hue: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue, 0.9, 0.9)) * 255


def _draw(img: np.ndarray, shape: int, cy: float, cx: float, half: float, colour: np.ndarray) -> None:
    """Draw one of four shapes (square, disc, tall bar, wide bar) into ``img`` [64, 64, 3]."""
    yy, xx = np.mgrid[0:64, 0:64]
    dy, dx = np.abs(yy - cy), np.abs(xx - cx)
    masks = (np.maximum(dy, dx) <= half, dy ** 2 + dx ** 2 <= half ** 2,
             (dy <= half) & (dx <= half / 2), (dy <= half / 2) & (dx <= half))
    img[masks[shape % 4]] = colour


def shapes3d_image(classes: np.ndarray) -> np.ndarray:
    """uint8 [64, 64, 3] for the factor classes [6] of one Shapes3D image."""
    floor, wall, obj, scale, shape, orient = (int(c) for c in classes)
    img = np.empty((64, 64, 3), dtype=np.float64)
    img[:34] = _rgb(wall / 10)
    img[34:] = _rgb(floor / 10) * 0.8
    _draw(img, shape, 38.0, 20.0 + 1.7 * orient, 5.0 + 1.3 * scale, _rgb(obj / 10))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_shapes3d(path: Path, n: int = 400, seed: int = 0, *, image_rows: int | None = None) -> Path:
    """Write a miniature ``3dshapes.h5``: ``n`` seeded rows of the factor grid, in grid order.

    ``image_rows`` (< n) writes only that many image rows (labels keep all ``n``): a truncated file.
    """
    total = int(np.prod(SHAPES3D_SIZES))
    rows = np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))
    classes = np.stack(np.unravel_index(rows, SHAPES3D_SIZES), axis=1)
    labels = np.array([[SHAPES3D_GRIDS[k][c] for k, c in enumerate(row)] for row in classes], dtype=np.float64)
    images = np.stack([shapes3d_image(c) for c in classes])
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        h5.create_dataset("images", data=images[: image_rows if image_rows is not None else n])
        h5.create_dataset("labels", data=labels)
    return path


def mpi3d_image(classes: np.ndarray) -> np.ndarray:
    """uint8 [64, 64, 3] for the factor classes [7] of one MPI3D image."""
    colour, shape, size, height, background, horizontal, vertical = (int(c) for c in classes)
    img = np.empty((64, 64, 3), dtype=np.float64)
    img[:] = _MPI3D_BACKGROUNDS[background % 3]
    img[: 8 + 6 * height] *= 0.7  # the camera height moves the horizon
    _draw(img, shape, 14.0 + 1.8 * vertical, 10.0 + 1.8 * horizontal, 4.0 + 3.0 * size,
          np.array(_MPI3D_COLOURS[colour % 6], dtype=np.float64))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_mpi3d(path: Path, sizes: tuple[int, ...] = MPI3D_SMALL_SIZES, *, compressed: bool = False,
               drop_rows: int = 0) -> Path:
    """Write an MPI3D ``.npz`` with every combination of ``sizes`` in C order (``drop_rows``
    last rows left out: an array shorter than the layout needs)."""
    n = int(np.prod(sizes))
    classes = np.stack(np.unravel_index(np.arange(n), sizes), axis=1)
    images = np.stack([mpi3d_image(c) for c in classes])[: n - drop_rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:  # a file object: numpy must not append ".npz" to the name
        (np.savez_compressed if compressed else np.savez)(fh, images=images)
    return path


def truncate_file(path: Path, keep: float = 0.5, out: Path | None = None) -> Path:
    """The first ``keep`` fraction of ``path``'s bytes, written to ``out`` (default: in place)."""
    data = path.read_bytes()
    out = path if out is None else out
    out.write_bytes(data[: int(len(data) * keep)])
    return out
