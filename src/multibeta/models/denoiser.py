"""The Stage-2 denoiser f_θ(z_t, t) -> (ε̂, Δ̂) for vector latents.

An MLP of residual blocks (LayerNorm → FiLM by the time embedding → SiLU → Linear → SiLU →
Linear, plus a skip projection of the input latent into every block, as Diff-AE's latent
DDIM), a sinusoidal embedding of t, and two heads: ε̂ (the noise) and Δ̂ (dμ_t/dt; only for
the ``multibeta`` variant).

Everything the sampler needs to use it in real units lives in buffers, filled by the trainer
from cache statistics and saved with the weights:

- ``input_scale`` at ``precond_t``: c_in(t) = 1/sqrt(v̄(t) + σ_t²), the input is z·c_in(t)
  (v̄ = mean over dims of the second moment of μ_t), so the first layer sees unit scale at
  every t; linearly interpolated in t.
- ``delta_scale`` ``[d]``: the Δ head predicts Δ/delta_scale; ``forward`` returns Δ̂ in real
  units (the training loss divides by the scale again). With ``delta_scale_points`` M > 0 the
  scale depends on t instead (``diffusion.delta_scale: per_level``, an option beyond the
  paper): ``delta_scale_t`` ``[M]`` and ``delta_scale_table`` ``[M, d]`` hold the RMS of Δ at
  M times (the midpoints of the cache's segments), linearly interpolated and constant beyond
  the ends (:meth:`delta_scale_at`), so the head's error is measured relative to how far μ_t
  moves at that level, as the ε head's is relative to unit noise.
- ``latent_mean``, ``latent_std`` ``[d]`` (``standard_ldm``): that variant works on normalised
  t=0 latents ẑ_0 = (μ_0 − mean)/std; :meth:`denormalize` maps a sample back.
- ``sigma_table`` (``multibeta``, ``noise_only``): the VAE's σ_t, so :meth:`sigma` needs no cache;
  ``[M, d]`` when the VAE's σ differs between dimensions (arch key ``per_dimension_sigma``), where
  c_in and λ(t) use the RMS over dimensions σ̄_t (:meth:`SigmaTable.rms`).

The network's time input (``time_input``): ``t`` itself, or ``logsnr``: the time u ∈ (0, 1) at
which the cosine schedule has the same log-SNR, u = (2/π)·atan(exp(−λ(t)/2)) with
λ(t) = log p(t) − 2 log σ_t (p = 1/c_in² − σ² is the signal power the input scale normalises
by), so that equal input steps mean equal changes of the noise level whatever the VAE's σ_t
(an option beyond the paper).

What the ε head's output F means (``prediction``): ``eps``, F = ε̂ itself (the paper); ``v``,
the v-target of Salimans & Ho, v = a·ε − b·m/sqrt(p) with a = sqrt(p/(p + σ²)), b = σ/sqrt(p + σ²)
(p the signal power, so a² + b² = 1): ε̂ = σ/(p + σ²)·z + a·F, the Gaussian (Wiener) estimate
of the noise plus the network's correction (EDM's preconditioning of the denoised mean written
for ε; an option beyond the paper). :meth:`eps_loss_weight` is 1/a², so the ε loss is the v loss
‖F − v‖². For ``standard_ldm`` (z = sqrt(ᾱ)·ẑ_0 + sqrt(1 − ᾱ)·ε, p = ᾱ) it is exactly
v-prediction. With a per-dimension σ, a and b are per dimension.

For every variant the forward process is z_t = α_t·m_t + σ_t·ε with
(α_t, σ_t) = (:meth:`alpha`, :meth:`sigma`): α_t = 1 and m_t = μ_t(x) for ``multibeta`` and
``noise_only``; α_t = sqrt(ᾱ_t), σ_t = sqrt(1 − ᾱ_t) (cosine schedule) and m_t = ẑ_0 for
``standard_ldm``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from multibeta.core.interpolation import interpolate_levels, segment
from multibeta.core.logsnr import LogSnrTable
from multibeta.core.schedules import SigmaTable, cosine_alpha_bar

Variant = Literal["multibeta", "noise_only", "standard_ldm"]
VARIANTS: tuple[str, ...] = ("multibeta", "noise_only", "standard_ldm")
TimeInput = Literal["t", "logsnr"]
TIME_INPUTS: tuple[str, ...] = ("t", "logsnr")
Prediction = Literal["eps", "v"]
PREDICTIONS: tuple[str, ...] = ("eps", "v")


def check_variant(variant: str) -> str:
    """Return ``variant`` or raise naming the known ones."""
    if variant not in VARIANTS:
        raise ValueError(
            f"unknown diffusion variant {variant!r}; choose one of {', '.join(VARIANTS)}"
        )
    return variant


def sinusoidal_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """Transformer/DDPM sinusoidal embedding of ``t [N]`` in [0, 1] -> ``[N, dim]`` (float32).

    t is multiplied by ``scale`` first (as DDPM's integer steps), frequencies are geometric
    from 1 to 1/10000.
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half
    )
    args = scale * t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class ResidualBlock(nn.Module):
    """h + MLP(FiLM(LayerNorm(h), emb)) + skip(z_in): ``[N, width]`` -> ``[N, width]``."""

    def __init__(self, *, width: int, emb_dim: int, latent_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.film = nn.Linear(emb_dim, 2 * width)
        self.fc1 = nn.Linear(width, width)
        self.skip = nn.Linear(latent_dim, width, bias=False)
        self.fc2 = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, h: torch.Tensor, emb: torch.Tensor, z_in: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(emb).chunk(2, dim=1)
        y = self.norm(h) * (1 + scale) + shift
        y = F.silu(self.fc1(F.silu(y)) + self.skip(z_in))
        return h + self.fc2(self.dropout(y))


class LatentDenoiser(nn.Module):
    """f_θ(z_t, t) -> (ε̂ ``[N, d]``, Δ̂ ``[N, d]`` in real units, or None).

    Args:
        latent_dim: d.
        width: hidden width of the MLP.
        depth: number of residual blocks.
        time_embed_dim: size of the sinusoidal t embedding (projected to ``width``).
        variant: ``multibeta`` (ε and Δ heads), ``noise_only`` or ``standard_ldm`` (ε head).
        dropout: dropout inside the blocks.
        num_precond: length of the c_in(t) table (the cache's K; 2 for standard_ldm).
        schedule_points: length of the σ_t table (0 for standard_ldm).
        time_input: what the time embedding sees, ``t`` or ``logsnr`` (module docstring).
        delta_scale_points: M, the length of the t-dependent Δ scale table; 0: one scale
            ``[d]`` for every t (module docstring).
        per_dimension_sigma: the σ_t table is ``[M, d]`` (``vae.sigma_stagger``).
        prediction: what the ε head outputs, ``eps`` or ``v`` (module docstring).
    """

    def __init__(
        self,
        *,
        latent_dim: int,
        width: int,
        depth: int,
        time_embed_dim: int,
        variant: Variant,
        dropout: float = 0.0,
        num_precond: int = 2,
        schedule_points: int = 0,
        time_input: TimeInput = "t",
        delta_scale_points: int = 0,
        per_dimension_sigma: bool = False,
        prediction: Prediction = "eps",
    ) -> None:
        super().__init__()
        self.variant = check_variant(variant)
        if time_input not in TIME_INPUTS:
            raise ValueError(f"unknown time_input {time_input!r}; choose one of {', '.join(TIME_INPUTS)}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; choose one of {', '.join(PREDICTIONS)}")
        self.time_input = time_input
        self.prediction = prediction
        self._arch = dict(
            latent_dim=latent_dim,
            width=width,
            depth=depth,
            time_embed_dim=time_embed_dim,
            variant=variant,
            dropout=dropout,
            num_precond=num_precond,
            schedule_points=schedule_points,
        )
        if time_input != "t":  # older checkpoints' arch has no key: they stay loadable
            self._arch["time_input"] = time_input
        if prediction != "eps":
            self._arch["prediction"] = prediction
        if delta_scale_points:
            if variant != "multibeta" or delta_scale_points < 2:
                raise ValueError(
                    "delta_scale_points needs the multibeta variant and at least 2 points, got "
                    f"{delta_scale_points} for {variant}"
                )
            self._arch["delta_scale_points"] = delta_scale_points
        if per_dimension_sigma:
            if variant == "standard_ldm":
                raise ValueError("standard_ldm uses the cosine schedule, not a per-dimension σ_t table")
            self._arch["per_dimension_sigma"] = True
        self.latent_dim = latent_dim
        self.time_embed_dim = time_embed_dim
        self.time_mlp = nn.Sequential(
            nn.Linear(time_embed_dim, width), nn.SiLU(), nn.Linear(width, width)
        )
        self.inp = nn.Linear(latent_dim, width)
        self.blocks = nn.ModuleList(
            ResidualBlock(width=width, emb_dim=width, latent_dim=latent_dim, dropout=dropout)
            for _ in range(depth)
        )
        self.out_norm = nn.LayerNorm(width)
        self.eps_head = nn.Linear(width, latent_dim)
        self.delta_head = nn.Linear(width, latent_dim) if variant == "multibeta" else None
        for head in (self.eps_head, self.delta_head):
            if head is not None:
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)
        self.register_buffer("delta_scale", torch.ones(latent_dim))
        self.delta_scale_points = delta_scale_points
        if delta_scale_points:
            self.register_buffer(
                "delta_scale_t", torch.linspace(0, 1, delta_scale_points, dtype=torch.float64)
            )
            self.register_buffer("delta_scale_table", torch.ones(delta_scale_points, latent_dim))
        self.register_buffer("latent_mean", torch.zeros(latent_dim))
        self.register_buffer("latent_std", torch.ones(latent_dim))
        self.register_buffer(
            "precond_t", torch.linspace(0, 1, max(num_precond, 2), dtype=torch.float64)
        )
        self.register_buffer("input_scale", torch.ones(max(num_precond, 2), dtype=torch.float64))
        self.sigma_table: SigmaTable | None = None
        if variant != "standard_ldm":
            if schedule_points < 2:
                raise ValueError(f"variant {variant} needs schedule_points >= 2 (the σ_t table)")
            grid = np.linspace(0.0, 1.0, schedule_points)
            placeholder = np.repeat(grid[:, None], latent_dim, axis=1) if per_dimension_sigma else grid
            self.sigma_table = SigmaTable(grid, placeholder)

    def arch(self) -> dict[str, Any]:
        """The constructor arguments (the checkpoint's ``arch``)."""
        return dict(self._arch)

    @property
    def predicts_delta(self) -> bool:
        return self.delta_head is not None

    @torch.no_grad()
    def set_normalisation(
        self,
        *,
        delta_scale: np.ndarray | torch.Tensor | None = None,
        latent_mean: np.ndarray | torch.Tensor | None = None,
        latent_std: np.ndarray | torch.Tensor | None = None,
        precond_t: np.ndarray | torch.Tensor | None = None,
        input_scale: np.ndarray | torch.Tensor | None = None,
        schedule_t: np.ndarray | torch.Tensor | None = None,
        schedule_sigma: np.ndarray | torch.Tensor | None = None,
        delta_scale_t: np.ndarray | torch.Tensor | None = None,
        delta_scale_table: np.ndarray | torch.Tensor | None = None,
    ) -> None:
        """Fill the normalisation buffers (shapes as in the class docstring)."""
        if (delta_scale_t is not None or delta_scale_table is not None) and not self.delta_scale_points:
            raise ValueError("this denoiser has one Δ scale for every t (delta_scale_points = 0)")
        for name, value in (
            ("delta_scale", delta_scale),
            ("delta_scale_t", delta_scale_t),
            ("delta_scale_table", delta_scale_table),
            ("latent_mean", latent_mean),
            ("latent_std", latent_std),
            ("precond_t", precond_t),
            ("input_scale", input_scale),
        ):
            if value is not None:
                buf = getattr(self, name)
                buf.copy_(torch.as_tensor(np.asarray(value), dtype=buf.dtype))
        if schedule_t is not None and schedule_sigma is not None:
            if self.sigma_table is None:
                raise ValueError("standard_ldm uses the cosine schedule, not a σ_t table")
            table = SigmaTable(schedule_t, schedule_sigma)
            self.sigma_table.load_state_dict(table.state_dict())

    def delta_scale_at(self, t: torch.Tensor) -> torch.Tensor:
        """The Δ scale s(t): ``[N, d]`` (``[1, d]`` when one scale serves every t), float32."""
        if not self.delta_scale_points:
            return self.delta_scale.float()[None]
        k, w = segment(self.delta_scale_t, t)
        ends = self.delta_scale_table[k[:, None] + torch.arange(2, device=k.device)]  # [N, 2, d]
        return interpolate_levels(ends, w).float()

    def c_in(self, t: torch.Tensor) -> torch.Tensor:
        """Input scale c_in(t) ``[N]`` (float32), linearly interpolated."""
        k, w = segment(self.precond_t, t)
        s = (1 - w) * self.input_scale[k] + w * self.input_scale[k + 1]
        return s.float()

    def signal_power(self, t: torch.Tensor) -> torch.Tensor:
        """p(t) ``[N]`` (float64): the mean power of the clean part of the network's input z.

        multibeta/noise_only: E[μ_t²] (mean over dims), recovered from the buffers as
        1/c_in² − σ̄_t² at the cache levels and linearly interpolated; standard_ldm: ᾱ_t.
        """
        if self.sigma_table is None:
            return cosine_alpha_bar(t.double()).double()
        k, w = segment(self.precond_t, t)
        power_k = (1.0 / self.input_scale**2 - self.sigma_table.rms(self.precond_t) ** 2).clamp_min(1e-12)
        return (1 - w) * power_k[k] + w * power_k[k + 1]

    def logsnr(self, t: torch.Tensor) -> torch.Tensor:
        """λ(t) = log p(t) − 2 log σ_t ``[N]`` (float64) from the buffers (cosine λ for standard_ldm)."""
        if self.sigma_table is None:
            ab = cosine_alpha_bar(t.double()).double()
            return torch.log(ab) - torch.log1p(-ab.clamp(max=1 - 1e-15))
        sig = self.sigma_table.rms(t.double()).clamp_min(1e-12)
        return torch.log(self.signal_power(t)) - 2.0 * torch.log(sig)

    def _v_coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(σ/(p + σ²), a = sqrt(p/(p + σ²))) of ``prediction: v``, ``[N, 1]`` or ``[N, d]`` (float32)."""
        sig = self.sigma(t).double()
        sig = sig if sig.ndim == 2 else sig[:, None]
        power = self.signal_power(t).double()[:, None]
        total = power + sig**2
        return (sig / total).float(), (power / total).sqrt().float()

    def eps_loss_weight(self, t: torch.Tensor) -> torch.Tensor | None:
        """Weight of ‖ε̂ − ε‖² per element that makes the ε loss the loss of the head's own
        target: None for ``eps``; 1/a² ``[N, 1 or d]`` for ``v`` (so it is ‖F − v‖²)."""
        if self.prediction == "eps":
            return None
        return 1.0 / self._v_coefficients(t)[1] ** 2

    def logsnr_table(self) -> LogSnrTable:
        """λ(t) on a dense grid, monotone and invertible (for λ-based training times and grids)."""
        if self.sigma_table is None:
            return LogSnrTable.cosine()
        grid = torch.linspace(0.0, 1.0, 4097, dtype=torch.float64, device=self.precond_t.device)
        grid = torch.unique(torch.cat([grid, self.precond_t.double()]))
        return LogSnrTable(grid.cpu().numpy(), self.logsnr(grid).cpu().numpy())

    def time_features(self, t: torch.Tensor) -> torch.Tensor:
        """The time embedding's input ``[N]``: t, or the cosine time of λ(t) (``time_input``)."""
        if self.time_input == "t":
            return t
        lam = self.logsnr(t)
        return ((2.0 / math.pi) * torch.atan(torch.exp(-0.5 * lam))).to(torch.float32)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """σ_t ``[N]`` of this variant's forward process (float32; ``[N, d]`` for a per-dimension σ)."""
        if self.sigma_table is None:
            return (1 - cosine_alpha_bar(t.float())).clamp_min(0).sqrt()
        return self.sigma_table(t.float())

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """α_t ``[N]``: 1 for multibeta/noise_only, sqrt(ᾱ_t) for standard_ldm (float32)."""
        if self.sigma_table is None:
            return cosine_alpha_bar(t.float()).sqrt()
        return torch.ones_like(t, dtype=torch.float32)

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """ẑ = (z − latent_mean)/latent_std ``[N, d]`` (identity unless standard_ldm)."""
        return (z - self.latent_mean) / self.latent_std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """z = ẑ·latent_std + latent_mean ``[N, d]``: a standard_ldm sample back to VAE latents."""
        return z * self.latent_std + self.latent_mean

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(z [N, d], t [N]) -> (eps_hat [N, d], delta_hat [N, d] or None)``, Δ̂ in real units."""
        z_in = z * self.c_in(t).to(z.dtype)[:, None]
        emb = self.time_mlp(sinusoidal_embedding(self.time_features(t), self.time_embed_dim))
        h = self.inp(z_in)
        for block in self.blocks:
            h = block(h, emb, z_in)
        h = F.silu(self.out_norm(h))
        eps_hat = self.eps_head(h)
        if self.prediction == "v":
            noise_gain, a = self._v_coefficients(t)
            eps_hat = noise_gain.to(h.dtype) * z + a.to(h.dtype) * eps_hat
        delta_hat = None
        if self.delta_head is not None:
            delta_hat = self.delta_head(h) * self.delta_scale_at(t).to(h.dtype)
        return eps_hat, delta_hat
