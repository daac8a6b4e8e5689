"""A file format that holds no code: tensors in safetensors, everything else as JSON.

A *tensor file* stores one nested dict (a checkpoint, a table): every ``torch.Tensor`` leaf
goes into the safetensors payload under its key path joined by ``/`` (``ema/blocks.0.weight``),
every other leaf (numbers, strings, booleans, None, lists, dicts with string keys) into one
JSON document kept in the safetensors header's metadata under :data:`META_KEY`. Reading it
parses a length-prefixed JSON header and copies raw little-endian numbers; nothing is
unpickled and no name in the file is imported or called.

Layout (the safetensors format): 8 bytes little-endian header length ``n``, ``n`` bytes of
JSON header ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
{META_KEY: "<json>"}}``, then the tensor bytes, contiguous and in offset order.

:func:`read_tensor_file` checks the header itself before the safetensors library reads the
payload: a bounded header length (:data:`MAX_HEADER_BYTES`), a JSON object, only the numeric
dtypes of :data:`DTYPES`, shapes of non-negative integers, offsets that tile the payload exactly
and match each shape, and no metadata but :data:`META_KEY`. Any violation raises
:class:`TensorFileError` naming the file and the reason.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch

from multibeta.utils.io import atomic_path

#: Key of the JSON document in the safetensors header's ``__metadata__``.
META_KEY = "multibeta"
#: Top-level key of that document recording the memory layout of tensors that were not
#: contiguous (``{key path: dimension order}``), so they load with the same strides: matrix
#: products of a transposed layout round differently in the last bit.
LAYOUT_KEY = "__layout__"
#: Upper bound of the JSON header (the σ_t table's metadata and a config are a few kB).
MAX_HEADER_BYTES = 16 << 20
#: safetensors dtype name -> bytes per element (numeric types only).
DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
          "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}
SEP = "/"


class TensorFileError(ValueError):
    """A tensor file is malformed, holds something this format does not allow, or is unreadable.

    Attributes:
        path: the file; reason: what is wrong with it (the message is ``"<path>: <reason>"``).
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


def _plain(value: Any, where: str) -> Any:
    """``value`` as JSON data (tuples and ``torch.Size`` as lists, numpy scalars as numbers)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"{where}: a {type(value).__name__} cannot be stored in a tensor file "
                    "(only tensors, numbers, strings, booleans, None, lists and dicts)")


def split_state(state: dict[str, Any], prefix: str = "") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, meta)``: the tensor leaves of ``state`` by key path, and the rest as JSON data.

    numpy arrays are stored as tensors. Tensors inside lists are refused (no key path).

    Raises:
        TypeError: a key that is not a non-empty string without ``/``, or a leaf that is
            neither a tensor nor JSON data (the message names its key path).
    """
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {}
    for key, value in state.items():
        if not isinstance(key, str) or not key or SEP in key:
            raise TypeError(f"{prefix}{key!r}: keys must be non-empty strings without '{SEP}'")
        path = f"{prefix}{key}"
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.array(value))
        if isinstance(value, torch.Tensor):
            tensors[path] = value.detach().cpu().clone()  # strides kept (see LAYOUT_KEY)
        elif isinstance(value, dict):
            sub_tensors, sub_meta = split_state(value, f"{path}{SEP}")
            tensors.update(sub_tensors)
            if sub_meta or not sub_tensors:
                meta[key] = sub_meta
        else:
            meta[key] = _plain(value, path)
    return tensors, meta


def join_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any], source: str = "tensor file") -> dict[str, Any]:
    """Inverse of :func:`split_state`: put each tensor back at its key path in ``meta``.

    Raises:
        TensorFileError: a key path that collides with a non-dict JSON value.
    """
    state = meta
    for path, tensor in tensors.items():
        *parents, leaf = path.split(SEP)
        node = state
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise TensorFileError(source, f"tensor {path!r} lies under a JSON value that is not a dict")
        if leaf in node:
            raise TensorFileError(source, f"tensor {path!r} is also a JSON value")
        node[leaf] = tensor
    return state


def write_tensor_file(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``state`` (see :func:`split_state`) to ``path`` atomically."""
    from safetensors.torch import save_file  # noqa: PLC0415

    if LAYOUT_KEY in state:
        raise TypeError(f"{LAYOUT_KEY!r} is a reserved key of tensor files")
    tensors, meta = split_state(state)
    layout = {}
    for key, tensor in tensors.items():
        if not tensor.is_contiguous():
            order = sorted(range(tensor.ndim), key=lambda i: -tensor.stride(i))
            if tensor.permute(order).is_contiguous():
                tensors[key], layout[key] = tensor.permute(order).contiguous(), order
            else:
                tensors[key] = tensor.contiguous()
    if layout:
        meta[LAYOUT_KEY] = layout
    text = json.dumps(meta, sort_keys=True, separators=(",", ":"))
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: text})


def read_header(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any], int]:
    """Check and return ``(tensor entries, meta, payload start)`` of the tensor file at ``path``.

    Reads only the header; the payload's size is checked against the offsets.

    Raises:
        TensorFileError: naming ``path`` and what is wrong.
    """
    path = Path(path)

    def fail(reason: str) -> TensorFileError:
        return TensorFileError(path, reason)

    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise fail(f"{size} bytes, too short for a safetensors file")
            (n,) = struct.unpack("<Q", prefix)
            if n > MAX_HEADER_BYTES or n > size - 8:
                raise fail(f"not a safetensors file: its header length field says {n} bytes "
                           f"(the file has {size}, the bound is {MAX_HEADER_BYTES})")
            raw = fh.read(n)
    except OSError as exc:
        raise fail(f"unreadable ({exc})") from exc
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise fail(f"not a safetensors file: its header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise fail("not a safetensors file: its header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    if not isinstance(metadata, dict) or set(metadata) != {META_KEY} or not isinstance(metadata[META_KEY], str):
        keys = sorted(metadata) if isinstance(metadata, dict) else type(metadata).__name__
        raise fail(f"its header metadata must hold exactly the key {META_KEY!r} (a JSON string); found {keys}")
    try:
        meta = json.loads(metadata[META_KEY])
    except json.JSONDecodeError as exc:
        raise fail(f"its {META_KEY!r} metadata is not JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise fail(f"its {META_KEY!r} metadata is not a JSON object")
    spans = []
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise fail(f"tensor {name!r}: entry must have exactly dtype, shape, data_offsets")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in DTYPES:
            raise fail(f"tensor {name!r}: dtype {dtype!r} is not one of {sorted(DTYPES)}")
        if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape):
            raise fail(f"tensor {name!r}: shape {shape!r} is not a list of non-negative integers")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(type(o) is int and o >= 0 for o in offsets)):
            raise fail(f"tensor {name!r}: data_offsets {offsets!r} is not [begin, end]")
        if offsets[1] - offsets[0] != math.prod(shape) * DTYPES[dtype]:
            raise fail(f"tensor {name!r}: data_offsets {offsets} do not hold {dtype} of shape {shape}")
        spans.append((offsets[0], offsets[1], name))
    end = 0
    for begin, stop, name in sorted(spans):
        if begin != end:
            raise fail(f"tensor {name!r}: data_offsets start at {begin}, expected {end} (gaps or overlaps)")
        end = stop
    if 8 + n + end != size:
        raise fail(f"the header describes {end} bytes of tensors but the file holds {size - 8 - n}")
    return header, meta, 8 + n


def read_tensor_file(path: str | os.PathLike) -> dict[str, Any]:
    """The nested dict stored at ``path`` by :func:`write_tensor_file` (tensors on the CPU).

    Raises:
        TensorFileError: naming ``path``: malformed header (see the module docstring) or payload.
    """
    from safetensors import SafetensorError  # noqa: PLC0415
    from safetensors.torch import load_file  # noqa: PLC0415

    header, meta, _ = read_header(path)
    layout = meta.pop(LAYOUT_KEY, {})
    if not isinstance(layout, dict) or not all(
            key in header and isinstance(order, list)
            and sorted(order) == list(range(len(header[key]["shape"]))) for key, order in layout.items()):
        raise TensorFileError(path, f"its {LAYOUT_KEY!r} is not {{tensor: a permutation of its dimensions}}")
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise TensorFileError(path, f"unreadable safetensors payload ({exc})") from exc
    for key, order in layout.items():  # back to the strides the tensor was saved with
        tensors[key] = tensors[key].permute(sorted(range(len(order)), key=order.__getitem__))
    return join_state(tensors, meta, source=str(path))
