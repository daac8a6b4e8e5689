"""Row readers of large image arrays in users' files, and the lazy image view the writer streams.

The published disentanglement benchmarks are single arrays of 64x64 RGB images much larger
than memory may allow (Shapes3D 5.9 GB, MPI3D 12.7 GB). Nothing here loads a whole array:

- :class:`RowReader`: ``read(rows)`` -> uint8 ``[k, H, W, C]`` for ascending rows.
- :class:`NpyMember`: the ``.npy`` member of an ``.npz`` archive, memory-mapped when stored
  uncompressed (``np.savez``), read forward as a stream when deflated (``np.savez_compressed``);
  only plain uint8 arrays are accepted, so nothing is ever unpickled.
- :class:`LazyImages`: the selected rows of a reader as uint8 ``[N, C, S, S]`` (channels first,
  resized to ``S`` when the file's side differs), read block by block when
  :func:`multibeta.data.h5io.write_image_dataset` asks for ``images[lo:hi]``.
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Protocol

import numpy as np

from multibeta.data.imaging import resize_square_batch


class RowReader(Protocol):
    """Random access to the rows of an image array ``[N, H, W, C]`` (uint8)."""

    shape: tuple[int, ...]

    def read(self, rows: np.ndarray) -> np.ndarray:
        """uint8 ``[len(rows), H, W, C]`` at ascending, unique ``rows`` (int64)."""
        ...


class ArrayFileError(ValueError):
    """An array in a user's file cannot be read as the expected layout (the message says which)."""


# Errors of a damaged or truncated zip member (bad CRC, cut deflate stream, short read).
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, struct.error)


def _data_offset(path: Path, info: zipfile.ZipInfo) -> int:
    """Byte offset of a zip member's data: after its local header, name and extra field."""
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        header = fh.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"no local header for {info.filename}")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len


class NpyMember:
    """The array ``<key>.npy`` of an ``.npz`` archive, read without loading it whole.

    Args:
        path: the ``.npz`` file.
        key: the array's name (``images`` for ``images.npy``).
        what: how messages name the file (``"MPI3D file"``).
        expected: the expected layout, quoted in every error (``"images [1036800, 64, 64, 3] uint8"``).

    Raises:
        ArrayFileError: not a readable zip archive (a truncated download), no such array, an
            array that is not plain C-ordered uint8, or data shorter than its header says.
    """

    def __init__(self, path: str | os.PathLike, key: str, *, what: str, expected: str) -> None:
        self.path = Path(path)
        self.what = what
        self.expected = expected
        self._stream = None
        self._cursor = 0  # next row the stream would return
        self._memmap: np.ndarray | None = None
        try:
            self._zip = zipfile.ZipFile(self.path)
        except _ZIP_ERRORS as err:
            raise self.error(f"is not a readable .npz archive ({err}); a truncated or damaged "
                             "download?") from err
        name = f"{key}.npy"
        if name not in self._zip.namelist():
            found = [n.removesuffix(".npy") for n in self._zip.namelist()]
            self._zip.close()
            raise self.error(f"has no array {key!r} (it holds {found})")
        self.info = self._zip.getinfo(name)
        try:
            with self._zip.open(self.info) as fh:
                shape, fortran, dtype, header_len = _read_npy_header(fh)
        except _ZIP_ERRORS as err:
            self._zip.close()
            raise self.error(f"{name} has no readable .npy header ({err})") from err
        if dtype != np.dtype(np.uint8) or fortran:
            self._zip.close()
            raise self.error(f"{name} is {'Fortran-ordered ' if fortran else ''}{dtype}, not a "
                             "C-ordered uint8 array")
        self.shape = tuple(int(s) for s in shape)
        self.header_len = header_len
        row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) if self.shape else 1
        self.row_bytes = row_bytes
        need = header_len + row_bytes * (self.shape[0] if self.shape else 1)
        if self.info.file_size < need:
            self._zip.close()
            raise self.error(f"{name} holds {self.info.file_size} bytes but its header declares "
                             f"{self.shape}: the array is truncated")
        if self.info.compress_type == zipfile.ZIP_STORED:
            offset = _data_offset(self.path, self.info) + header_len
            if offset + need - header_len > self.path.stat().st_size:
                self._zip.close()
                raise self.error(f"is shorter than {name} needs: the file is truncated")
            self._memmap = np.memmap(self.path, dtype=np.uint8, mode="r", offset=offset, shape=self.shape)

    def error(self, problem: str) -> ArrayFileError:
        return ArrayFileError(f"{self.what} {self.path} {problem}. Expected {self.expected}.")

    def read(self, rows: np.ndarray) -> np.ndarray:
        """uint8 ``[len(rows), ...]`` at ascending ``rows``; a deflated member is read forward
        (calls must ask for ascending rows, as the writer does; going back restarts the stream)."""
        rows = np.asarray(rows, dtype=np.int64)
        if self._memmap is not None:
            return np.asarray(self._memmap[rows])
        out = np.empty((len(rows),) + self.shape[1:], dtype=np.uint8)
        if not len(rows):
            return out
        try:
            if self._stream is None or rows[0] < self._cursor:
                self._restart()
            for i, row in enumerate(rows):
                self._skip_to(int(row))
                buf = self._stream.read(self.row_bytes)
                if len(buf) != self.row_bytes:
                    raise EOFError(f"row {row} is cut short")
                out[i] = np.frombuffer(buf, dtype=np.uint8).reshape(self.shape[1:])
                self._cursor = int(row) + 1
        except _ZIP_ERRORS as err:
            raise self.error(f"cannot be read at row {self._cursor} ({type(err).__name__}: {err}); "
                             "the file is damaged or truncated") from err
        return out

    def _restart(self) -> None:
        if self._stream is not None:
            self._stream.close()
        self._stream = self._zip.open(self.info)
        self._stream.read(self.header_len)
        self._cursor = 0

    def _skip_to(self, row: int) -> None:
        gap = (row - self._cursor) * self.row_bytes
        while gap > 0:
            got = len(self._stream.read(min(gap, 1 << 24)))
            if got == 0:
                raise EOFError(f"the array ends before row {row}")
            gap -= got
        self._cursor = row

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
        self._memmap = None
        self._zip.close()

    def __enter__(self) -> "NpyMember":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_npy_header(fh) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, header length in bytes) of an open ``.npy`` stream."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version in ((2, 0), (3, 0)):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise ValueError(f"unknown .npy format version {version}")
    return shape, fortran, dtype, fh.tell()


class LazyImages:
    """Rows ``rows`` of a :class:`RowReader` ``[N, H, W, C]`` as uint8 ``[len(rows), C, S, S]``.

    Supports what the dataset writer needs: ``shape``, ``dtype``, ``ndim`` and ``images[lo:hi]``.
    Images whose side differs from ``image_size`` are resized (:func:`resize_square_batch`).
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, reader: RowReader, rows: np.ndarray, image_size: int, resample: str = "bilinear") -> None:
        self.reader = reader
        self.rows = np.asarray(rows, dtype=np.int64)
        self.image_size = int(image_size)
        self.resample = resample
        channels = int(reader.shape[3])
        self.shape = (len(self.rows), channels, self.image_size, self.image_size)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: slice) -> np.ndarray:
        if not isinstance(index, slice):
            raise TypeError("LazyImages supports row slices only")
        hwc = self.reader.read(self.rows[index])
        if hwc.shape[1] != self.image_size or hwc.shape[2] != self.image_size:
            return resize_square_batch(hwc, self.image_size, self.resample)
        return np.ascontiguousarray(hwc.transpose(0, 3, 1, 2))
