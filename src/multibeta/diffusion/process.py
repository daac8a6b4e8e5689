"""Forward processes, t sampling, loss weighting and the training loss of Stage 2.

Two forward processes share one interface (:meth:`training_batch`):

- :class:`MultiBetaProcess` (variants ``multibeta`` and ``noise_only``): the encoder-induced,
  non-linear process z_t = μ_t(x) + σ_t ε, with μ_t(x) linearly interpolated between the
  cached levels, Δ_t(x) = dμ_t/dt from the cache, and σ_t from the VAE's tabulated schedule
  (σ_t ⊙ ε with σ_t ``[d]`` for a per-dimension schedule, ``vae.sigma_stagger``).
- :class:`CosineProcess` (``standard_ldm``): z_t = sqrt(ᾱ_t) ẑ_0 + sqrt(1 − ᾱ_t) ε on the
  normalised t=0 latents ẑ_0 = (μ_0 − mean)/std, with the cosine ᾱ of Nichol & Dhariwal.

Signal-to-noise ratio (our definition for the weighting): snr(t) = v̄(t)/σ_t², where
v̄(t) is the variance of μ_t(x) over the training items, averaged over the d dimensions
(per level from the cache, linearly interpolated). It is the α²/σ² of a standard diffusion
once the data are normalised to unit variance, and for ``standard_ldm`` it is exactly
ᾱ/(1 − ᾱ) (normalised latents, v̄ = 1).

Weighting w(t) of the loss (:data:`WEIGHTINGS`):

- ``uniform``: w = 1 (the DDPM "simple" ε loss);
- ``snr``: w = min(snr, snr_max) — the ε loss weighted into a loss on the denoised mean,
  truncated so that σ_t → 0 stays finite;
- ``min_snr``: w = min(snr, γ)/snr — Min-SNR-γ for ε prediction (Hang et al. 2023, ICCV).

Loss per example: w(t) · ( ‖ε − ε̂‖²/d + λ_Δ · ‖(Δ − Δ̂)/s‖²/d ), where s ``[d]`` is the
per-dimension RMS of Δ over the cache (:attr:`LatentDenoiser.delta_scale`), so the Δ term
is O(1) whatever the magnitude of dμ/dt; with ``diffusion.delta_scale: per_level`` s = s(t)
is the RMS of Δ at that level (:meth:`LatentDenoiser.delta_scale_at`), so the term is O(1) at
every t, also where μ_t barely moves.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from multibeta.core.interpolation import segment
from multibeta.cache.latent_cache import LatentCache
from multibeta.core.schedules import cosine_alpha_bar

logger = logging.getLogger(__name__)

TSampling = Literal["uniform", "stratified"]
Weighting = Literal["uniform", "snr", "min_snr"]


# --------------------------------------------------------------------------------------
# t sampling and weighting
# --------------------------------------------------------------------------------------


def sample_t(
    batch_size: int, method: TSampling, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Times ``[B]`` in [0, 1).

    ``uniform``: i.i.d. U[0, 1). ``stratified``: the low-discrepancy sampler of VDM
    (Kingma et al. 2021), t_i = (u + i/B) mod 1 with one u ~ U[0, 1): one t per stratum
    of width 1/B, lower-variance loss estimates, same marginal.
    """
    if method == "uniform":
        return torch.rand(batch_size, generator=generator, device=device)
    if method == "stratified":
        u = torch.rand(1, generator=generator, device=device)
        return torch.remainder(u + torch.arange(batch_size, device=device) / batch_size, 1.0)
    raise ValueError(f"unknown diffusion.t_sampling {method!r}; use uniform or stratified")


@dataclass(frozen=True)
class WeightingParams:
    """Parameters of the weightings: γ of min_snr and the cap of snr."""

    min_snr_gamma: float
    snr_max: float


def _uniform(snr: torch.Tensor, p: WeightingParams) -> torch.Tensor:
    return torch.ones_like(snr)


def _snr(snr: torch.Tensor, p: WeightingParams) -> torch.Tensor:
    return snr.clamp(max=p.snr_max)


def _min_snr(snr: torch.Tensor, p: WeightingParams) -> torch.Tensor:
    return torch.where(
        snr > p.min_snr_gamma, p.min_snr_gamma / snr.clamp_min(1e-30), torch.ones_like(snr)
    )


WEIGHTINGS: dict[str, Callable[[torch.Tensor, WeightingParams], torch.Tensor]] = {
    "uniform": _uniform,
    "snr": _snr,
    "min_snr": _min_snr,
}


def get_weighting(name: str) -> Callable[[torch.Tensor, WeightingParams], torch.Tensor]:
    """The weighting function ``(snr [B], params) -> w [B]`` called ``name``."""
    if name not in WEIGHTINGS:
        raise ValueError(
            f"unknown diffusion.weighting {name!r}; choose one of {', '.join(WEIGHTINGS)}"
        )
    return WEIGHTINGS[name]


# --------------------------------------------------------------------------------------
# forward processes
# --------------------------------------------------------------------------------------


@dataclass
class Batch:
    """One training batch. Shapes: z_t, eps, delta ``[B, d]``; t, weight ``[B]``."""

    z_t: torch.Tensor
    t: torch.Tensor
    eps: torch.Tensor
    weight: torch.Tensor
    delta: torch.Tensor | None = None


class MultiBetaProcess:
    """z_t = μ_t(x) + σ_t ε with μ_t, Δ_t from the latent cache (``multibeta``, ``noise_only``).

    Args:
        cache: the latent cache (its tensors on the training device when in memory).
        signal_var: ``[K]`` v̄ at the cache levels (mean over dims of Var_x μ_{t_k}).
        weighting: name in :data:`WEIGHTINGS`; params: its parameters.
        with_delta: also return the Δ targets (``multibeta``).
    """

    def __init__(
        self,
        cache: LatentCache,
        *,
        signal_var: np.ndarray,
        weighting: Weighting,
        params: WeightingParams,
        with_delta: bool,
    ) -> None:
        self.cache = cache
        self.device = cache.device
        self.sigma_table = cache.sigma_table().to(self.device)
        self.level_t = torch.as_tensor(cache.t, device=self.device)
        self.signal_var = torch.as_tensor(
            np.asarray(signal_var, dtype=np.float64), device=self.device
        )
        self.weight_fn = get_weighting(weighting)
        self.params = params
        self.with_delta = with_delta

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """σ_t ``[B]`` (``[B, d]`` for a per-dimension schedule)."""
        return self.sigma_table(t)

    def q_sample(self, mu_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """z_t = μ_t + σ_t ε: ``[B, d]``."""
        return mu_t + self.sigma_table.columns(t).to(mu_t.dtype) * eps

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """snr(t) = v̄(t)/σ̄_t² ``[B]`` (float32; inf where σ_t = 0); σ̄_t = σ_t, or the RMS over
        dimensions of a per-dimension schedule."""
        k, w = segment(self.level_t, t)
        v = (1 - w) * self.signal_var[k] + w * self.signal_var[k + 1]
        return (v / self.sigma_table.rms(t.double()) ** 2).float()

    def training_batch(self, idx: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> Batch:
        """Noised latents and targets of cache rows ``idx [B]`` at times ``t [B]`` with noise ``eps [B, d]``."""
        if self.with_delta:
            mu_t, delta = self.cache.mu_and_delta_at(idx, t)
        else:
            mu_t, delta = self.cache.mu_at(idx, t), None
        weight = self.weight_fn(self.snr(t), self.params)
        return Batch(z_t=self.q_sample(mu_t, t, eps), t=t, eps=eps, weight=weight, delta=delta)


class CosineProcess:
    """z_t = sqrt(ᾱ_t) ẑ_0 + sqrt(1 − ᾱ_t) ε on normalised t=0 latents (``standard_ldm``).

    Args:
        z0: ``[N, d]`` normalised t=0 latents of all cache rows, on the training device.
        weighting, params: as for :class:`MultiBetaProcess`.
    """

    def __init__(self, z0: torch.Tensor, *, weighting: Weighting, params: WeightingParams) -> None:
        self.z0 = z0
        self.weight_fn = get_weighting(weighting)
        self.params = params

    def q_sample(self, z0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """z_t ``[B, d]``."""
        ab = cosine_alpha_bar(t)[:, None].to(z0.dtype)
        return ab.sqrt() * z0 + (1 - ab).sqrt() * eps

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """ᾱ/(1 − ᾱ) ``[B]``."""
        ab = cosine_alpha_bar(t.double())
        return (ab / (1 - ab)).float()

    def training_batch(self, idx: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> Batch:
        """As :meth:`MultiBetaProcess.training_batch` (no Δ targets)."""
        z0 = self.z0[idx]
        weight = self.weight_fn(self.snr(t), self.params)
        return Batch(z_t=self.q_sample(z0, t, eps), t=t, eps=eps, weight=weight)


# --------------------------------------------------------------------------------------
# loss
# --------------------------------------------------------------------------------------


@dataclass
class LossTerms:
    """``total``: the weighted loss to minimise; ``eps``/``delta``: unweighted batch means (detached)."""

    total: torch.Tensor
    eps: torch.Tensor
    delta: torch.Tensor


def training_loss(
    model: torch.nn.Module,
    batch: Batch,
    *,
    lambda_delta: float,
    autocast: Callable[[], object] | None = None,
) -> LossTerms:
    """w(t)·(‖ε − ε̂‖²/d + λ_Δ‖(Δ − Δ̂)/s‖²/d), averaged over the batch (computed in fp32).

    A model whose ε head predicts v (``diffusion.prediction: v``) weighs the ε error per
    element by its ``eps_loss_weight(t)``, which makes the first term the v loss ‖v − v̂‖²/d.

    Args:
        model: the denoiser, ``(z, t) -> (eps_hat, delta_hat | None)``, Δ̂ in real units,
            with a ``delta_scale_at(t)`` method giving the scale s ``[B or 1, d]``.
        batch: from a process's ``training_batch``.
        lambda_delta: λ_Δ (ignored when the batch or the model has no Δ).
        autocast: context factory for the forward pass (``Runtime.autocast``).
    """
    ctx = autocast() if autocast is not None else contextlib.nullcontext()
    with ctx:  # type: ignore[attr-defined]
        eps_hat, delta_hat = model(batch.z_t, batch.t)
    sq = (eps_hat.float() - batch.eps).pow(2)
    weight = model.eps_loss_weight(batch.t) if hasattr(model, "eps_loss_weight") else None
    eps_err = (sq if weight is None else sq * weight).mean(dim=1)
    per_example = eps_err
    if batch.delta is not None and delta_hat is not None:
        scale = model.delta_scale_at(batch.t)
        delta_err = ((delta_hat.float() - batch.delta) / scale).pow(2).mean(dim=1)
        per_example = per_example + lambda_delta * delta_err
        delta_mean = delta_err.mean().detach()
    else:
        delta_mean = torch.zeros((), device=eps_err.device)
    total = (batch.weight * per_example).mean()
    return LossTerms(total=total, eps=eps_err.mean().detach(), delta=delta_mean)
