"""Reconstruction error: MSE, PSNR and LPIPS between images and their reconstructions.

- MSE: mean squared error per pixel and channel, images in [0, 1], averaged over images.
- PSNR: ``10 log10(1 / MSE_n)`` per image (peak value 1), averaged over images; an exact
  reconstruction is capped at :data:`PSNR_CAP_DB`.
- LPIPS: Zhang, Isola, Efros, Shechtman & Wang, "The Unreasonable Effectiveness of Deep
  Features as a Perceptual Metric", CVPR 2018, via the ``lpips`` package (v0.1, AlexNet
  backbone, the package's own linear heads). The AlexNet backbone weights come from
  ``metrics.lpips_weights`` (torchvision's ``alexnet-owt-7be5be79.pth``) or torch.hub's
  cache; see :mod:`multibeta.metrics.fetch`. 1-channel images are repeated to 3 channels.
"""

from __future__ import annotations

import logging
import os
import warnings

import numpy as np
import torch

from multibeta.metrics.fetch import WeightsError, resolve_weights
from multibeta.metrics.utils import Timer
from multibeta.utils.device import Runtime
from multibeta.utils.io import file_sha256

logger = logging.getLogger(__name__)

#: PSNR of an exact reconstruction (MSE 0), in dB; MSE is floored at 10^(-cap/10).
PSNR_CAP_DB = 100.0
#: lpips package options: version of the linear heads and backbone.
LPIPS_VERSION = "0.1"
LPIPS_NET = "alex"
#: Which torchvision AlexNet ``features`` modules make up each lpips slice (lpips.pretrained_networks.alexnet).
_ALEX_SLICES = {1: range(0, 2), 2: range(2, 5), 3: range(5, 8), 4: range(8, 10), 5: range(10, 12)}


def _as_float_images(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (0..255) or float ([0, 1]) images [N, C, H, W] -> float32 tensor in [0, 1]."""
    t = torch.as_tensor(x)
    if t.ndim != 4:
        raise ValueError(f"images must be [N, C, H, W], got shape {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        return t.to(torch.float32) / 255.0
    return t.to(torch.float32)


def load_lpips(
    weights_path: str | os.PathLike | None,
    device: torch.device | str = "cpu",
    *,
    timeout_s: float = 60.0,
    allow_download: bool = True,
    config_key: str = "metrics.lpips_weights",
) -> torch.nn.Module:
    """An ``lpips.LPIPS(net="alex")`` model (frozen, eval mode) whose AlexNet backbone is read
    from a local file. Used by the reconstruction metric and by the VAE's LPIPS loss.

    Args:
        weights_path: torchvision's ``alexnet-owt-7be5be79.pth`` (or any file with its
            ``features.*`` entries); None uses torch.hub's cached copy (downloaded when missing
            and allowed).
        device: where to put the model.
        timeout_s, allow_download: see :func:`multibeta.metrics.fetch.resolve_weights`.
        config_key: the config key named in errors (``metrics.lpips_weights``,
            ``vae.lpips.weights_path``).

    Raises:
        WeightsError: the backbone file is missing (naming ``config_key``) or is not an AlexNet
            state dict.
    """
    import lpips  # deferred: importing lpips pulls in torchvision models

    path = resolve_weights("lpips_alexnet", weights_path, timeout_s=timeout_s,
                           allow_download=allow_download, config_key=config_key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation of `pretrained=`
        model = lpips.LPIPS(net=LPIPS_NET, version=LPIPS_VERSION, pnet_rand=True, verbose=False)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        for k, modules in _ALEX_SLICES.items():
            sl = getattr(model.net, f"slice{k}")
            for x in modules:
                sub = {n.split(".", 2)[2]: v for n, v in state.items() if n.startswith(f"features.{x}.")}
                sl._modules[str(x)].load_state_dict(sub, strict=True)
    except Exception as exc:  # unreadable file, wrong keys or shapes
        raise WeightsError(
            f"{path} ({config_key}) is not torchvision's AlexNet IMAGENET1K_V1 state dict "
            f"({type(exc).__name__}: {exc}). Rerun rule fetch_weights or fix the path."
        ) from exc
    model.eval().requires_grad_(False)
    model.weights_sha256 = file_sha256(path)  # recorded with results
    logger.info("LPIPS: AlexNet backbone loaded from %s", path)
    return model.to(device)


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
