"""The image dataset HDF5 file: writing, metadata, and a torch ``Dataset`` reader.

Layout (see ``docs/ARCHITECTURE.md``):

- ``images`` uint8 [N, C, S, S] in 0..255 with S in :data:`IMAGE_SIZES` (``data.image_size``;
  64 unless set), chunked ``(min(N, chunk_rows(S)), C, S, S)`` (256 rows at 64), gzip; the image
  size is the images' shape, which every reader takes it from;
- ``split`` int8 [N]: 0 train, 1 validation, 2 test;
- optional ``factors`` float32 [N, F], ``factor_classes`` int64 [N, F] with file attrs
  ``factor_names`` (JSON list) and ``factor_sizes`` (int array);
- optional ``attributes`` int8 [N, A] in {0, 1} with attr ``attribute_names`` (JSON list),
  and ``filenames`` (variable-length UTF-8);
- file attrs ``dataset``, ``generator_version``, ``seed``, ``created_with`` (JSON).

Files are written deterministically (no timestamps, fixed compression), so the same
inputs give byte-identical files. This module is the only one that touches this file (through
:mod:`multibeta.data.hdf5`, like every HDF5 file of the package).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from multibeta.core.image_size import IMAGE_SIZE, IMAGE_SIZES
from multibeta.data.hdf5 import (
    STRING_DTYPE, H5Dataset, H5File, H5FileKind, PerProcessFile, create_h5, open_h5, read_dataset,
)
from multibeta.utils.io import canonical_json

logger = logging.getLogger(__name__)

# IMAGE_SIZE: the default data.image_size, the side chunk sizes are scaled from; IMAGE_SIZES:
# the sides a dataset file may hold.
CHUNK_ROWS = 256  # rows per chunk at 64x64; scaled by pixel count at other sizes (chunk_rows)
COMPRESSION = "gzip"
# Measured on dSprites: level 4 is ~30% smaller than level 1 at the same read speed; the
# full set (737,280 images) writes in ~8 s. lzf reads 2x faster but only h5py can read it.
GZIP_LEVEL = 4
SPLIT_CODES: dict[str, int] = {"train": 0, "val": 1, "validation": 1, "test": 2}
SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
REQUIRED_ATTRS: tuple[str, ...] = ("dataset", "generator_version", "seed", "created_with")
OPTIONAL_DATASETS: tuple[str, ...] = ("factors", "factor_classes", "attributes", "filenames")
_MAKER = (
    "It is written by the prepare_data rule (snakemake ... prepare_data) from the config's "
    "data section."
)
_REQUIRED = ("images", "split")
_READ_BLOCK_ROWS = 16 * CHUNK_ROWS
_CHUNK_CACHE_BYTES = 64 << 20

SplitName = Literal["train", "val", "validation", "test"]
IndexLike = Sequence[int] | np.ndarray | torch.Tensor


def chunk_rows(image_size: int) -> int:
    """Rows per HDF5 chunk of images of side ``image_size``: :data:`CHUNK_ROWS` at 64, scaled
    by the pixel count elsewhere (64 rows at 128, 16 at 256), so a chunk stays about 1 MB/channel."""
    return max(1, CHUNK_ROWS * IMAGE_SIZE * IMAGE_SIZE // (int(image_size) ** 2))


def check_image_shape(shape: Sequence[int], what: str = "images") -> int:
    """The side S of images of ``shape`` [N, C, S, S] (S in :data:`IMAGE_SIZES`).

    Raises:
        ValueError: not 4-d, not square, or a side outside :data:`IMAGE_SIZES`.
    """
    if len(shape) != 4 or shape[2] != shape[3] or int(shape[2]) not in IMAGE_SIZES:
        raise ValueError(f"{what} must be uint8 [N, C, S, S] with S one of {list(IMAGE_SIZES)} "
                         f"(data.image_size); got shape {tuple(shape)}")
    return int(shape[2])


def _as_int_array(index: IndexLike) -> np.ndarray:
    """int64 numpy array of an index sequence, array or (any-device) tensor."""
    if isinstance(index, torch.Tensor):
        index = index.detach().cpu().numpy()
    return np.asarray(index, dtype=np.int64)


class DatasetFileError(ValueError):
    """The file exists but is not an image dataset file (message names path and fix)."""


DATASET_FILE = H5FileKind(
    "image dataset", made_by=_MAKER, error=DatasetFileError,
    fix="Delete it and rerun the prepare_data rule (snakemake ... prepare_data), which rebuilds "
        "it from the config's data section.",
)


@dataclass
class DatasetArrays:
    """An image dataset in memory, as the generators return it.

    Attributes:
        images: uint8 [N, C, S, S] in 0..255 (S in :data:`IMAGE_SIZES`).
        factors: float32 [N, F] factor values, or None.
        factor_classes: int64 [N, F] factor class indices, or None.
        factor_names: F names, or None.
        factor_sizes: F class counts, or None.
        attributes: int8 [N, A] in {0, 1}, or None.
        attribute_names: A names, or None.
        filenames: N source file names, or None.
        split: int8 [N] split codes when the data set fixes them (CelebA), or None.
    """

    images: np.ndarray
    factors: np.ndarray | None = None
    factor_classes: np.ndarray | None = None
    factor_names: list[str] | None = None
    factor_sizes: list[int] | None = None
    attributes: np.ndarray | None = None
    attribute_names: list[str] | None = None
    filenames: list[str] | None = None
    split: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def select(self, rows: np.ndarray) -> "DatasetArrays":
        """A copy holding only ``rows`` (int array), in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        per_row = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                per_row[f.name] = value[rows]
        if self.filenames is not None:
            per_row["filenames"] = [self.filenames[i] for i in rows]
        return replace(self, **per_row)


def _check_rows(name: str, array: np.ndarray | Sequence | None, n: int) -> None:
    if array is not None and len(array) != n:
        raise ValueError(f"{name} has {len(array)} rows but images has {n}")


def _attr_value(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        return canonical_json(value)
    if value is None:
        return "null"
    return value


def write_image_dataset(
    path: str | os.PathLike,
    *,
    images: np.ndarray,
    split: np.ndarray,
    factors: np.ndarray | None = None,
    factor_classes: np.ndarray | None = None,
    factor_names: Sequence[str] | None = None,
    factor_sizes: Sequence[int] | None = None,
    attributes: np.ndarray | None = None,
    attribute_names: Sequence[str] | None = None,
    filenames: Sequence[str] | None = None,
    attrs: dict[str, Any],
    progress: bool = True,
) -> None:
    """Write an image dataset file atomically (layout in the module docstring).

    Args:
        path: target ``.h5`` path.
        images: uint8 [N, C, S, S] in 0..255, S in :data:`IMAGE_SIZES`: a numpy array, or any
            array-like with ``shape``, ``dtype``, ``ndim`` and row slices ``images[lo:hi]``
            (read in ascending blocks, so a large source is streamed, never held whole).
        split: int [N] with values 0 (train), 1 (validation), 2 (test).
        factors, factor_classes: float [N, F] values and int [N, F] classes (both or none);
            need ``factor_names`` and ``factor_sizes`` (F each).
        attributes: {0, 1} [N, A]; needs ``attribute_names``.
        filenames: N strings.
        attrs: file attributes; must hold ``dataset``, ``generator_version``, ``seed`` and
            ``created_with``. Dicts and lists are stored as canonical JSON strings.
        progress: show a progress bar for the image write.
    """
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 [N, C, S, S]; got {images.dtype} {images.shape}")
    side = check_image_shape(images.shape)
    n, channels = images.shape[:2]
    split = np.asarray(split)
    _check_rows("split", split, n)
    if split.size and not np.isin(split, (0, 1, 2)).all():
        raise ValueError("split values must be 0 (train), 1 (validation) or 2 (test)")
    missing = [k for k in REQUIRED_ATTRS if k not in attrs]
    if missing:
        raise ValueError(f"attrs lacks {missing}; the dataset file needs {list(REQUIRED_ATTRS)}")
    if (factors is None) != (factor_classes is None) or (
        factors is not None and (factor_names is None or factor_sizes is None)
    ):
        raise ValueError(
            "factors and factor_classes go together, with factor_names and factor_sizes"
        )
    if factors is not None:
        _check_rows("factors", factors, n)
        _check_rows("factor_classes", factor_classes, n)
        n_f = len(factor_names)
        shapes = (factors.shape[1:], factor_classes.shape[1:], (len(factor_sizes),))
        if any(s != (n_f,) for s in shapes):
            raise ValueError(f"factor arrays must be [N, {n_f}] and factor_sizes have {n_f} "
                             f"entries to match factor_names {list(factor_names)}")
    if attributes is not None:
        _check_rows("attributes", attributes, n)
        if attribute_names is None or attributes.shape[1:] != (len(attribute_names),):
            raise ValueError("attributes [N, A] need attribute_names with A entries")
        if attributes.size and not np.isin(attributes, (0, 1)).all():
            raise ValueError("attributes must hold 0/1 values")
    _check_rows("filenames", filenames, n)

    common = {"track_times": False}
    labels = {"compression": COMPRESSION, "compression_opts": GZIP_LEVEL, **common} if n else common
    with create_h5(path, track_order=False) as h5:
        rows_per_chunk = chunk_rows(side)
        dset = h5.create_dataset(
            "images", shape=tuple(images.shape), dtype=np.uint8,
            chunks=(max(1, min(n, rows_per_chunk)), channels, side, side),
            compression=COMPRESSION, compression_opts=GZIP_LEVEL, **common,
        )
        block = 16 * rows_per_chunk
        for lo in tqdm(range(0, n, block), desc="write images", disable=not progress or None):
            dset[lo : lo + block] = images[lo : lo + block]
        h5.create_dataset("split", data=split.astype(np.int8), **labels)
        if factors is not None:
            h5.create_dataset("factors", data=np.asarray(factors, np.float32), **labels)
            h5.create_dataset("factor_classes", data=np.asarray(factor_classes, np.int64), **labels)
            h5.attrs["factor_names"] = json.dumps(list(factor_names))
            h5.attrs["factor_sizes"] = np.asarray(factor_sizes, dtype=np.int64)
        if attributes is not None:
            h5.create_dataset("attributes", data=np.asarray(attributes, np.int8), **labels)
            h5.attrs["attribute_names"] = json.dumps(list(attribute_names))
        if filenames is not None:
            h5.create_dataset("filenames", data=list(filenames),
                              dtype=STRING_DTYPE, **common)
        for key in sorted(attrs):
            h5.attrs[key] = _attr_value(attrs[key])
    logger.info("wrote %d images [%d, %d, %d, %d] to %s", n, n, channels, side, side, path)


def _open(path: str | os.PathLike, **kwargs: Any) -> H5File:
    """Open a dataset file for reading, with errors that name the path and the fix."""
    return open_h5(path, DATASET_FILE, required=_REQUIRED, **kwargs)


def _read(dset: H5Dataset, selection: Any = Ellipsis) -> np.ndarray:
    """``dset[selection]``; a corrupt chunk becomes an error naming the file and the fix."""
    return read_dataset(dset, selection, kind=DATASET_FILE)


def _json_attr(h5: H5File, key: str) -> Any:
    if key not in h5.attrs:
        return None
    value = h5.attrs[key]
    if isinstance(value, bytes):
        value = value.decode()
    return json.loads(value) if isinstance(value, str) else value


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Describe a dataset file without reading its images.

    Returns:
        dict with ``n`` (images), ``channels``, ``image_size`` (the side S of the images
        [N, C, S, S]), ``factor_names``, ``factor_sizes``,
        ``attribute_names`` (None when absent), ``optional`` (the optional datasets
        present), ``split_counts`` ({"train", "val", "test"} -> int) and ``attrs``
        (``dataset``, ``generator_version``, ``seed``, ``created_with`` parsed from JSON).
    """
    with _open(path) as h5:
        n, channels = (int(s) for s in h5["images"].shape[:2])
        image_size = int(h5["images"].shape[2])
        counts = np.bincount(_read(h5["split"]).astype(np.int64), minlength=3)
        sizes = h5.attrs.get("factor_sizes")
        attrs = {}
        for key in REQUIRED_ATTRS:
            value = h5.attrs.get(key)
            if isinstance(value, bytes):
                value = value.decode()
            if key == "created_with" and isinstance(value, str):
                value = json.loads(value)
            attrs[key] = value.item() if isinstance(value, np.generic) else value
        return {
            "n": n,
            "channels": channels,
            "image_size": image_size,
            "factor_names": _json_attr(h5, "factor_names"),
            "factor_sizes": None if sizes is None else [int(s) for s in sizes],
            "attribute_names": _json_attr(h5, "attribute_names"),
            "optional": [k for k in OPTIONAL_DATASETS if k in h5],
            "split_counts": {name: int(counts[code]) for code, name in enumerate(SPLIT_NAMES)},
            "attrs": attrs,
        }


def _read_rows(dset: H5Dataset, rows: np.ndarray, progress: bool = False) -> np.ndarray:
    """Read ``dset[rows]`` for any int rows (any order, repeats allowed).

    Rows are read in runs of whole chunks, so each needed chunk is decompressed once.
    """
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((len(rows),) + dset.shape[1:], dtype=dset.dtype)
    if not len(rows):
        return out
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    chunk = dset.chunks[0] if dset.chunks else _READ_BLOCK_ROWS
    block = sorted_rows // chunk
    # Start a new read where the block id jumps or a read would grow past the size limit.
    starts = np.flatnonzero(np.diff(block, prepend=-2) > 1)
    bounds = list(starts) + [len(rows)]
    side = dset.shape[-1] if dset.ndim == 4 else IMAGE_SIZE
    max_blocks = max(1, _READ_BLOCK_ROWS * IMAGE_SIZE * IMAGE_SIZE // (side * side * chunk))
    pieces = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        first = block[a]
        while a < b:  # split a long run of consecutive chunks into bounded reads
            stop = np.searchsorted(block[a:b], first + max_blocks) + a
            pieces.append((a, stop, first))
            a, first = stop, first + max_blocks
    for a, b, first in tqdm(pieces, desc="read images", disable=not progress or None):
        lo = int(first) * chunk
        hi = int(sorted_rows[b - 1]) + 1
        data = _read(dset, slice(lo, hi))
        out[order[a:b]] = data[sorted_rows[a:b] - lo]
    return out


def read_images(path: str | os.PathLike, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """Images at file rows ``indices`` (any order): uint8 [len(indices), C, S, S]."""
    with _open(path) as h5:
        rows = np.asarray(indices, dtype=np.int64)
        n = h5["images"].shape[0]
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            raise IndexError(f"rows out of range for {path} with {n} images")
        return _read_rows(h5["images"], rows)


def read_labels(path: str | os.PathLike, rows: np.ndarray) -> dict[str, np.ndarray | None]:
    """``factor_classes`` [len(rows), F] and ``attributes`` [len(rows), A] at file ``rows``
    (None where the file has no such labels); read errors name the file and the fix."""
    with _open(path) as h5:
        return {name: (_read(h5[name])[rows] if name in h5 else None)
                for name in ("factor_classes", "attributes")}


def spread_positions(n_total: int, n: int) -> np.ndarray:
    """``min(n, n_total)`` positions evenly spread over ``0 .. n_total - 1`` (int64, ascending).

    Dataset files keep the source's order, which for dSprites is the factor grid (shape varies
    slowest), so the first n images of a split would all be squares. Figures and metric subsets
    take evenly spread positions instead: deterministic, and covering every factor.
    """
    n = max(0, min(int(n), int(n_total)))
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.round(np.linspace(0, n_total - 1, n)).astype(np.int64))


class ImageDataset(Dataset):
    """Images of a dataset file as a torch ``Dataset``.

    Item ``i`` is ``(image float32 [C, S, S] in [0, 1], row)`` where ``row`` (int,
    collated to int64) is the image's row in the file. The selected images are held in
    memory (as uint8) when they take at most ``max_memory_bytes``; otherwise each item is
    read from the file, which is opened lazily once per process, so the dataset can be
    pickled and used by ``DataLoader`` workers.

    Args:
        path: dataset file.
        split: keep only rows of this split ("train", "val"/"validation", "test"); all when None.
        indices: keep only these file rows (in this order); combined with ``split``, rows
            outside the split are dropped.
        max_memory_bytes: memory allowed for the uint8 image array.

    Attributes:
        rows: int64 [len] file row of each position.
        in_memory: whether the images are held in memory.
        metadata: :func:`read_metadata` of the file.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        split: SplitName | None = None,
        indices: Sequence[int] | np.ndarray | None = None,
        max_memory_bytes: int = 2**31,
    ) -> None:
        self.path = Path(path)
        self.metadata = read_metadata(self.path)
        n = self.metadata["n"]
        self.channels = self.metadata["channels"]
        #: Side S of the square images (the file's ``data.image_size``).
        self.image_size = self.metadata["image_size"]
        rows = np.arange(n) if indices is None else np.asarray(indices)
        rows = rows.astype(np.int64, copy=False)
        if rows.ndim != 1 or (rows.size and (rows.min() < 0 or rows.max() >= n)):
            raise IndexError(f"indices must be file rows in [0, {n}) of {self.path}")
        if split is not None:
            if split not in SPLIT_CODES:
                raise ValueError(
                    f"unknown split {split!r}; use one of {sorted(SPLIT_CODES)} or None"
                )
            with _open(self.path) as h5:
                codes = _read(h5["split"])
            rows = rows[codes[rows] == SPLIT_CODES[split]]
        self.rows = rows
        self.split = split
        nbytes = len(rows) * self.channels * self.image_size * self.image_size
        self.in_memory = nbytes <= max_memory_bytes
        self._images: np.ndarray | None = None
        self._handle = PerProcessFile(self.path, DATASET_FILE, required=_REQUIRED,
                                      rdcc_nbytes=_CHUNK_CACHE_BYTES, rdcc_nslots=10007)
        self._labels: dict[str, np.ndarray] = {}
        if self.in_memory:
            with _open(self.path) as h5:
                self._images = _read_rows(h5["images"], rows, progress=len(rows) > 100_000)
        logger.info("ImageDataset %s split=%s: %d images (%.1f MB), %s", self.path, split,
                    len(rows), nbytes / 1e6, "in memory" if self.in_memory else "read from file")

    def __len__(self) -> int:
        return len(self.rows)

    def close(self) -> None:
        """Close this process's file handle, if open."""
        self._handle.close()

    def uint8_batch(self, positions: IndexLike) -> np.ndarray:
        """Images at dataset positions (0 .. len-1): uint8 [B, C, S, S]."""
        pos = _as_int_array(positions)
        if self._images is not None:
            return self._images[pos]
        return _read_rows(self._handle.get()["images"], self.rows[pos])

    def tensor_batch(
        self, positions: IndexLike, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """Images at dataset positions (0 .. len-1) as float32 [B, C, S, S] in [0, 1].

        The uint8 batch is moved to ``device`` before the conversion (4x less transfer).
        """
        batch = torch.from_numpy(self.uint8_batch(positions))
        if device is not None:
            batch = batch.to(device, non_blocking=True)
        return batch.to(torch.float32).div_(255.0)

    def batch(self, positions: IndexLike) -> torch.Tensor:
        """Images at dataset positions as float32 [B, C, S, S] in [0, 1], on the CPU
        (:class:`multibeta.data.sources.ImageSource`)."""
        return self.tensor_batch(positions)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        row = int(self.rows[i])
        if self._images is not None:
            image = self._images[i]
        else:
            image = _read(self._handle.get()["images"], row)
        return torch.from_numpy(image.astype(np.float32) / 255.0), row

    # --- labels, indexed by file row -------------------------------------------------
    def _label(self, name: str) -> np.ndarray:
        if name not in self._labels:
            with _open(self.path) as h5:
                if name not in h5:
                    raise KeyError(f"{self.path} has no '{name}' dataset "
                                   f"(it has {self.metadata['optional']})")
                self._labels[name] = _read(h5[name])
        return self._labels[name]

    def _label_rows(self, name: str, rows: IndexLike | None) -> np.ndarray:
        table = self._label(name)
        return table[self.rows if rows is None else _as_int_array(rows)]

    def factor_classes(self, rows: IndexLike | None = None) -> np.ndarray:
        """Factor classes int64 [B, F] of file ``rows`` (the items' second element).

        ``rows=None`` gives the classes of this dataset's rows, in position order.
        """
        return self._label_rows("factor_classes", rows)

    def factors(self, rows: IndexLike | None = None) -> np.ndarray:
        """Factor values float32 [B, F] of file ``rows``; this dataset's rows when None."""
        return self._label_rows("factors", rows)

    def attributes(self, rows: IndexLike | None = None) -> np.ndarray:
        """Binary attributes int8 [B, A] of file ``rows``; this dataset's rows when None."""
        return self._label_rows("attributes", rows)

    def split_codes(self, rows: IndexLike | None = None) -> np.ndarray:
        """Split codes int8 [B] (0 train, 1 val, 2 test) of file ``rows``; own rows when None."""
        return self._label_rows("split", rows)
