"""Log signal-to-noise ratio as the diffusion's coordinate.

Time is a free coordinate of a diffusion: the forward process is fixed by its path (μ_t, σ_t),
and where training examples fall and where the sampler steps can be expressed in any monotone
function of t. The one that makes diffusions comparable is the log signal-to-noise ratio

    λ(t) = log( p(t) / σ_t² ),

with p(t) the signal power of the clean part (the mean over dimensions of E[μ_t²], the
quantity the denoiser's input scale c_in(t) = 1/sqrt(p(t) + σ_t²) normalises by; for centred
latents it is their variance) and σ_t the noise std. For the plain latent DDPM on unit-variance
latents λ(t) = log(ᾱ_t/(1 − ᾱ_t)) of the cosine schedule.

- :class:`LogSnrTable`: λ(t) of any forward process, tabulated on a dense t grid, made
  monotone (non-increasing) and invertible (t of a given λ).
- :func:`cosine_logsnr` / :func:`cosine_time`: λ of the cosine schedule and its inverse.
- :data:`DENSITIES` and :class:`DensityTimes`: training times whose λ has a target density
  (the cosine schedule's, or EDM's log-normal in σ), restricted to the process's λ range.
- :func:`logsnr_grid`: sampler grids even in λ, even in the cosine schedule's time, or with
  EDM's ρ spacing in σ = exp(−λ/2).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch

from multibeta.core.interpolation import segment
from multibeta.core.schedules import cosine_alpha_bar

TimeDensity = Literal["uniform", "cosine", "edm"]
DENSITIES: tuple[str, ...] = ("uniform", "cosine", "edm")
EDM_P_MEAN, EDM_P_STD = -1.2, 1.2
"""EDM's training distribution ln σ ~ N(P_mean, P_std²) (Karras et al. 2022), σ in data units."""
EDM_RHO = 7.0
"""EDM's step spacing exponent ρ."""
DENSE_POINTS = 4097
"""Points of the tabulated λ(t)."""


def cosine_logsnr(u: torch.Tensor) -> torch.Tensor:
    """λ = log(ᾱ/(1 − ᾱ)) of the cosine schedule (:func:`cosine_alpha_bar`) at times ``u`` (float64)."""
    ab = cosine_alpha_bar(u.to(torch.float64)).to(torch.float64)
    return torch.log(ab) - torch.log1p(-ab.clamp(max=1 - 1e-15))


def _cosine_table() -> tuple[np.ndarray, np.ndarray]:
    u = torch.linspace(0.0, 1.0, 20001, dtype=torch.float64)
    lam = cosine_logsnr(u).numpy()
    lam = np.minimum.accumulate(lam)  # ᾱ is clipped at 1e-5: flat at the very end
    return u.numpy(), lam


_COSINE_U, _COSINE_LAMBDA = _cosine_table()


def cosine_time(lam: np.ndarray | float) -> np.ndarray:
    """The cosine-schedule time u with ``cosine_logsnr(u) = lam`` (clamped to its range), float64."""
    return np.interp(-np.asarray(lam, dtype=np.float64), -_COSINE_LAMBDA, _COSINE_U)


class LogSnrTable:
    """λ(t) of a forward process on a dense grid, with its inverse.

    Args:
        t: ascending times ``[M]`` from 0 to 1.
        logsnr: λ at those times ``[M]``; made non-increasing (a running minimum) so that
            t ↦ λ is invertible wherever it decreases.
    """

    def __init__(self, t: np.ndarray, logsnr: np.ndarray) -> None:
        t = np.asarray(t, dtype=np.float64)
        lam = np.asarray(logsnr, dtype=np.float64)
        if t.ndim != 1 or t.shape != lam.shape or len(t) < 2 or np.any(np.diff(t) <= 0):
            raise ValueError("a log-SNR table needs ascending times and one finite λ per time")
        if not np.all(np.isfinite(lam)):
            raise ValueError("log-SNR values must be finite (is σ_t = 0 somewhere?)")
        self.t = t
        self.logsnr = np.minimum.accumulate(lam)

    @classmethod
    def from_levels(
        cls,
        level_t: np.ndarray,
        signal_power: np.ndarray,
        sigma: Callable[[torch.Tensor], torch.Tensor],
        points: int = DENSE_POINTS,
    ) -> LogSnrTable:
        """λ(t) = log p(t) − 2 log σ_t with p linearly interpolated between the levels.

        Args:
            level_t: level times ``[K]`` (ascending, 0 … 1).
            signal_power: p at the levels ``[K]`` (mean over dimensions of E[μ_{t_k}²]).
            sigma: σ(t) for a float64 tensor of times (e.g. a ``SigmaTable``); must be > 0.
            points: size of the dense grid (the level times are added to it).
        """
        level_t = np.asarray(level_t, dtype=np.float64)
        grid = np.union1d(np.linspace(0.0, 1.0, points), level_t)
        p = np.interp(grid, level_t, np.asarray(signal_power, dtype=np.float64))
        s = torch.as_tensor(sigma(torch.as_tensor(grid, dtype=torch.float64))).double().cpu().numpy()
        if np.any(s <= 0) or np.any(p <= 0):
            raise ValueError("log-SNR needs σ_t > 0 and a positive signal power at every t")
        return cls(grid, np.log(p) - 2.0 * np.log(s))

    @classmethod
    def cosine(cls) -> LogSnrTable:
        """λ of the cosine schedule itself (the plain latent DDPM on unit-variance latents)."""
        return cls(_COSINE_U, _COSINE_LAMBDA)

    @property
    def lambda_max(self) -> float:
        """λ(0), the cleanest end."""
        return float(self.logsnr[0])

    @property
    def lambda_min(self) -> float:
        """λ(1), the noisiest end."""
        return float(self.logsnr[-1])

    def __call__(self, t: np.ndarray | float) -> np.ndarray:
        """λ(t) (float64, linear interpolation)."""
        return np.interp(np.asarray(t, dtype=np.float64), self.t, self.logsnr)

    def time_of(self, lam: np.ndarray | float) -> np.ndarray:
        """The t with λ(t) = ``lam`` (clamped to [λ(1), λ(0)]); where λ is flat, its first t."""
        lam = np.asarray(lam, dtype=np.float64)
        # np.interp wants ascending x: walk the table backwards (−λ ascending)
        neg = -self.logsnr
        # strictly ascending copy: flat stretches map to their first time
        keep = np.concatenate([[True], np.diff(neg) > 0])
        return np.interp(-lam, neg[keep], self.t[keep])


# --------------------------------------------------------------------------- training times


def _density_quantile(target: str, lo: float, hi: float) -> Callable[[np.ndarray], np.ndarray]:
    """q(v) for v in [0, 1]: λ at upper quantile v of the target density restricted to [lo, hi]
    (q decreases from hi to lo, so t = λ⁻¹(q(v)) increases with v)."""
    if target == "cosine":
        u_lo, u_hi = cosine_time(hi), cosine_time(lo)  # λ decreases with u

        def q(v: np.ndarray) -> np.ndarray:
            return np.interp(u_lo + v * (u_hi - u_lo), _COSINE_U, _COSINE_LAMBDA)

        return q
    if target == "edm":
        # λ = −2 ln σ with ln σ ~ N(P_mean, P_std²): λ ~ N(−2 P_mean, (2 P_std)²)
        m, s = -2.0 * EDM_P_MEAN, 2.0 * EDM_P_STD
        cdf = torch.special.ndtr
        c_lo = float(cdf(torch.tensor((lo - m) / s, dtype=torch.float64)))
        c_hi = float(cdf(torch.tensor((hi - m) / s, dtype=torch.float64)))

        def q(v: np.ndarray) -> np.ndarray:
            # λ falls as v rises (t rises), as for the cosine density
            c = torch.as_tensor(c_hi - v * (c_hi - c_lo), dtype=torch.float64)
            return (m + s * torch.special.ndtri(c.clamp(1e-15, 1 - 1e-15))).numpy()

        return q
    raise ValueError(f"unknown time density {target!r}; choose one of {', '.join(DENSITIES)}")


class DensityTimes:
    """Map uniform draws v in [0, 1) to times whose λ(t) has a ``target`` density.

    ``uniform`` keeps v (times uniform in t). ``cosine``: λ distributed as under the cosine
    schedule with uniform times (the plain DDPM's training density); ``edm``: EDM's log-normal
    in σ. Both are restricted to the process's range [λ(1), λ(0)] and renormalised. The map
    v ↦ t is monotone (stratified draws stay stratified) and tabulated at ``points`` values of
    v, so that it runs on the draws' device with torch.

    Args:
        table: the process's λ(t).
        target: a name in :data:`DENSITIES`.
        points: size of the tabulated map.
    """

    def __init__(self, table: LogSnrTable, target: TimeDensity, points: int = 16385) -> None:
        if target not in DENSITIES:
            raise ValueError(f"unknown time density {target!r}; choose one of {', '.join(DENSITIES)}")
        self.target = target
        self.v = torch.linspace(0.0, 1.0, points, dtype=torch.float64)
        if target == "uniform":
            self.t = self.v.clone()
        else:
            q = _density_quantile(target, table.lambda_min, table.lambda_max)
            t = np.maximum.accumulate(table.time_of(q(self.v.numpy())))
            self.t = torch.as_tensor(t, dtype=torch.float64)

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        """Times ``[B]`` for draws ``v [B]`` in [0, 1), in ``v``'s dtype and device."""
        if self.target == "uniform":
            return v
        t = self.t.to(v.device)
        k, w = segment(self.v.to(v.device), v)
        return ((1 - w) * t[k] + w * t[k + 1]).to(v.dtype)


# --------------------------------------------------------------------------- sampler grids

GridKind = Literal["logsnr", "cosine", "edm"]
GRID_KINDS: tuple[str, ...] = ("logsnr", "cosine", "edm")


def logsnr_grid(
    steps: int, kind: GridKind, table: LogSnrTable, t_start: float, t_end: float
) -> np.ndarray:
    """Descending times ``[steps + 1]`` from ``t_start`` to ``t_end`` with equal steps in a λ coordinate.

    ``logsnr``: equal steps in λ. ``cosine``: equal steps in the cosine schedule's time
    u(λ) (the plain DDPM's uniform grid carried over by λ). ``edm``: EDM's
    σ_i = (σ_max^{1/ρ} + i/N (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, ρ = 7, in σ = exp(−λ/2).
    End points are exact.
    """
    lam_a, lam_b = float(table(t_start)), float(table(t_end))
    i = np.linspace(0.0, 1.0, steps + 1)
    if kind == "logsnr":
        lam = lam_a + i * (lam_b - lam_a)
    elif kind == "cosine":
        u_a, u_b = cosine_time(lam_a), cosine_time(lam_b)
        lam = np.interp(u_a + i * (u_b - u_a), _COSINE_U, _COSINE_LAMBDA)
    elif kind == "edm":
        s_a, s_b = math.exp(-lam_a / 2), math.exp(-lam_b / 2)
        sig = (s_a ** (1 / EDM_RHO) + i * (s_b ** (1 / EDM_RHO) - s_a ** (1 / EDM_RHO))) ** EDM_RHO
        lam = -2.0 * np.log(sig)
    else:
        raise ValueError(f"unknown log-SNR grid {kind!r}; choose one of {', '.join(GRID_KINDS)}")
    t = table.time_of(lam)
    t[0], t[-1] = t_start, t_end
    # a flat stretch of λ (or rounding) must not make the grid go backwards
    t = np.minimum.accumulate(t)
    return t
