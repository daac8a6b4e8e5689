"""Shapes3D (Burgess & Kim 2018): the user's copy of the published ``3dshapes.h5``.

Input (``data.shapes3d.path``): the file as DeepMind publishes it
(https://github.com/google-deepmind/3d-shapes, ``gs://3d-shapes/3dshapes.h5``):

- ``images`` uint8 [480000, 64, 64, 3], RGB;
- ``labels`` float64 [480000, 6], the factor values, in the order of :data:`FACTOR_NAMES`.

====================  =====  ==============================================================
factor                size   values (:data:`FACTOR_VALUES`)
====================  =====  ==============================================================
``floor_hue``         10     0, 0.1, ..., 0.9
``wall_hue``          10     0, 0.1, ..., 0.9
``object_hue``        10     0, 0.1, ..., 0.9
``scale``             8      ``linspace(0.75, 1.25, 8)``
``shape``             4      0, 1, 2, 3 (cube, cylinder, sphere, capsule)
``orientation``       15     ``linspace(-30, 30, 15)`` (degrees)
====================  =====  ==============================================================

The published file lists the full grid in C order (orientation fastest). The factor class of
each image is the index of its label on the published grid of that factor (a label off the grid
is refused), so a file holding only some of the images, in any order, reads too.

Output: the image dataset file of :mod:`multibeta.data.h5io` with the images channels first
(resized when ``data.image_size`` is not 64), ``factors`` (the labels), ``factor_classes``,
the names and sizes above. ``data.size`` images are drawn seeded (the dSprites draw) and kept in
file order; the split is drawn with ``data.seed`` from ``data.val_fraction`` and
``data.test_fraction``, as for dSprites. A file of another layout, or one whose ``images`` holds
fewer rows than ``labels`` (a truncated copy), is refused naming the expected shapes; nothing is
written then.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from multibeta.data.benchmark import NATIVE_SIZE, FactorSelection, write_factor_dataset
from multibeta.data.hdf5 import H5Dataset, H5FileKind, open_h5, read_dataset
from multibeta.data.subsets import draw_rows

logger = logging.getLogger(__name__)

GENERATOR_VERSION = "shapes3d-h5-1"
FACTOR_NAMES: tuple[str, ...] = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
FACTOR_SIZES: tuple[int, ...] = (10, 10, 10, 8, 4, 15)
NUM_IMAGES = int(np.prod(FACTOR_SIZES))  # 480,000 in the published file
FACTOR_VALUES: tuple[np.ndarray, ...] = (
    np.linspace(0.0, 1.0, 10, endpoint=False), np.linspace(0.0, 1.0, 10, endpoint=False),
    np.linspace(0.0, 1.0, 10, endpoint=False), np.linspace(0.75, 1.25, 8), np.arange(4.0),
    np.linspace(-30.0, 30.0, 15),
)
#: Largest distance of a label from its grid value (the grids' steps are 0.07 and more).
GRID_TOLERANCE = 1e-4
SOURCE_URL = "https://github.com/google-deepmind/3d-shapes"
EXPECTED = (f"the published 3dshapes.h5 layout: images [N, {NATIVE_SIZE}, {NATIVE_SIZE}, 3] uint8 and labels "
            f"[N, 6] float64 with the same N (N = {NUM_IMAGES:,} in the full file)")


class Shapes3DFileError(ValueError):
    """The Shapes3D file is not in the published layout; the message names the expected shapes."""


SHAPES3D_FILE = H5FileKind(
    "Shapes3D file", error=Shapes3DFileError,
    made_by=f"Download 3dshapes.h5 ({SOURCE_URL}) and set data.shapes3d.path to it.",
    fix=f"Expected {EXPECTED}. Re-download 3dshapes.h5 ({SOURCE_URL}).",
)


def factor_classes_of(labels: np.ndarray, path: str | os.PathLike = "labels") -> np.ndarray:
    """The class index of each label on the published grids: int64 [N, 6] of float [N, 6].

    Raises:
        Shapes3DFileError: a value lies off its factor's grid (naming the row, factor and value).
    """
    classes = np.empty(labels.shape, dtype=np.int64)
    for k, grid in enumerate(FACTOR_VALUES):
        column = labels[:, k]
        idx = np.abs(column[:, None] - grid[None, :]).argmin(axis=1)
        off = np.flatnonzero(np.abs(column - grid[idx]) > GRID_TOLERANCE)
        if off.size:
            row = int(off[0])
            raise Shapes3DFileError(
                f"Shapes3D file {path}: labels[{row}, {k}] ({FACTOR_NAMES[k]}) is {float(column[row])!r}, not one of "
                f"the published values {np.round(grid, 6).tolist()} ({off.size} such rows). Expected "
                f"{EXPECTED}. Re-download 3dshapes.h5 ({SOURCE_URL})."
            )
        classes[:, k] = idx
    return classes


class H5Rows:
    """The rows of an HDF5 image dataset ``[N, H, W, C]`` (a :class:`multibeta.data.rows.RowReader`)."""

    def __init__(self, dset: H5Dataset, kind: H5FileKind, path: Path) -> None:
        self.dset = dset
        self.kind = kind
        self.path = path
        self.shape = tuple(int(s) for s in dset.shape)

    def read(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return np.empty((0,) + self.shape[1:], dtype=np.uint8)
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        if hi - lo <= 4 * len(rows):  # dense: one contiguous read
            return read_dataset(self.dset, slice(lo, hi), kind=self.kind, path=self.path)[rows - lo]
        return read_dataset(self.dset, rows, kind=self.kind, path=self.path)


def _check_layout(path: Path, images: H5Dataset, labels: H5Dataset) -> int:
    """The image count N after checking shapes and dtypes (:data:`EXPECTED`)."""
    ishape, lshape = tuple(images.shape), tuple(labels.shape)
    if len(lshape) != 2 or lshape[1] != len(FACTOR_NAMES) or labels.dtype.kind != "f":
        raise Shapes3DFileError(f"Shapes3D file {path}: labels is {labels.dtype} {list(lshape)}; expected "
                                f"{EXPECTED}. Re-download 3dshapes.h5 ({SOURCE_URL}).")
    n = lshape[0]
    if ishape[1:] != (NATIVE_SIZE, NATIVE_SIZE, 3) or images.dtype != np.uint8 or len(ishape) != 4:
        raise Shapes3DFileError(f"Shapes3D file {path}: images is {images.dtype} {list(ishape)}; expected "
                                f"images [{n}, {NATIVE_SIZE}, {NATIVE_SIZE}, 3] uint8 ({EXPECTED}). "
                                f"Re-download 3dshapes.h5 ({SOURCE_URL}).")
    if ishape[0] != n:
        raise Shapes3DFileError(
            f"Shapes3D file {path}: images holds {ishape[0]:,} rows but labels {n:,}: the file is truncated "
            f"or damaged (expected images [{n}, {NATIVE_SIZE}, {NATIVE_SIZE}, 3] uint8; {EXPECTED}). "
            f"Re-download 3dshapes.h5 ({SOURCE_URL}).")
    if n == 0:
        raise Shapes3DFileError(f"Shapes3D file {path} holds no images; expected {EXPECTED}.")
    return n


def prepare_shapes3d(data_section: dict[str, Any], out_path: str | os.PathLike) -> dict[str, Any]:
    """Read the user's ``3dshapes.h5`` (``data.shapes3d.path``) and write the dataset file.

    Args:
        data_section: the validated, defaulted ``data`` section.
        out_path: the dataset file, written atomically (nothing is written on error).

    Returns:
        The summary of :func:`multibeta.data.benchmark.write_factor_dataset`.

    Raises:
        FileNotFoundError: no file at ``data.shapes3d.path``.
        Shapes3DFileError: not an HDF5 file, another layout, fewer image rows than label rows,
            labels off the published grid, or an unreadable chunk; the message names the
            expected shapes.
        ValueError: ``data.size`` exceeds the images in the file.
    """
    from multibeta.utils.io import file_sha256

    start = time.perf_counter()
    path = Path(data_section["shapes3d"]["path"]).expanduser()
    with open_h5(path, SHAPES3D_FILE, required=("images", "labels")) as h5:
        n = _check_layout(path, h5["images"], h5["labels"])
        if n != NUM_IMAGES:
            logger.warning("Shapes3D file %s holds %d images, not the %d of the published file", path, n, NUM_IMAGES)
        labels = read_dataset(h5["labels"], kind=SHAPES3D_FILE, path=path).astype(np.float64)
        rows = draw_rows(n, data_section["size"], data_section["seed"])
        rows = np.arange(n, dtype=np.int64) if rows is None else rows
        classes = factor_classes_of(labels, path)  # the whole file: a bad label is refused by its row
        selection = FactorSelection(rows=rows, factor_classes=classes[rows],
                                    factors=labels[rows].astype(np.float32), factor_names=FACTOR_NAMES,
                                    factor_sizes=FACTOR_SIZES)
        logger.info("Shapes3D: %d of %d images from %s", len(rows), n, path)
        provenance = {"generator_version": GENERATOR_VERSION, "source_file": path.name,
                      "source_sha256": file_sha256(path)}
        return write_factor_dataset(data_section, out_path, reader=H5Rows(h5["images"], SHAPES3D_FILE, path),
                                    selection=selection, provenance=provenance, start=start)
