"""dSprites: 64x64 binary images of a white shape on black, over a full factor grid.

The original data set (Matthey et al. 2017, https://github.com/deepmind/dsprites-dataset)
is re-created procedurally from its definition, so the pipeline needs no download:

====================  =====  =============================================================
factor                size   values (``factors``)
====================  =====  =============================================================
``shape``             3      1 square, 2 ellipse, 3 heart (as in the original file)
``scale``             6      ``linspace(0.5, 1, 6)``
``orientation``       40     ``k * 2π / 40`` for k = 0..39, radians, counter-clockwise
``posX``              32     ``linspace(0, 1, 32)``: column of the centre, left to right
``posY``              32     ``linspace(0, 1, 32)``: row of the centre, top to bottom
====================  =====  =============================================================

737,280 images in the canonical dSprites order (shape slowest, posY fastest).

Choices that differ from (or are unspecified by) the original file:

- Orientation uses 40 *distinct* angles in ``[0, 2π)``; the original used
  ``linspace(0, 2π, 40)``, whose first and last angle give the same image. Ours makes
  orientation index 10 exactly a quarter turn.
- Images are stored as uint8 with values 0 or 255, so every data set in the pipeline has
  the same ``uint8 [N, C, 64, 64], 0..255`` semantics (the original stores 0/1).
- Geometry: each shape is drawn into a 33x33 mask centred on its middle pixel; the mask is
  placed with its top-left pixel at ``(posY_index, posX_index)``, so the centre moves in
  steps of exactly one pixel, from pixel 16 to pixel 47 (continuous centre 16.5 .. 47.5,
  symmetric about the image centre 32). Every rotated shape fits in the mask, so no shape
  ever leaves the image. At scale 1 the square is 21 px wide, the ellipse 22 x 12 px and
  the heart about 21 px wide (about 1/3 of the image, as in the original).
- A pixel is on when more than half of its 5x5 sub-pixel samples lie inside the shape.
  Angles are split into a quarter-turn count and a remainder ``k = 10 q + r``: the mask is
  rendered at the remainder angle and turned by ``q`` exact 90° array rotations, so the
  square at orientation index 0 equals the square at index 10, 20 and 30 bit for bit.
"""

from __future__ import annotations

import logging
import math
import os
from functools import lru_cache

import numpy as np
from tqdm.auto import tqdm

from multibeta.data.h5io import DatasetArrays
from multibeta.data.subsets import draw_rows as _draw_rows

logger = logging.getLogger(__name__)

GENERATOR_VERSION = "dsprites-procedural-1"
NPZ_GENERATOR_VERSION = "dsprites-npz-1"

FACTOR_NAMES: tuple[str, ...] = ("shape", "scale", "orientation", "posX", "posY")
FACTOR_SIZES: tuple[int, ...] = (3, 6, 40, 32, 32)
NUM_IMAGES = int(np.prod(FACTOR_SIZES))  # 737,280
IMAGE_SIZE = 64
SHAPE_NAMES: tuple[str, ...] = ("square", "ellipse", "heart")

MASK_SIZE = 33  # odd: the mask centre is a pixel centre, so quarter turns are exact
_HALF = MASK_SIZE // 2
_SUPERSAMPLE = 5  # 5x5 sub-pixel samples per pixel; on when > 12 of 25 are inside
_QUARTER = FACTOR_SIZES[2] // 4  # orientation steps per quarter turn (10)

# Shape sizes at scale 1, in pixels.
_SQUARE_HALF_SIDE = 10.5
_ELLIPSE_SEMI_AXES = (11.0, 6.0)  # along x, along y at orientation 0
_HEART_UNIT = 9.0  # pixels per unit of the implicit heart curve
_HEART_Y_CENTRE = 0.125  # centre of the heart curve's bounding box (y from -1 to 1.25)


#: Orientation classes after which each shape looks the same again (square a quarter turn,
#: ellipse a half turn, heart a full turn): images at orientation k and k + period are equal.
ORIENTATION_PERIODS: tuple[int, ...] = (_QUARTER, 2 * _QUARTER, FACTOR_SIZES[2])


def orientation_period(shape: int) -> int:
    """Orientation period (in classes) of shape class ``shape`` (0 square, 1 ellipse, 2 heart)."""
    return ORIENTATION_PERIODS[int(shape)]


def factor_values() -> list[np.ndarray]:
    """The value of each class of each factor: a list of 5 float64 arrays."""
    return [
        np.arange(1, 4, dtype=np.float64),
        np.linspace(0.5, 1.0, FACTOR_SIZES[1]),
        np.arange(FACTOR_SIZES[2]) * (2 * math.pi / FACTOR_SIZES[2]),
        np.linspace(0.0, 1.0, FACTOR_SIZES[3]),
        np.linspace(0.0, 1.0, FACTOR_SIZES[4]),
    ]


def factor_grid(rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Factor classes and values of the grid, in canonical dSprites order.

    Args:
        rows: optional int array of grid rows (0 .. 737,279) to return; all when None.

    Returns:
        ``(factor_classes int64 [N, 5], factors float32 [N, 5])``; row ``i`` of the full
        grid is the mixed-radix number ``i`` with digits (shape, scale, orientation,
        posX, posY), posY fastest.
    """
    rows = np.arange(NUM_IMAGES, dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= NUM_IMAGES):
        raise ValueError(f"dSprites grid rows must lie in [0, {NUM_IMAGES}); "
                         f"got {rows.min()}..{rows.max()}")
    classes = np.stack(np.unravel_index(rows, FACTOR_SIZES), axis=1).astype(np.int64)
    values = factor_values()
    factors = np.stack([values[f][classes[:, f]] for f in range(len(FACTOR_SIZES))], axis=1)
    return classes, factors.astype(np.float32)


def _inside(shape: int, u: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    """Whether shape-frame points ``(u, v)`` (pixels, v up) lie inside the shape."""
    if shape == 0:
        half = _SQUARE_HALF_SIDE * scale
        return np.maximum(np.abs(u), np.abs(v)) <= half
    if shape == 1:
        a, b = (s * scale for s in _ELLIPSE_SEMI_AXES)
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0
    x = u / (_HEART_UNIT * scale)
    y = v / (_HEART_UNIT * scale) + _HEART_Y_CENTRE
    return (x * x + y * y - 1.0) ** 3 - x * x * y**3 <= 0.0


def _render_mask(shape: int, scale: float, angle: float) -> np.ndarray:
    """One shape rotated counter-clockwise by ``angle`` about the mask centre: bool [33, 33]."""
    sub = (np.arange(_SUPERSAMPLE) + 0.5) / _SUPERSAMPLE - 0.5  # symmetric sub-pixel offsets
    coord = (np.arange(MASK_SIZE)[:, None] - _HALF + sub[None, :]).reshape(-1)
    x = coord[None, :]  # columns, right
    y = -coord[:, None]  # rows, turned to point up
    if angle == 0.0:
        grid = (coord.size, coord.size)
        u, v = np.broadcast_to(x, grid), np.broadcast_to(y, grid)
    else:  # rotate the points by -angle, which rotates the shape by +angle
        c, s = math.cos(angle), math.sin(angle)
        u, v = c * x + s * y, -s * x + c * y
    inside = _inside(shape, u, v, scale)
    counts = inside.reshape(MASK_SIZE, _SUPERSAMPLE, MASK_SIZE, _SUPERSAMPLE).sum(axis=(1, 3))
    mask = counts * 2 > _SUPERSAMPLE**2
    if mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any():
        raise AssertionError("shape touches the mask border; sizes and MASK_SIZE disagree")
    return mask


@lru_cache(maxsize=1)
def shape_masks() -> np.ndarray:
    """Masks of every (shape, scale, orientation): bool [3, 6, 40, 33, 33]."""
    n_shape, n_scale, n_orient = FACTOR_SIZES[:3]
    scales = factor_values()[1]
    masks = np.zeros((n_shape, n_scale, n_orient, MASK_SIZE, MASK_SIZE), dtype=bool)
    step = 2 * math.pi / n_orient
    for shape in range(n_shape):
        for k, scale in enumerate(scales):
            for r in range(_QUARTER):
                base = _render_mask(shape, float(scale), r * step)
                for q in range(4):  # np.rot90 turns counter-clockwise in the (row, col) view
                    masks[shape, k, q * _QUARTER + r] = np.rot90(base, q)
    masks.setflags(write=False)
    return masks


@lru_cache(maxsize=1)
def _mask_offsets() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ragged flat pixel offsets of every mask's on-pixels within a 64x64 image.

    Returns ``(offsets int64 [total], start int64 [720], count int64 [720])`` so that the
    on-pixels of mask ``m`` are ``offsets[start[m] : start[m] + count[m]]`` as
    ``row * 64 + col`` relative to the mask's top-left pixel.
    """
    flat = shape_masks().reshape(-1, MASK_SIZE, MASK_SIZE)
    offsets, counts = [], []
    for mask in flat:
        r, c = np.nonzero(mask)
        offsets.append(r * IMAGE_SIZE + c)
        counts.append(r.size)
    count = np.asarray(counts, dtype=np.int64)
    start = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
    return np.concatenate(offsets).astype(np.int64), start, count


def render(
    factor_classes: np.ndarray, *, out: np.ndarray | None = None, chunk: int = 8192,
    progress: bool = False,
) -> np.ndarray:
    """Render images for rows of factor classes.

    Args:
        factor_classes: int [N, 5] class indices in ``FACTOR_NAMES`` order.
        out: optional uint8 [N, 1, 64, 64] array to fill (must be zero-initialised).
        chunk: images per vectorised step (bounds the temporary index arrays).
        progress: show a progress bar.

    Returns:
        uint8 [N, 1, 64, 64], 255 where the shape is, 0 elsewhere.
    """
    classes = np.asarray(factor_classes, dtype=np.int64)
    if classes.ndim != 2 or classes.shape[1] != len(FACTOR_SIZES):
        raise ValueError(f"factor_classes must have shape [N, 5]; got {classes.shape}")
    if ((classes < 0) | (classes >= np.asarray(FACTOR_SIZES))).any():
        raise ValueError(f"factor classes out of range; sizes are {FACTOR_SIZES}")
    n = classes.shape[0]
    if out is None:
        out = np.zeros((n, 1, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    elif out.shape != (n, 1, IMAGE_SIZE, IMAGE_SIZE) or out.dtype != np.uint8:
        raise ValueError(f"out must be uint8 [{n}, 1, 64, 64]; got {out.dtype} {out.shape}")
    offsets, start, count = _mask_offsets()
    flat_out = out.reshape(-1)
    pixels = IMAGE_SIZE * IMAGE_SIZE
    for lo in tqdm(range(0, n, chunk), desc="render dSprites", disable=not progress or None):
        c = classes[lo : lo + chunk]
        mask_id = np.ravel_multi_index((c[:, 0], c[:, 1], c[:, 2]), FACTOR_SIZES[:3])
        image_id = np.arange(lo, lo + len(c), dtype=np.int64)
        base = image_id * pixels + c[:, 4] * IMAGE_SIZE + c[:, 3]  # top-left pixel of the mask
        cnt = count[mask_id]
        # Ragged gather: position j of image i's run reads offsets[start[m_i] + j].
        run_start = np.cumsum(cnt) - cnt
        gather = np.repeat(start[mask_id] - run_start, cnt) + np.arange(cnt.sum(), dtype=np.int64)
        flat_out[np.repeat(base, cnt) + offsets[gather]] = 255
    return out


def generate_dsprites(size: int | None, seed: int, *, progress: bool = True) -> DatasetArrays:
    """Render dSprites: the full grid (``size=None``) or a seeded subset.

    Args:
        size: number of images, drawn without replacement and kept in grid order; None
            for all 737,280 (3.0 GB of uint8).
        seed: seed of the subset draw.
        progress: show a progress bar.

    Returns:
        :class:`DatasetArrays` with images uint8 [N, 1, 64, 64] in {0, 255}, factors,
        factor classes, names and sizes.
    """
    rows = _draw_rows(NUM_IMAGES, size, seed)
    classes, factors = factor_grid(rows)
    logger.info("rendering %d dSprites images", len(classes))
    images = render(classes, progress=progress)
    return DatasetArrays(
        images=images, factors=factors, factor_classes=classes,
        factor_names=list(FACTOR_NAMES), factor_sizes=list(FACTOR_SIZES),
    )


def subset(arrays: DatasetArrays, size: int | None, seed: int) -> DatasetArrays:
    """A seeded subset of ``arrays`` (same draw as :func:`generate_dsprites`)."""
    rows = _draw_rows(len(arrays.images), size, seed)
    return arrays if rows is None else arrays.select(rows)


_NPZ_KEYS = ("imgs", "latents_values", "latents_classes")
_NPZ_FIX = "Set data.dsprites_npz to null to generate dSprites procedurally instead."


def load_dsprites_npz(path: str | os.PathLike) -> DatasetArrays:
    """Load the original ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``.

    The file holds ``imgs`` uint8 [N, 64, 64] in {0, 1}, ``latents_values`` and
    ``latents_classes`` [N, 6] whose first column is the constant colour factor (dropped).

    Returns:
        :class:`DatasetArrays` in the same format as :func:`generate_dsprites` (images
        uint8 [N, 1, 64, 64] in {0, 255}).

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the file is not a readable npz or lacks the expected arrays.
    """
    import zipfile

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"dSprites npz not found: {path}. Download it from "
            f"https://github.com/deepmind/dsprites-dataset or fix the path. {_NPZ_FIX}"
        )
    try:
        npz = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise ValueError(f"dSprites npz {path} is not a readable .npz file ({err}); "
                         f"re-download it. {_NPZ_FIX}") from err
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"dSprites npz {path} holds a single array, not the .npz archive of "
                         f"{list(_NPZ_KEYS)}. {_NPZ_FIX}")
    with npz:
        missing = [k for k in _NPZ_KEYS if k not in npz.files]
        if missing:
            raise ValueError(f"dSprites npz {path} lacks the arrays {missing} (it has "
                             f"{npz.files}); is it the original dsprites_ndarray_*.npz? {_NPZ_FIX}")
        try:
            imgs, values, classes = (npz[k] for k in _NPZ_KEYS)
        except Exception as err:  # zlib/zip/format errors of a damaged member
            raise ValueError(f"dSprites npz {path} is damaged: reading its arrays failed ({err}); "
                             f"re-download it. {_NPZ_FIX}") from err
    n = imgs.shape[0] if imgs.ndim else 0
    if (imgs.shape[1:], values.shape, classes.shape) != ((IMAGE_SIZE,) * 2, (n, 6), (n, 6)):
        raise ValueError(f"dSprites npz {path} has unexpected shapes imgs {imgs.shape}, "
                         f"latents_values {values.shape}, latents_classes {classes.shape}; "
                         f"expected [N, 64, 64], [N, 6], [N, 6]. {_NPZ_FIX}")
    if imgs.max(initial=0) > 1:
        raise ValueError(f"dSprites npz {path}: imgs should hold 0/1 values, found max "
                         f"{imgs.max()}. {_NPZ_FIX}")
    images = imgs.astype(np.uint8, copy=False).reshape(n, 1, IMAGE_SIZE, IMAGE_SIZE)
    if not images.flags.writeable:
        images = images.copy()
    images *= 255
    factor_classes = classes[:, 1:].astype(np.int64)
    if n and ((factor_classes < 0) | (factor_classes >= np.asarray(FACTOR_SIZES))).any():
        raise ValueError(f"dSprites npz {path}: latents_classes[:, 1:] exceed the dSprites "
                         f"factor sizes {dict(zip(FACTOR_NAMES, FACTOR_SIZES))}. {_NPZ_FIX}")
    logger.info("loaded %d dSprites images from %s", n, path)
    return DatasetArrays(
        images=images, factors=values[:, 1:].astype(np.float32), factor_classes=factor_classes,
        factor_names=list(FACTOR_NAMES), factor_sizes=list(FACTOR_SIZES),
    )
