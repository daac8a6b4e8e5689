"""Held-out evaluation of a trained multi-β VAE across levels t (β).

:func:`evaluate_levels` gives, at each level of a t grid, the KL per latent dimension
(analytic, from μ_t and σ_t) and the reconstruction error of the decoded posterior mean μ_t
and of a posterior sample z_t = μ_t + σ_t ε. The method requires KL to fall and
reconstruction error to rise with β; the plots of :mod:`multibeta.vae.plots` show both.
:func:`prior_gap` measures how far the aggregate posterior at t = 1 is from N(0, I).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, Literal, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from multibeta.core.schedules import sigma_rms
from multibeta.data.h5io import spread_positions
from multibeta.models.vae import MultiBetaVAE
from multibeta.utils.device import eval_mode
from multibeta.vae.losses import kl_per_dim
from multibeta.data.sources import ImageSource
from multibeta.vae.trainer import as_source

RecMetric = Literal["bce", "mse"]


def rec_metric_for(reconstruction: str) -> RecMetric:
    """The held-out reconstruction error reported for a ``vae.reconstruction`` choice."""
    return "bce" if reconstruction == "bce" else "mse"


def level_grid(model: MultiBetaVAE, levels: int) -> np.ndarray:
    """Evenly spaced t ``[levels]`` in [0, 1]; a fixed-β model has only its own t ``[1]``."""
    if model.fixed_t is not None:
        return np.array([model.fixed_t])
    return np.linspace(0.0, 1.0, levels)


@dataclass
class LevelEvaluation:
    """Per-level results on held-out images (K levels, d latent dims).

    Attributes:
        t, beta, sigma: ``[K]`` (sigma: the RMS over dimensions of a per-dimension schedule, :func:`sigma_rms`).
        kl_per_dim: ``[K, d]`` mean KL(q(z_t|x) || N(0, 1)) per dimension (nats).
        kl: ``[K]`` summed over dimensions.
        rec_mean: ``[K]`` reconstruction error decoding μ_t (per image; ``bce`` in nats summed
            over pixels, ``mse`` per pixel in [0, 1] units).
        rec_sample: ``[K]`` the same decoding one sample z_t ~ q(z_t | x).
        mse_mean: ``[K]`` per-pixel MSE decoding μ_t (always reported).
        metric: ``bce`` or ``mse``.
        num_images: N.
    """

    t: np.ndarray
    beta: np.ndarray
    sigma: np.ndarray
    kl_per_dim: np.ndarray
    kl: np.ndarray
    rec_mean: np.ndarray
    rec_sample: np.ndarray
    mse_mean: np.ndarray
    metric: str
    num_images: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (arrays as lists)."""
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}


def _rec_error(logits: torch.Tensor, x: torch.Tensor, metric: RecMetric) -> torch.Tensor:
    if metric == "bce":
        return F.binary_cross_entropy_with_logits(logits.float(), x, reduction="none").flatten(1).sum(1)
    return (torch.sigmoid(logits.float()) - x).square().flatten(1).mean(1)


def _batches(source: ImageSource, num_images: int | None, batch_size: int):
    positions = np.arange(len(source)) if num_images is None else spread_positions(len(source), num_images)
    for start in range(0, len(positions), batch_size):
        yield source.batch(positions[start:start + batch_size])


@torch.no_grad()
def evaluate_levels(
    model: MultiBetaVAE,
    images: torch.Tensor | ImageSource | str | os.PathLike,
    t_levels: Sequence[float] | np.ndarray,
    *,
    metric: RecMetric,
    device: torch.device | str = "cpu",
    batch_size: int = 250,
    num_images: int | None = None,
    generator: torch.Generator | None = None,
) -> LevelEvaluation:
    """KL per dimension and reconstruction error at each level, on held-out images.

    Args:
        model: the trained VAE (on ``device``).
        images: images ``[N, C, S, S]`` (float in [0, 1] or uint8), a source, or a dataset
            path (its ``validation`` split).
        t_levels: levels ``[K]``.
        metric: ``bce`` or ``mse`` (see :func:`rec_metric_for`).
        num_images: N images evenly spread over the source (None: all; see ``spread_positions``).
        generator: CPU generator of the posterior samples (default: seed 0).
    """
    source = as_source(images, split="validation")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    t_arr = np.asarray(t_levels, dtype=np.float64)
    k, d = len(t_arr), model.latent_dim
    kl_sum = np.zeros((k, d))
    rec_mean, rec_sample, mse_mean = np.zeros(k), np.zeros(k), np.zeros(k)
    n_total = 0
    with eval_mode(model):
        for x in _batches(source, num_images, batch_size):
            x = x.to(device)
            n = x.shape[0]
            for i, tv in enumerate(t_arr):
                t = torch.full((n,), float(tv), device=device)
                mu = model.encode(x, t).float()
                sigma = model.posterior_sigma(t)
                kl_sum[i] += kl_per_dim(mu, sigma).sum(0).double().cpu().numpy()
                logits = model.decode(mu, t)
                rec_mean[i] += float(_rec_error(logits, x, metric).sum())
                mse_mean[i] += float(_rec_error(logits, x, "mse").sum())
                eps = torch.randn(n, d, generator=gen).to(device)
                logits_s = model.decode(mu + sigma * eps, t)
                rec_sample[i] += float(_rec_error(logits_s, x, metric).sum())
            n_total += n
    tt = torch.as_tensor(t_arr, dtype=torch.float32, device=device)
    with torch.no_grad():
        beta = model.beta(tt).double().cpu().numpy()
        sigma_k = sigma_rms(model.posterior_sigma(tt)).double().cpu().numpy()
    kld = kl_sum / n_total
    return LevelEvaluation(
        t=t_arr, beta=beta, sigma=sigma_k, kl_per_dim=kld, kl=kld.sum(1),
        rec_mean=rec_mean / n_total, rec_sample=rec_sample / n_total, mse_mean=mse_mean / n_total,
        metric=metric, num_images=n_total,
    )


@torch.no_grad()
def reconstructions(model: MultiBetaVAE, images: torch.Tensor, t_levels: Sequence[float] | np.ndarray,
                    *, device: torch.device | str = "cpu") -> torch.Tensor:
    """Decoded posterior means ``[K, n, C, S, S]`` in [0, 1] of ``images`` ``[n, C, S, S]``."""
    x = images.float().to(device)
    if images.dtype == torch.uint8:
        x = x / 255.0
    out = []
    with eval_mode(model):
        for tv in t_levels:
            t = torch.full((x.shape[0],), float(tv), device=device)
            out.append(model.decode_image(model.encode(x, t), t).cpu())
    return torch.stack(out)


@torch.no_grad()
def prior_gap(
    model: MultiBetaVAE,
    images: torch.Tensor | ImageSource | str | os.PathLike,
    *,
    t: float = 1.0,
    device: torch.device | str = "cpu",
    batch_size: int = 250,
    num_images: int | None = None,
) -> dict[str, float]:
    """Distance of the aggregate posterior at level ``t`` from the prior N(0, I).

    The aggregate posterior (a mixture of N(μ_t(x), σ_t² I)) is moment-matched by
    N(m, C + σ_t² I) with m, C the mean and covariance of μ_t over the images; returns its
    KL to N(0, I) (nats), ‖m‖, the mean per-dimension variance and σ_t.
    """
    source = as_source(images, split="validation")
    mus = []
    with eval_mode(model):
        for x in _batches(source, num_images, batch_size):
            tt = torch.full((x.shape[0],), t, device=device)
            mus.append(model.encode(x.to(device), tt).double().cpu())
        sigma_j = model.posterior_sigma(torch.tensor([t], device=device)).reshape(-1).double().cpu()
    mu = torch.cat(mus)
    m = mu.mean(0)
    d = mu.shape[1]
    cov = torch.cov(mu.T).reshape(d, d) if mu.shape[0] > 1 else torch.zeros(d, d, dtype=mu.dtype)
    cov = cov + torch.diag(sigma_j.expand(d) ** 2)
    sigma = float(sigma_rms(sigma_j))
    kl = 0.5 * (torch.trace(cov) + m @ m - d - torch.logdet(cov))
    return {"t": t, "sigma": sigma, "gaussian_kl_to_prior": float(kl), "mean_norm": float(m.norm()),
            "mean_variance": float(torch.diagonal(cov).mean()), "num_images": int(mu.shape[0])}
