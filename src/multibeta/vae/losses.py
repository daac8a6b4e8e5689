"""Loss terms of the multi-β VAE.

Per example (each with its own level t):

    loss = w_vae(t) · [ rec(x, D(z_t, t)) + β(t) · KL(N(μ_t, σ_t² I) || N(0, I)) ],
    z_t = μ_t(x) + σ_t ε.

- ``rec`` (``vae.reconstruction``): ``bce`` = Bernoulli NLL summed over pixels (nats per
  image; binary data such as dSprites); ``l1_lpips`` = Σ_pixels |x − x̂| + λ_LPIPS · C·H·W ·
  LPIPS(x, x̂) (the perceptual distance spread over every pixel, as in the latent-diffusion
  autoencoders), optionally plus a patch-GAN term added by the trainer.
- KL is summed over latent dimensions (nats); per-dimension values are returned as well.
- ``w_vae`` (``vae.loss_weighting``): ``none`` = 1, ``inv_beta`` = 1/β(t),
  ``normalized`` = 1/(1 + β(t)); each rescaled to mean 1 under t ~ U[0, 1] so that the
  loss scale (and hence ``grad_clip`` and the learning rate) means the same for all of them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from multibeta.core.schedules import sigma_rms
from multibeta.models.vae import MultiBetaVAE
from multibeta.vae.config import VAEConfig

logger = logging.getLogger(__name__)

#: w_vae as a function of β (numpy arrays or tensors), before normalisation.
LOSS_WEIGHTINGS: dict[str, Callable[[Any], Any]] = {
    "none": lambda beta: beta * 0.0 + 1.0,
    "inv_beta": lambda beta: 1.0 / beta,
    "normalized": lambda beta: 1.0 / (1.0 + beta),
}


class LossWeighting:
    """w_vae(β), rescaled to mean 1 over t ~ U[0, 1] (computed once, float64).

    Args:
        name: a key of :data:`LOSS_WEIGHTINGS`.
        beta_min, beta_max: the model's β range.
    """

    def __init__(self, name: str, beta_min: float, beta_max: float) -> None:
        if name not in LOSS_WEIGHTINGS:
            raise ValueError(f"unknown vae.loss_weighting {name!r}; choose one of "
                             f"{sorted(LOSS_WEIGHTINGS)}")
        self.name = name
        self._fn = LOSS_WEIGHTINGS[name]
        t = np.linspace(0.0, 1.0, 4097)
        w = self._fn(beta_min * (beta_max / beta_min) ** t)
        self.norm = float(np.trapezoid(w, t) if hasattr(np, "trapezoid") else np.trapz(w, t))

    def __call__(self, beta: torch.Tensor) -> torch.Tensor:
        """Weights ``[N]`` for β ``[N]`` (float32)."""
        return (self._fn(beta.double()) / self.norm).float()


def kl_per_dim(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) || N(0, 1)) per dimension ``[N, d]`` (nats) for μ ``[N, d]``.

    ``sigma``: ``[N]``/``[1]`` (one σ per row), or ``[N or 1, 1]``/``[N or 1, d]`` as
    :meth:`MultiBetaVAE.posterior_sigma` returns it.
    """
    mu = mu.float()
    s = sigma.float()
    if s.ndim == 1:
        s = s[:, None]
    return 0.5 * (mu.square() + s.square() - 1.0) - torch.log(s)


def bce_reconstruction(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Bernoulli NLL summed over pixels ``[N]`` (nats per image)."""
    nll = F.binary_cross_entropy_with_logits(logits.float(), x.float(), reduction="none")
    return nll.flatten(1).sum(1)


def l1_reconstruction(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Σ_pixels |x − sigmoid(logits)| ``[N]``."""
    return (torch.sigmoid(logits.float()) - x.float()).abs().flatten(1).sum(1)


class PatchDiscriminator(nn.Module):
    """Patch-GAN discriminator (pix2pix / taming-transformers ``NLayerDiscriminator``).

    Images ``[N, C, S, S]`` in [0, 1] -> patch logits ``[N, 1, h, w]``.
    """

    def __init__(self, image_channels: int, channels: int, layers: int) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(image_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = channels
        for n in range(1, layers + 1):
            out = channels * min(2**n, 8)
            stride = 2 if n < layers else 1
            mods += [nn.Conv2d(ch, out, 4, stride, 1, bias=False), nn.BatchNorm2d(out),
                     nn.LeakyReLU(0.2)]
            ch = out
        mods.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.net = nn.Sequential(*mods)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(2.0 * x - 1.0)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the discriminator (scalar)."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adaptive_gan_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                        max_weight: float = 1e4) -> torch.Tensor:
    """‖∇_last rec‖ / ‖∇_last gan‖ on the decoder's last layer (taming-transformers), detached."""
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_gan = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = g_rec.norm() / (g_gan.norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()


@dataclass
class LossTerms:
    """Terms of one batch. ``loss`` is the scalar to minimise; the rest are per example."""

    loss: torch.Tensor
    rec: torch.Tensor
    kl: torch.Tensor
    kl_per_dim: torch.Tensor
    weight: torch.Tensor
    beta: torch.Tensor
    sigma: torch.Tensor
    logits: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)

    def weighted_rec(self) -> torch.Tensor:
        """mean(w · rec): the reconstruction part of ``loss`` (scalar)."""
        return (self.weight * self.rec).mean()


class VAEObjective(nn.Module):
    """The per-example VAE loss for a model and a config (GAN term excluded: see trainer).

    Args:
        model: the VAE.
        cfg: the ``vae`` config (reconstruction, weighting, LPIPS settings).
    """

    def __init__(self, model: MultiBetaVAE, cfg: VAEConfig) -> None:
        super().__init__()
        self.reconstruction = cfg.reconstruction
        name = "none" if model.fixed_beta is not None else cfg.loss_weighting
        self.weighting = LossWeighting(name, model.beta_min, model.beta_max)
        self.lpips_weight = cfg.lpips.weight if cfg.reconstruction == "l1_lpips" else 0.0
        self.lpips = None
        if self.lpips_weight > 0:
            from multibeta.models.lpips import load_lpips  # lpips is imported on use

            # training never downloads: a missing file is one clear error naming the key
            self.lpips = load_lpips(cfg.lpips.weights_path, allow_download=False,
                                    config_key="vae.lpips.weights_path")

    def rec(self, logits: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Reconstruction loss ``[N]`` and its parts (``l1``, ``lpips``) ``[N]``."""
        if self.reconstruction == "bce":
            return bce_reconstruction(logits, x), {}
        l1 = l1_reconstruction(logits, x)
        parts = {"l1": l1}
        if self.lpips is None:
            return l1, parts
        x_hat = torch.sigmoid(logits.float())
        a, b = x.float(), x_hat
        if a.shape[1] == 1:
            a, b = a.expand(-1, 3, -1, -1), b.expand(-1, 3, -1, -1)
        dist = self.lpips(a, b, normalize=True).flatten(1).mean(1)
        parts["lpips"] = dist
        return l1 + self.lpips_weight * dist * float(math.prod(x.shape[1:])), parts

    def forward(self, model: MultiBetaVAE, x: torch.Tensor, t: torch.Tensor, eps: torch.Tensor
                ) -> LossTerms:
        """Loss of images ``x`` ``[N, C, S, S]`` at levels ``t`` ``[N]`` (or ``[1]``).

        ``eps`` ``[N, d]`` is the standard normal noise of z_t = μ_t + σ_t ε.
        """
        mu, sigma, logits = model(x, t, eps)
        beta = model.beta(t)
        kld = kl_per_dim(mu, sigma)
        kl = kld.sum(1)
        rec, parts = self.rec(logits, x)
        weight = self.weighting(beta).expand_as(rec)
        loss = (weight * (rec + beta * kl)).mean()
        return LossTerms(loss=loss, rec=rec, kl=kl, kl_per_dim=kld, weight=weight,
                         beta=beta.expand_as(rec), sigma=sigma_rms(sigma).expand_as(rec), logits=logits,
                         parts=parts)
