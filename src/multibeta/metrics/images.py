"""Image inputs of the image metrics: arrays, tensors or an image source, read as uint8 batches.

An *image source* is :class:`multibeta.data.sources.ImageSource` (``ImageDataset`` is one).
:func:`as_image_source` wraps numpy arrays and torch tensors (uint8 0..255, or float in
[0, 1], rounded to uint8) and returns sources with ``uint8_batch(positions) -> uint8
[B, C, H, W]``, so every metric reads images the same way.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from multibeta.data.sources import ImageSource, quantise, uint8_batch

__all__ = ["ArrayImages", "ImageSource", "SubsetImages", "TorchFidelityImages", "as_image_source",
           "channels_of"]


class ArrayImages:
    """An in-memory image array as an :class:`ImageSource`.

    Args:
        images: [N, C, H, W] uint8 (0..255) or float (in [0, 1]; converted once with
            ``round(255 x)``), numpy or torch.
    """

    def __init__(self, images: np.ndarray | torch.Tensor) -> None:
        if isinstance(images, torch.Tensor):
            images = images.detach().cpu().numpy()
        images = np.asarray(images)
        if images.ndim != 4:
            raise ValueError(f"images must be [N, C, H, W], got shape {images.shape}")
        if images.dtype != np.uint8:
            if images.size and (images.min() < -1e-6 or images.max() > 1 + 1e-6):
                raise ValueError("float images must be in [0, 1]")
            images = quantise(images)
        self.images = images
        self.channels = images.shape[1]

    def __len__(self) -> int:
        return len(self.images)

    def uint8_batch(self, positions: Sequence[int] | np.ndarray) -> np.ndarray:
        """uint8 [B, C, H, W] at ``positions``."""
        return self.images[np.asarray(positions, dtype=np.int64)]

    def batch(self, positions: Sequence[int] | np.ndarray) -> torch.Tensor:
        """float32 [B, C, H, W] in [0, 1] at ``positions``."""
        return torch.from_numpy(self.uint8_batch(positions)).to(torch.float32).div_(255.0)


class SubsetImages:
    """Positions ``positions`` of another image source, as an image source."""

    def __init__(self, source: ImageSource, positions: Sequence[int] | np.ndarray) -> None:
        self.source = source
        self.positions = np.asarray(positions, dtype=np.int64)
        self.channels = channels_of(source)

    def __len__(self) -> int:
        return len(self.positions)

    def uint8_batch(self, positions: Sequence[int] | np.ndarray) -> np.ndarray:
        """uint8 [B, C, H, W] at ``positions`` of this subset."""
        return uint8_batch(self.source, self.positions[np.asarray(positions, dtype=np.int64)])

    def batch(self, positions: Sequence[int] | np.ndarray) -> torch.Tensor:
        """float32 [B, C, H, W] in [0, 1] at ``positions`` of this subset."""
        return self.source.batch(self.positions[np.asarray(positions, dtype=np.int64)])


def as_image_source(images: ImageSource | np.ndarray | torch.Tensor) -> ImageSource:
    """An image source with ``uint8_batch``: arrays/tensors wrapped in :class:`ArrayImages`,
    sources with ``uint8_batch`` (``ImageDataset``) as they are, float-only sources as a
    :class:`SubsetImages` of all their positions (rounded to uint8)."""
    if isinstance(images, (np.ndarray, torch.Tensor)):
        return ArrayImages(images)
    if isinstance(images, ImageSource):
        return images if hasattr(images, "uint8_batch") else SubsetImages(images, np.arange(len(images)))
    raise TypeError(
        f"expected an image array/tensor [N, C, H, W] or an image source with channels, len() and "
        f"batch() (multibeta.data.sources.ImageSource, e.g. ImageDataset), got {type(images).__name__}"
    )


def channels_of(source: ImageSource) -> int:
    """Number of channels of an image source."""
    return int(source.channels)


class TorchFidelityImages(Dataset):
    """An image source as the ``Dataset`` torch-fidelity wants: item = uint8 tensor [C', H, W].

    Args:
        source: the images.
        channels: channels the feature extractor expects; 1-channel images are repeated
            to 3 when it is 3 (Inception). None passes images unchanged.
    """

    def __init__(self, source: ImageSource, channels: int | None) -> None:
        self.source = source
        self.channels = channels
        self.source_channels = channels_of(source)
        if channels is not None and self.source_channels != channels and self.source_channels != 1:
            raise ValueError(f"cannot feed {self.source_channels}-channel images to a {channels}-channel extractor")

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> torch.Tensor:
        image = torch.from_numpy(np.ascontiguousarray(uint8_batch(self.source, [i])[0]))
        if self.channels is not None and image.shape[0] != self.channels:
            image = image.expand(self.channels, -1, -1).contiguous()
        return image
