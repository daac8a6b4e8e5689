"""Image geometry shared by the sources: resampling filters, square crops and resizes.

Every resize is PIL's (antialiased when shrinking), as torchvision's ``Resize`` on PIL images,
so a preset gives the same pixels as the reference pipelines that use torchvision.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

RESIZE_FILTERS: dict[str, int] = {
    "bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS, "box": Image.Resampling.BOX,
    "nearest": Image.Resampling.NEAREST,
}


def resample_code(name: str) -> int:
    """PIL's code of the filter ``name`` (a key of :data:`RESIZE_FILTERS`).

    Raises:
        KeyError: unknown filter, naming the known ones.
    """
    if name not in RESIZE_FILTERS:
        raise KeyError(f"unknown resize filter {name!r}; choose one of {sorted(RESIZE_FILTERS)}")
    return RESIZE_FILTERS[name]


def center_square(img: Image.Image) -> Image.Image:
    """The centred square of side ``min(width, height)`` (torchvision ``CenterCrop`` rounding)."""
    w, h = img.size
    side = min(w, h)
    top, left = int(round((h - side) / 2.0)), int(round((w - side) / 2.0))
    return img.crop((left, top, left + side, top + side))


def to_chw(img: Image.Image) -> np.ndarray:
    """A PIL image (mode ``L`` or ``RGB``) as uint8 ``[C, H, W]``."""
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def resize_square_batch(images: np.ndarray, size: int, resample: str = "bilinear") -> np.ndarray:
    """Square images uint8 ``[k, H, W, C]`` (C = 1 or 3) resized to uint8 ``[k, C, size, size]``."""
    code = resample_code(resample)
    k, _, _, c = images.shape
    out = np.empty((k, c, size, size), dtype=np.uint8)
    for i in range(k):
        img = Image.fromarray(images[i, :, :, 0] if c == 1 else images[i])
        out[i] = to_chw(img.resize((size, size), code))
    return out
