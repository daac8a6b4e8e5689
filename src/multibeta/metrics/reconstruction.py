"""Reconstruction error: MSE, PSNR and LPIPS between images and their reconstructions.

- MSE: mean squared error per pixel and channel, images in [0, 1], averaged over images.
- PSNR: ``10 log10(1 / MSE_n)`` per image (peak value 1), averaged over images; an exact
  reconstruction is capped at :data:`PSNR_CAP_DB`.
- LPIPS: Zhang, Isola, Efros, Shechtman & Wang, "The Unreasonable Effectiveness of Deep
  Features as a Perceptual Metric", CVPR 2018, via the ``lpips`` package (v0.1, AlexNet
  backbone, the package's own linear heads). The AlexNet backbone weights come from
  ``metrics.lpips_weights`` (torchvision's ``alexnet-owt-7be5be79.pth``) or torch.hub's
  cache; see :mod:`multibeta.models.lpips` and :mod:`multibeta.models.pretrained`. 1-channel images are repeated to 3 channels.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from multibeta.metrics.utils import Timer
from multibeta.utils.device import Runtime

logger = logging.getLogger(__name__)

#: PSNR of an exact reconstruction (MSE 0), in dB; MSE is floored at 10^(-cap/10).
PSNR_CAP_DB = 100.0


def _as_float_images(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (0..255) or float ([0, 1]) images [N, C, H, W] -> float32 tensor in [0, 1]."""
    t = torch.as_tensor(x)
    if t.ndim != 4:
        raise ValueError(f"images must be [N, C, H, W], got shape {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        return t.to(torch.float32) / 255.0
    return t.to(torch.float32)


@torch.no_grad()
def _reconstruction(
    x: torch.Tensor, x_hat: torch.Tensor, lpips_model: torch.nn.Module | None, batch_size: int, device: torch.device,
) -> dict[str, float]:
    """MSE, PSNR (and LPIPS) of float images in [0, 1], both [N, C, H, W]."""
    mse_n = ((x - x_hat) ** 2).flatten(1).mean(dim=1).double()
    floor = 10.0 ** (-PSNR_CAP_DB / 10.0)
    psnr_n = 10.0 * torch.log10(1.0 / mse_n.clamp_min(floor))
    out = {"mse": float(mse_n.mean()), "psnr": float(psnr_n.mean())}
    if lpips_model is not None:
        vals = []
        for s in range(0, len(x), batch_size):
            a = x[s:s + batch_size].to(device)
            b = x_hat[s:s + batch_size].to(device)
            if a.shape[1] == 1:
                a, b = a.repeat(1, 3, 1, 1), b.repeat(1, 3, 1, 1)
            vals.append(lpips_model(a, b, normalize=True).flatten().double().cpu())
        out["lpips"] = float(torch.cat(vals).mean())
    return out


def compute_reconstruction(
    images: np.ndarray | torch.Tensor,
    reconstructions: np.ndarray | torch.Tensor,
    *,
    lpips_model: torch.nn.Module | None = None,
    batch_size: int = 100,
    runtime: Runtime | None = None,
) -> dict[str, float]:
    """Reconstruction error of one level.

    Args:
        images: originals [N, C, H, W], uint8 0..255 or float in [0, 1].
        reconstructions: same shape (e.g. ``decode_image``'s [0, 1] output).
        lpips_model: from :func:`load_lpips`; None skips LPIPS.
        batch_size: images per LPIPS batch.
        runtime: device for LPIPS (CPU when None).

    Returns:
        ``mse``, ``psnr`` (dB), ``lpips`` (when a model is given), ``n_images``, ``elapsed_s``.
    """
    timer = Timer()
    x, x_hat = _as_float_images(images), _as_float_images(reconstructions)
    if x.shape != x_hat.shape:
        raise ValueError(f"images {tuple(x.shape)} and reconstructions {tuple(x_hat.shape)} differ in shape")
    if float(x_hat.min()) < -1e-6 or float(x_hat.max()) > 1 + 1e-6:
        raise ValueError("reconstructions must be in [0, 1] (decode_image output), not logits")
    device = runtime.device if runtime is not None else torch.device("cpu")
    out = _reconstruction(x, x_hat, lpips_model, batch_size, device)
    out["n_images"] = len(x)
    return timer.finish(out, None)


def wants_lpips(mode: str, channels: int) -> bool:
    """Whether ``metrics.reconstruction.lpips`` asks for LPIPS on images with ``channels`` channels."""
    if mode not in ("auto", "always", "never"):
        raise ValueError(f"metrics.reconstruction.lpips must be auto, always or never, not {mode!r}")
    return mode == "always" or (mode == "auto" and channels == 3)
