"""Load what the sampling rules need: the VAE, a denoiser trained on that VAE's latents, σ_t."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch

from multibeta.core.schedules import SigmaTable
from multibeta.models.loading import check_denoiser_vae, load_denoiser
from multibeta.models.vae import load_vae
from multibeta.utils.io import file_sha256

logger = logging.getLogger(__name__)


@dataclass
class SamplingModels:
    """The VAE (encoder/decoder), the EMA denoiser and the σ_t table it was trained with."""

    vae: torch.nn.Module
    denoiser: torch.nn.Module
    sigma: SigmaTable | None
    denoiser_checkpoint: dict[str, Any]

    def decoder(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``D(z [N, d], t [N]) -> images [N, C, H, W]`` in [0, 1]."""
        return self.vae.decode_image(z, t)

    def encoder(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``E(x [N, C, H, W], t [N]) -> μ_t [N, d]``."""
        return self.vae.encode(x, t)


def load_sampling_models(
    vae_path: str | os.PathLike, diffusion_path: str | os.PathLike, device: torch.device
) -> SamplingModels:
    """Load both models and refuse a denoiser trained on the latents of another VAE checkpoint."""
    vae, _ = load_vae(vae_path, map_location=device)
    vae.eval().requires_grad_(False)
    denoiser, checkpoint = load_denoiser(diffusion_path, map_location=device)
    check_denoiser_vae(checkpoint, file_sha256(vae_path))
    sigma = getattr(denoiser, "sigma_table", None)
    logger.info(
        "loaded VAE %s and %s denoiser %s", vae_path, checkpoint.get("variant"), diffusion_path
    )
    return SamplingModels(vae=vae, denoiser=denoiser, sigma=sigma, denoiser_checkpoint=checkpoint)
