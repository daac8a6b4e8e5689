"""Checkpoints: atomic save, and loading that explains mismatches instead of tracebacks.

A checkpoint is a dict saved with ``torch.save``. It always carries:

- ``kind``: what it is (``"vae"``, ``"diffusion"``, ``"factor_classifier"``, ...);
- ``arch``: the architecture-defining config (a plain dict); loading with another ``arch``
  raises :class:`CheckpointMismatchError` naming the differing keys;
- ``versions``: from :func:`multibeta.utils.versions.collect_versions`.

Checkpoints hold plain data only: tensors, numbers, strings, booleans, None, lists, tuples and
dicts (:func:`plain_state` turns numpy arrays into tensors and numpy scalars into numbers before
saving), and every load is weights-only (``torch.load(..., weights_only=True)``: torch's
restricted unpickler, which builds only those types and calls nothing else). A checkpoint of an
older multibeta that still holds numpy arrays loads with exactly the numpy array types of
numeric dtypes allowed (:data:`LEGACY_NUMPY_GLOBALS`; object arrays are refused). A path ending
in ``.safetensors`` is a :mod:`multibeta.utils.tensorfile` (a bundle's models), read without
pickle at all.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from multibeta.utils.io import atomic_path
from multibeta.utils.tensorfile import TensorFileError, read_tensor_file

#: What a checkpoint written before checkpoints held plain data needs beyond the weights-only
#: defaults: numpy arrays and scalars of numeric dtypes (no object arrays, nothing callable
#: but the array constructors).
LEGACY_NUMPY_GLOBALS = [
    np.dtype, np.ndarray, np._core.multiarray._reconstruct, np._core.multiarray.scalar,
    *(type(np.dtype(t)) for t in (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32,
                                  np.int64, np.uint8, np.uint16, np.uint32, np.uint64, np.bool_)),
]


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable, or of the wrong kind."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint was written for a different architecture/config."""


def plain_state(value: Any) -> Any:
    """``value`` with numpy arrays as tensors and numpy scalars as Python numbers (recursively
    through dicts, lists and tuples), so that a weights-only load reads it back."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError("a numpy object array cannot be stored in a checkpoint")
        return torch.from_numpy(np.array(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return type(value)((k, plain_state(v)) for k, v in value.items())
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
        return type(value)(*(plain_state(v) for v in value))
    if isinstance(value, (list, tuple)) and not isinstance(value, torch.Size):
        return type(value)(plain_state(v) for v in value)
    return value


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Save ``state`` atomically (temporary file, then rename) as plain data (:func:`plain_state`)."""
    for key in ("kind", "arch"):
        if key not in state:
            raise ValueError(f"checkpoint state needs a '{key}' entry")
    with atomic_path(path) as tmp:
        torch.save(plain_state(state), tmp)


def load_weights_only(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` with the weights-only unpickler; numpy arrays of numeric dtypes are allowed
    only on a second try, for checkpoints of older multibeta versions.

    Raises:
        pickle.UnpicklingError: the file holds something else (its message names the type).
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "numpy" not in str(exc):
            raise
    with torch.serialization.safe_globals(LEGACY_NUMPY_GLOBALS):
        return torch.load(path, map_location=map_location, weights_only=True)


def diff_configs(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """One line per differing (nested, dotted) key: what the checkpoint has vs what is asked."""
    diffs = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, "<missing>"), b.get(key, "<missing>")
        if isinstance(va, dict) and isinstance(vb, dict):
            diffs += diff_configs(va, vb, f"{prefix}{key}.")
        elif va != vb:
            diffs.append(f"{prefix}{key}: checkpoint has {va!r}, config asks for {vb!r}")
    return diffs


def unpickler_reason(exc: BaseException) -> str:
    """The one-line reason inside torch's long weights-only refusal (which type was refused)."""
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation",
                   "WeightsUnpickler error")
    lines = [line.strip() for line in str(exc).splitlines()]
    reasons = [line for line in lines if line and not line.startswith(boilerplate)]
    return reasons[0] if reasons else type(exc).__name__


def load_checkpoint(
    path: str | os.PathLike,
    *,
    kind: str,
    arch: dict[str, Any] | None = None,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Load a checkpoint and check its kind and (optionally) its architecture config.

    Raises:
        CheckpointError: missing/corrupt file or wrong kind, with the path and a fix.
        CheckpointMismatchError: ``arch`` differs; the message lists each differing key.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            state = read_tensor_file(path)
            state = {k: _to_device(v, map_location) for k, v in state.items()}
        else:
            state = load_weights_only(path, map_location)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"checkpoint {path} holds objects that a weights-only load refuses "
            f"({unpickler_reason(exc)}). It was not "
            "written by this multibeta (or is not a checkpoint); it is not loaded, since unpickling "
            "it could run code. Delete it and rerun the rule that produces it."
        ) from exc
    except TensorFileError as exc:
        raise CheckpointError(f"checkpoint {exc}. Delete it and rerun the rule that produces it.") from exc
    except Exception as exc:  # torch raises several types for truncated/corrupt files
        raise CheckpointError(
            f"checkpoint {path} is unreadable or corrupt ({type(exc).__name__}: {exc}). "
            "Delete it and rerun the rule that produces it."
        ) from exc
    if not isinstance(state, dict) or state.get("kind") != kind:
        found = state.get("kind") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not a '{kind}' checkpoint (found {found!r}).")
    if arch is not None:
        check_arch(path, state.get("arch", {}), arch)
    return state


def check_arch(path: str | os.PathLike, stored: dict[str, Any], expected: dict[str, Any]) -> None:
    """Refuse a checkpoint whose ``arch`` record ``stored`` differs from ``expected``.

    Raises:
        CheckpointMismatchError: naming every differing key.
    """
    diffs = diff_configs(stored, expected)
    if diffs:
        raise CheckpointMismatchError(
            f"{path} was written for another architecture/config:\n  - "
            + "\n  - ".join(diffs)
            + "\nUse the matching config, or delete the checkpoint to train from scratch."
        )


def _to_device(value: Any, device: str | torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value
