"""What an image source is: the one protocol the VAE trainer and the image metrics read images through.

Implementations: :class:`multibeta.data.h5io.ImageDataset` (a dataset file),
``multibeta.vae.trainer.TensorSource`` / ``H5Source`` (training data),
``multibeta.metrics.images.ArrayImages`` / ``SubsetImages`` (metric inputs).
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np
import torch

Positions = Sequence[int] | np.ndarray


@runtime_checkable
class ImageSource(Protocol):
    """Random access to images by position ``0 .. len - 1``.

    Sources that store uint8 images (``ImageDataset``, the metrics' arrays) also have
    ``uint8_batch(positions) -> uint8 [B, C, H, W]``, the stored bytes; :func:`uint8_batch`
    reads those from any source.
    """

    channels: int

    def __len__(self) -> int: ...

    def batch(self, positions: Positions) -> torch.Tensor:
        """Images ``[B, C, H, W]`` float32 in [0, 1] (CPU) at ``positions`` ``[B]``."""
        ...


def image_size_of(source: ImageSource) -> int:
    """Side S of the square images ``[C, S, S]`` of ``source``: its ``image_size`` attribute when
    it has one (dataset files), else read from the image at position 0."""
    size = getattr(source, "image_size", None)
    if size is not None:
        return int(size)
    return int(source.batch(np.zeros(1, dtype=np.int64)).shape[-1])


def quantise(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """Float images in [0, 1] as uint8 0..255: ``round(255 x)`` (in float64), clipped; same shape."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    return np.clip(np.rint(np.asarray(images, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def uint8_batch(source: ImageSource, positions: Positions) -> np.ndarray:
    """uint8 ``[B, C, H, W]`` images of ``source`` at ``positions``: its stored bytes when it
    keeps uint8 images (has ``uint8_batch``), else :func:`quantise` of its float ``batch``."""
    read = getattr(source, "uint8_batch", None)
    if read is not None:
        return read(positions)
    return quantise(source.batch(np.asarray(positions, dtype=np.int64)))
