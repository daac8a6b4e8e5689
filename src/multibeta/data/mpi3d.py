"""MPI3D (Gondal et al. 2019): the user's copy of a published ``mpi3d_*.npz``.

Input (``data.mpi3d.path``): ``mpi3d_toy.npz``, ``mpi3d_realistic.npz`` or ``mpi3d_real.npz``
as published (https://github.com/rr-learning/disentanglement_dataset): one array ``images``
uint8 [1036800, 64, 64, 3] holding the full grid of the 7 factors in C order (the last factor
fastest). The file has no labels: the factors of image ``i`` are
``np.unravel_index(i, FACTOR_SIZES)``, and their values are the class indices.

====================  =====  ==============================================================
factor                size   classes
====================  =====  ==============================================================
``object_color``      6      white, green, red, blue, brown, olive
``object_shape``      6      cone, cube, cylinder, hexagonal, pyramid, sphere
``object_size``       2      small, large
``camera_height``     3      top, centre, bottom
``background_color``  3      purple, sea green, salmon
``horizontal_axis``   40     the robot arm's first degree of freedom
``vertical_axis``     40     its second degree of freedom
====================  =====  ==============================================================

Because the factors come from the position alone, the file must hold exactly the product of
:data:`FACTOR_SIZES` images (1,036,800); a file with any other count (a truncated download, a
subset) is refused naming the expected shape rather than labelled wrongly. The factor sizes are
this module's constant, read when a file is prepared; the tests shrink it to write a miniature
file in the same layout (docs/USAGE.md, "your own data").

The array is never loaded whole: a stored (``np.savez``) archive is memory-mapped, a deflated
one (``np.savez_compressed``) read forward once (:class:`multibeta.data.rows.NpyMember`); only a
plain uint8 array is accepted (never a pickle). ``data.size`` images are drawn seeded (the
dSprites draw) and the split is drawn with ``data.seed``, as for dSprites.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from multibeta.data.benchmark import NATIVE_SIZE, FactorSelection, write_factor_dataset
from multibeta.data.rows import ArrayFileError, NpyMember
from multibeta.data.subsets import draw_rows

logger = logging.getLogger(__name__)

GENERATOR_VERSION = "mpi3d-npz-1"
FACTOR_NAMES: tuple[str, ...] = ("object_color", "object_shape", "object_size", "camera_height",
                                 "background_color", "horizontal_axis", "vertical_axis")
#: The published factor sizes; their product is the number of images a file must hold.
FACTOR_SIZES: tuple[int, ...] = (6, 6, 2, 3, 3, 40, 40)
NUM_IMAGES = int(np.prod(FACTOR_SIZES))  # 1,036,800
SOURCE_URL = "https://github.com/rr-learning/disentanglement_dataset"
ARRAY_KEY = "images"


class MPI3DFileError(ValueError):
    """The MPI3D file is not in the published layout; the message names the expected shape."""


def expected_layout(sizes: tuple[int, ...]) -> str:
    """The layout an MPI3D file must have for factor sizes ``sizes``, for messages."""
    n = int(np.prod(sizes))
    return (f"the published MPI3D layout: one array '{ARRAY_KEY}' of shape [{n}, {NATIVE_SIZE}, {NATIVE_SIZE}, 3] "
            f"uint8 ({' x '.join(map(str, sizes))} factor combinations in C order)")


def prepare_mpi3d(data_section: dict[str, Any], out_path: str | os.PathLike) -> dict[str, Any]:
    """Read the user's MPI3D ``.npz`` (``data.mpi3d.path``) and write the dataset file.

    Args:
        data_section: the validated, defaulted ``data`` section.
        out_path: the dataset file, written atomically (nothing is written on error).

    Returns:
        The summary of :func:`multibeta.data.benchmark.write_factor_dataset`.

    Raises:
        FileNotFoundError: no file at ``data.mpi3d.path``.
        MPI3DFileError: not a readable ``.npz``, no ``images`` array, another dtype or shape, or
            data cut short; the message names the expected shape.
        ValueError: ``data.size`` exceeds the images in the file.
    """
    from multibeta.utils.io import file_sha256

    start = time.perf_counter()
    sizes = tuple(int(k) for k in FACTOR_SIZES)  # read now: tests shrink the constant
    n_expected = int(np.prod(sizes))
    expected = expected_layout(sizes)
    path = Path(data_section["mpi3d"]["path"]).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"MPI3D file not found: {path}. Download mpi3d_toy.npz, mpi3d_realistic.npz "
                                f"or mpi3d_real.npz ({SOURCE_URL}) and set data.mpi3d.path to it.")
    fix = f"Re-download the file ({SOURCE_URL})."
    try:
        member = NpyMember(path, ARRAY_KEY, what="MPI3D file", expected=f"{expected}. {fix}")
    except ArrayFileError as err:
        raise MPI3DFileError(str(err)) from err
    with member:
        shape = member.shape
        if shape != (n_expected, NATIVE_SIZE, NATIVE_SIZE, 3):
            short = len(shape) == 4 and shape[1:] == (NATIVE_SIZE, NATIVE_SIZE, 3) and shape[0] < n_expected
            raise MPI3DFileError(
                f"MPI3D file {path}: '{ARRAY_KEY}' has shape {list(shape)}"
                + (f", {n_expected - shape[0]:,} rows short: a truncated file" if short else "")
                + f". Expected {expected}; the factors are read from the position, so a file with "
                f"another count cannot be labelled. {fix}")
        rows = draw_rows(n_expected, data_section["size"], data_section["seed"])
        rows = np.arange(n_expected, dtype=np.int64) if rows is None else rows
        classes = np.stack(np.unravel_index(rows, sizes), axis=1).astype(np.int64)
        selection = FactorSelection(rows=rows, factor_classes=classes, factors=classes.astype(np.float32),
                                    factor_names=FACTOR_NAMES, factor_sizes=sizes)
        logger.info("MPI3D: %d of %d images from %s (%s)", len(rows), n_expected, path,
                    "memory-mapped" if member.info.compress_type == 0 else "deflated, read forward")
        provenance = {"generator_version": GENERATOR_VERSION, "source_file": path.name,
                      "source_sha256": file_sha256(path)}
        try:
            return write_factor_dataset(data_section, out_path, reader=member, selection=selection,
                                        provenance=provenance, start=start)
        except ArrayFileError as err:
            raise MPI3DFileError(str(err)) from err
