"""σ-schedules of the multi-β VAE posterior q(z_t | x) = N(μ_t(x), σ_t² I).

σ_t is one function of t shared by all data and all latent dimensions, non-decreasing
from σ_0 ≈ 0 (t = 0, nearly lossless) to σ_1 ≈ 1 (t = 1, the prior's scale).

Registry (``vae.sigma_schedule``); a published name never changes meaning:

- ``learned``: VDM-style (Kingma et al., 2021) σ_t² = sigmoid(γ(t)) with γ a monotone
  network, increasing by construction (positive weights, monotone activations) and
  normalised so that σ_0 = ``sigma_min`` and σ_1 = ``sigma_max`` exactly.
- ``sinusoidal``: σ_t = max(sin(π t / 2), sigma_min).
- ``linear``: σ_t = max(t, sigma_min).

All schedules compute in float32 with autocast disabled: σ feeds log σ in the KL term.

Per-dimension staggering (``vae.sigma_stagger`` = s, an extension beyond the paper, whose σ_t
is shared by every dimension): dimension j of d follows the shared schedule on its own clock,
σ_{t,j} = σ(τ_j(t)) with τ_j(t) = clamp((t − a_j)/(1 − s), 0, 1) and a_j = s · j/(d − 1)
(:func:`staggered_times`). Every dimension starts at σ_0 and ends at σ_1, but dimension 0
loses its information first and dimension d − 1 last, so the posterior N(μ_t, diag σ_{t,j}²)
is no longer rotation-invariant between t = 0 and t = 1. s = 0 is the shared schedule.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

SIGMA_SCHEDULES: dict[str, Callable[..., "SigmaSchedule"]] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator adding a schedule to :data:`SIGMA_SCHEDULES`."""

    def deco(cls: type) -> type:
        if name in SIGMA_SCHEDULES:
            raise ValueError(f"sigma schedule {name!r} registered twice")
        SIGMA_SCHEDULES[name] = cls
        cls.name = name
        return cls

    return deco


def stagger_offsets(latent_dim: int, stagger: float) -> torch.Tensor:
    """Clock offsets a_j = s · j/(d − 1) ``[d]`` (float32) of the staggered schedule; zeros for s = 0."""
    if not 0.0 <= stagger < 1.0:
        raise ValueError(f"sigma_stagger must lie in [0, 1), got {stagger}")
    if latent_dim < 2:
        return torch.zeros(latent_dim)
    return stagger * torch.arange(latent_dim, dtype=torch.float32) / (latent_dim - 1)


def staggered_times(t: torch.Tensor, offsets: torch.Tensor, stagger: float) -> torch.Tensor:
    """τ_j(t) = clamp((t − a_j)/(1 − s), 0, 1): ``t`` ``[N]`` -> ``[N, d]`` (float32).

    Each dimension's clock runs 1/(1 − s) times faster than t, starting at its offset
    a_j = ``offsets[j]``; τ_j(0) = 0 and τ_j(1) = 1 for every j (a_j ≤ s).
    """
    tt = t.float().reshape(-1, 1)
    return ((tt - offsets.to(tt.device).reshape(1, -1)) / (1.0 - stagger)).clamp(0.0, 1.0)


class SigmaSchedule(nn.Module):
    """Base class: ``forward(t [N]) -> σ_t [N]`` (float32), non-decreasing in t."""

    name = "base"

    def __init__(self, *, sigma_min: float) -> None:
        super().__init__()
        if not 0.0 < sigma_min < 1.0:
            raise ValueError(f"sigma_min must lie in (0, 1), got {sigma_min}")
        self.sigma_min = float(sigma_min)

    def _sigma(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=t.device.type, enabled=False):
            return self._sigma(t.float())


@register("sinusoidal")
class SinusoidalSigma(SigmaSchedule):
    """σ_t = max(sin(π t / 2), σ_min): fixed, concave, σ_1 = 1."""

    def __init__(self, *, sigma_min: float, **_: object) -> None:
        super().__init__(sigma_min=sigma_min)

    def _sigma(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sin(0.5 * math.pi * t).clamp_min(self.sigma_min)


@register("linear")
class LinearSigma(SigmaSchedule):
    """σ_t = max(t, σ_min): fixed, σ_1 = 1."""

    def __init__(self, *, sigma_min: float, **_: object) -> None:
        super().__init__(sigma_min=sigma_min)

    def _sigma(self, t: torch.Tensor) -> torch.Tensor:
        return t.clamp_min(self.sigma_min)


class _PositiveLinear(nn.Module):
    """Linear layer with weights ``softplus(raw)`` > 0 (a monotone increasing map)."""

    def __init__(self, n_in: int, n_out: int, init_weight: float) -> None:
        super().__init__()
        raw = math.log(math.expm1(init_weight))  # softplus^-1
        self.raw_weight = nn.Parameter(torch.full((n_out, n_in), raw) + 0.1 * torch.randn(n_out, n_in))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, F.softplus(self.raw_weight), self.bias)


@register("learned")
class LearnedSigma(SigmaSchedule):
    """σ_t² = sigmoid(γ(t)), γ(t) = γ_0 + (γ_1 − γ_0) · g(t), g monotone with g(0)=0, g(1)=1.

    ``g̃(t) = l1(t) + l3(sigmoid(l2(t)))`` with positive weights in l1, l2, l3 (so g̃ is
    increasing), then ``g = (g̃(t) − g̃(0)) / (g̃(1) − g̃(0))``. γ_0 = logit(σ_min²),
    γ_1 = logit(σ_max²). At initialisation g ≈ t (γ linear in t).

    Args:
        sigma_min: σ_0.
        sigma_max: σ_1 (< 1).
        hidden: units of the monotone network's hidden layer.
    """

    def __init__(self, *, sigma_min: float, sigma_max: float, hidden: int, **_: object) -> None:
        super().__init__(sigma_min=sigma_min)
        if not sigma_min < sigma_max < 1.0:
            raise ValueError(
                f"learned schedule needs sigma_min < sigma_max < 1, got {sigma_min}, {sigma_max}"
            )
        self.sigma_max = float(sigma_max)
        self.gamma_0 = math.log(sigma_min**2 / (1.0 - sigma_min**2))
        self.gamma_1 = math.log(sigma_max**2 / (1.0 - sigma_max**2))
        self.l1 = _PositiveLinear(1, 1, init_weight=1.0)
        self.l2 = _PositiveLinear(1, hidden, init_weight=4.0)
        with torch.no_grad():  # spread the sigmoid centres over [0, 1]
            self.l2.bias.copy_(-4.0 * torch.linspace(0.0, 1.0, hidden))
        self.l3 = _PositiveLinear(hidden, 1, init_weight=1e-2)

    def normalized(self, t: torch.Tensor) -> torch.Tensor:
        """g(t) in [0, 1] for ``t`` ``[N]``; g(0) = 0, g(1) = 1."""
        ends = torch.tensor([0.0, 1.0], device=t.device, dtype=t.dtype)
        x = torch.cat([t.reshape(-1), ends]).unsqueeze(1)
        g = (self.l1(x) + self.l3(torch.sigmoid(self.l2(x)))).squeeze(1)
        g_t, g0, g1 = g[:-2], g[-2], g[-1]
        return ((g_t - g0) / (g1 - g0)).reshape(t.shape)

    def gamma(self, t: torch.Tensor) -> torch.Tensor:
        """γ(t) = logit(σ_t²) ``[N]``."""
        return self.gamma_0 + (self.gamma_1 - self.gamma_0) * self.normalized(t)

    def _sigma(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.gamma(t.clamp(0.0, 1.0))).sqrt()


def build_sigma_schedule(
    name: str, *, sigma_min: float, sigma_max: float, hidden: int
) -> SigmaSchedule:
    """Build the schedule ``name`` (``vae.sigma_schedule``).

    Raises:
        ValueError: unknown name, listing the known ones.
    """
    if name not in SIGMA_SCHEDULES:
        raise ValueError(
            f"unknown sigma schedule {name!r} (vae.sigma_schedule); "
            f"choose one of {sorted(SIGMA_SCHEDULES)}"
        )
    return SIGMA_SCHEDULES[name](sigma_min=sigma_min, sigma_max=sigma_max, hidden=hidden)
