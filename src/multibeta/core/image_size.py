"""Image sizes (``data.image_size``) and the VAE conv stack that follows from them.

Plain arithmetic without torch, so that reading a config (which fills ``vae.arch.channels``
from ``data.image_size``) stays cheap.
"""

from __future__ import annotations

#: The default ``data.image_size``, and the side of every model and dataset written before other
#: sizes existed.
IMAGE_SIZE = 64
#: Every allowed ``data.image_size``.
IMAGE_SIZES: tuple[int, ...] = (32, 64, 128, 256)
#: ``vae.arch.channels`` at 64x64 (4 stride-2 levels down to 4x4); :func:`default_channels` adds
#: (removes) one level of the first width per factor of 2 above (below) 64.
DEFAULT_CHANNELS_64: tuple[int, ...] = (32, 32, 64, 64)


def default_channels(image_size: int) -> tuple[int, ...]:
    """The default ``vae.arch.channels`` for images of side ``image_size``: a stride-2 level per
    factor of 2 down to 4x4, i.e. :data:`DEFAULT_CHANNELS_64` at 64 (exactly today's default),
    (32, 64, 64) at 32, one more level of 32 channels at the front per doubling above 64.

    Raises:
        ValueError: ``image_size`` not a power of 2 of at least 8.
    """
    levels = int(image_size).bit_length() - 1 - 2  # log2(S / 4)
    if image_size < 8 or image_size & (image_size - 1):
        raise ValueError(f"image_size must be a power of 2 of at least 8, got {image_size}")
    extra = levels - len(DEFAULT_CHANNELS_64)
    if extra >= 0:
        return (DEFAULT_CHANNELS_64[0],) * extra + DEFAULT_CHANNELS_64
    return DEFAULT_CHANNELS_64[-extra:]


def check_levels(channels: tuple[int, ...], image_size: int) -> None:
    """Refuse a conv stack that does not fit the image side (``image_size / 2^L`` must be >= 1).

    Raises:
        ValueError: naming ``vae.arch.channels`` and ``data.image_size``.
    """
    most = int(image_size).bit_length() - 1
    if not 1 <= len(channels) <= most or image_size % (2 ** len(channels)):
        raise ValueError(f"vae.arch.channels has {len(channels)} levels; {image_size}x{image_size} images "
                         f"(data.image_size) allow 1 to {most} stride-2 levels ({image_size} -> "
                         f"{image_size} / 2^L). Give fewer widths, or null for the default {list(default_channels(image_size))}.")


def patch_gan_fits(image_size: int, disc_layers: int) -> bool:
    """Whether a patch discriminator of ``disc_layers`` strided layers still has patches on
    ``image_size`` images (``image_size / 2^disc_layers >= 4``; 3 layers at most at 32)."""
    return int(image_size) >> int(disc_layers) >= 4
