"""Every HDF5 file of the package is opened here (h5py is imported nowhere else in ``src/``).

- :func:`create_h5`: a new file written atomically (temporary name, renamed on success).
- :func:`open_h5`: an existing file for reading; a missing, unreadable or foreign file
  raises an error that names the file and the rule that rebuilds it (:class:`H5FileKind`).
- :func:`read_dataset`: ``dataset[selection]``; a damaged chunk raises the same kind of error.
- :class:`PerProcessFile`: a read handle opened lazily once per process, for objects used by
  ``DataLoader`` workers (forked or unpickled).

The file layouts live with their owners: the image dataset in :mod:`multibeta.data.h5io`,
the latent cache in :mod:`multibeta.cache.latent_cache`, the samples file in
:mod:`multibeta.sampling.store`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from multibeta.utils.io import atomic_path

H5File = h5py.File  # for type hints elsewhere, which need not import h5py
H5Dataset = h5py.Dataset
STRING_DTYPE = h5py.string_dtype("utf-8")  # variable-length UTF-8 strings, for create_dataset


@dataclass(frozen=True)
class H5FileKind:
    """What a kind of HDF5 file is and how it is rebuilt, for the errors about it.

    Attributes:
        what: its name in messages, e.g. ``"latent cache"``.
        made_by: sentence naming the rule that writes it (ends the "not found" error).
        fix: sentence telling how to replace a damaged one (ends every other error).
        error: exception class for damaged, unreadable or foreign files.
        missing_error: exception class for a missing file.
    """

    what: str
    made_by: str
    fix: str
    error: type[Exception]
    missing_error: type[Exception] = FileNotFoundError

    @property
    def a_what(self) -> str:
        """``what`` with its indefinite article ("an image dataset", "a latent cache")."""
        return f"{'an' if self.what[:1] in 'aeiou' else 'a'} {self.what}"


@contextmanager
def create_h5(path: str | os.PathLike, **file_kwargs: Any) -> Iterator[h5py.File]:
    """A new HDF5 file open for writing that appears at ``path`` only when the block succeeds.

    Args:
        path: the target file; an existing one is replaced on success and kept on failure.
        file_kwargs: passed to ``h5py.File`` (e.g. ``track_order``).
    """
    with atomic_path(path) as tmp, h5py.File(tmp, "w", **file_kwargs) as h5:
        yield h5


def open_h5(
    path: str | os.PathLike, kind: H5FileKind, *, required: tuple[str, ...] = (), **file_kwargs: Any
) -> h5py.File:
    """Open an existing HDF5 file for reading (the caller closes it, e.g. with ``with``).

    Args:
        path: the file.
        kind: names the file and its rule in errors.
        required: datasets the file must hold.
        file_kwargs: passed to ``h5py.File`` (e.g. chunk-cache sizes).

    Raises:
        kind.missing_error: no such file.
        kind.error: not an HDF5 file, or one that lacks a ``required`` dataset.
    """
    path = Path(path)
    if not path.is_file():
        raise kind.missing_error(f"{kind.what} not found: {path}. {kind.made_by}")
    try:
        h5 = h5py.File(path, "r", **file_kwargs)
    except OSError as err:
        raise kind.error(
            f"{kind.what} {path} is damaged or not an HDF5 file ({err}). {kind.fix}"
        ) from err
    missing = [name for name in required if name not in h5]
    if missing:
        h5.close()
        raise kind.error(f"{path} is not {kind.a_what} file (it lacks {missing}). {kind.fix}")
    return h5


def read_dataset(
    dset: H5Dataset, selection: Any = Ellipsis, *, kind: H5FileKind, path: str | os.PathLike | None = None
) -> np.ndarray:
    """``dset[selection]``; a read error (a damaged chunk) becomes ``kind.error`` naming the file.

    Args:
        dset: an ``h5py.Dataset`` (its ``name`` appears in the error).
        selection: any h5py selection.
        kind: names the file and its rule in the error.
        path: the file, for the message; ``dset.file.filename`` when None.
    """
    try:
        return dset[selection]
    except OSError as err:
        where = dset.file.filename if path is None else path
        raise kind.error(
            f"{kind.what} {where}: cannot read {dset.name} ({err}); the file is damaged. {kind.fix}"
        ) from err


class PerProcessFile:
    """A read handle on an HDF5 file, opened on first use in each process.

    An h5py handle must not be used across ``fork`` (``DataLoader`` workers) and cannot be
    pickled, so the handle is reopened when the process id changes and dropped on pickling.

    Args:
        path, kind, required, file_kwargs: as for :func:`open_h5`.
    """

    def __init__(
        self, path: str | os.PathLike, kind: H5FileKind, *, required: tuple[str, ...] = (),
        **file_kwargs: Any,
    ) -> None:
        self.path = Path(path)
        self.kind = kind
        self.required = required
        self.file_kwargs = file_kwargs
        self._h5: h5py.File | None = None
        self._pid: int | None = None

    def get(self) -> h5py.File:
        """The handle of this process (opened now when this process has none)."""
        if self._h5 is None or self._pid != os.getpid():
            self._h5 = open_h5(self.path, self.kind, required=self.required, **self.file_kwargs)
            self._pid = os.getpid()
        return self._h5

    def close(self) -> None:
        """Close this process's handle, if open (a parent's handle is only forgotten)."""
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._h5 = None
        self._pid = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_h5"] = None
        state["_pid"] = None
        return state
