"""Reverse samplers of the non-linear latent diffusion (METHOD.md, "Sampling").

Every variant is integrated in "variance-exploding" coordinates: a state ``x`` with
x_t = m_t + ς_t ε, where m_t is the clean part and ς_t the noise level.

- ``multibeta``: x = z, m_t = μ_t(x) (the encoder mean, which moves with t), ς_t = σ_t (the
  VAE's schedule). The denoiser predicts ε̂ and Δ̂ ≈ dμ_t/dt.
- ``noise_only``: the same with Δ̂ = 0 (μ treated as constant between steps).
- ``standard_ldm``: x = z_t / sqrt(ᾱ_t) in *normalised* t=0 latent units, m = z_0,
  ς_t = sqrt(1/ᾱ_t − 1) for the cosine ᾱ; the network sees sqrt(ᾱ_t)·x. In these coordinates
  DDIM(η) is exactly the generalized step below with Δ = 0. Latents are un-normalised with the
  model's ``latent_mean``/``latent_std`` buffers at the end.

Generalized step from t to s < t (:func:`generalized_step`)::

    μ̂_t = x_t − ς_t ε̂,   μ̂_s = μ̂_t − (t − s) Δ̂
    x_s = μ̂_s + sqrt(ς_s² − c²) ε̂ + c ξ,   c = η ς_s sqrt(1 − ς_s²/ς_t²),  ξ ~ N(0, I)

η = 1 is the ancestral sampler (c is the posterior std of the Gaussian step), η = 0 the
deterministic DDIM-like sampler. For η = 0 the step is x_s = x_t + (ς_s − ς_t) ε̂ − (t − s) Δ̂:
a first-order step of the ODE dx/dt = Δ + ς'(t) ε that integrates the ς part exactly for a
constant ε̂. ``heun`` averages the predictions at both ends (trapezoid in ς for ε, in t for
Δ), which is second order; like EDM it takes a plain Euler step into the last grid point
(t = 0), where ς ≈ 0 and the ε prediction is ill-defined. With η > 0 ``heun`` is a stochastic
sampler (an option beyond the paper): the averaged predictions, the second evaluated at the
deterministic predictor's end point, take the generalized η step with its fresh noise, so the
chain keeps the ancestral sampler's noise injection with the Heun step's accuracy of the mean.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal, Sequence, TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

from multibeta.core.config import to_dict
from multibeta.core.logsnr import LogSnrTable
from multibeta.core.schedules import cosine_alpha_bar
from multibeta.sampling.config import SampleRunConfig
from multibeta.sampling.settings import SOLVERS, VARIANTS, SamplerSettings, Solver, Variant
from multibeta.sampling.spacing import time_grid
from multibeta.utils.device import Runtime, eval_mode

if TYPE_CHECKING:
    from multibeta.cache.latent_cache import LatentCache

logger = logging.getLogger(__name__)

Denoiser = Callable[[torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor | None]"]
"""``model(z [N, d], t [N]) -> (eps_hat [N, d], delta_hat [N, d] | None)``."""
SigmaFn = Callable[[torch.Tensor], torch.Tensor]
"""σ(t) for a float64 tensor of times (a :class:`~multibeta.core.schedules.SigmaTable`)."""
Decoder = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``decoder(z [N, d], t [N]) -> images [N, C, H, W]`` in [0, 1]."""
Predictor = Callable[[torch.Tensor, float], "tuple[torch.Tensor, torch.Tensor | None]"]
"""``predict(x [N, d], t) -> (eps_hat, delta_hat | None)`` in the sampler's coordinates."""
StepCallback = Callable[[int, float, torch.Tensor], None]
StartMode = Literal["noise_free", "forward", "inversion"]
START_MODES: tuple[str, ...] = ("noise_free", "forward", "inversion")
"""How a chain started from a given clean mean m at t_start begins (``sample_latents(z_start=...)``):
``noise_free`` x = m; ``forward`` x = m + ς ξ (a draw of the forward process);
``inversion`` x = m + ς ε*, ε* the fixed point of ε ↦ ε̂(m + ς ε) (:func:`invert_start`)."""
"""``callback(step_index, s, x_s)`` after each step (step_index counts from 1)."""

NOISE_BLOCK = 256
"""Rows per noise stream. Sample i draws its noise from stream i // NOISE_BLOCK, so results do
not depend on the batch size."""

T = TypeVar("T")


# --------------------------------------------------------------------------- the update rules


def _sqrt_clamped(v: float | torch.Tensor) -> float | torch.Tensor:
    return math.sqrt(max(0.0, v)) if isinstance(v, float) else v.clamp_min(0.0).sqrt()


def _any_positive(v: float | torch.Tensor) -> bool:
    return v > 0.0 if isinstance(v, float) else bool((v > 0.0).any())


def step_noise_scale(
    sigma_t: float | torch.Tensor, sigma_s: float | torch.Tensor, eta: float
) -> float | torch.Tensor:
    """c = η ς_s sqrt(1 − ς_s²/ς_t²), the std of the fresh noise of one step (0 if ς_t = 0).

    Floats give a float; ``[d]`` tensors (a per-dimension schedule) give c per dimension.
    """
    if isinstance(sigma_t, float) and isinstance(sigma_s, float):
        if eta == 0.0 or sigma_t <= 0.0:
            return 0.0
        return eta * sigma_s * math.sqrt(max(0.0, 1.0 - (sigma_s / sigma_t) ** 2))
    sigma_t, sigma_s = torch.as_tensor(sigma_t), torch.as_tensor(sigma_s)
    if eta == 0.0:
        return torch.zeros_like(sigma_s)
    ratio = sigma_s / sigma_t.clamp_min(torch.finfo(sigma_t.dtype).tiny)
    c = eta * sigma_s * (1.0 - ratio**2).clamp_min(0.0).sqrt()
    return torch.where(sigma_t > 0.0, c, torch.zeros_like(c))


def generalized_step(
    x: torch.Tensor,
    eps: torch.Tensor,
    delta: torch.Tensor | None,
    *,
    t: float,
    s: float,
    sigma_t: float | torch.Tensor,
    sigma_s: float | torch.Tensor,
    eta: float,
    noise: torch.Tensor | None = None,
    return_mean: bool = False,
) -> torch.Tensor:
    """One step t -> s of the generalized (η) sampler; all tensors ``[N, d]``.

    Args:
        x: the state x_t.
        eps, delta: the predictions ε̂, Δ̂ at (x_t, t); ``delta=None`` means Δ̂ = 0.
        sigma_t, sigma_s: noise levels ς_t, ς_s (floats, or ``[d]`` per dimension).
        eta: 0 deterministic, 1 ancestral.
        noise: ξ ~ N(0, I), needed when the step adds noise (η > 0 and ς_s > 0).
        return_mean: return μ̂_s instead of x_s (the noise-free final latent).
    """
    mu = x - sigma_t * eps
    if delta is not None:
        mu = mu - (t - s) * delta
    if return_mean:
        return mu
    c = step_noise_scale(sigma_t, sigma_s, eta)
    out = mu + _sqrt_clamped(sigma_s**2 - c**2) * eps
    if _any_positive(c):
        if noise is None:
            raise ValueError("a stochastic step (eta > 0) needs noise")
        out = out + c * noise
    return out


def _level(value: float | torch.Tensor) -> float | torch.Tensor:
    """A grid entry of ``sigmas`` as a float, or as the ``[d]`` tensor it is."""
    return value if isinstance(value, torch.Tensor) and value.ndim == 1 else float(value)


def run_sampler(
    predict: Predictor,
    x: torch.Tensor,
    times: Sequence[float],
    sigmas: Sequence[float] | Sequence[torch.Tensor],
    *,
    eta: float,
    solver: Solver,
    noise: Callable[[], torch.Tensor] | None = None,
    final_mean: bool = False,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Integrate from ``times[0]`` to ``times[-1]`` (descending); the core of every sampler.

    Args:
        predict: the network (or an oracle) in the sampler's coordinates.
        x: the start state ``[N, d]``.
        times, sigmas: the grid ``[K + 1]`` and ς at each grid point (floats, or ``[d]`` tensors
            on the state's device for a per-dimension schedule).
        eta: noise of the generalized step.
        solver: ``euler`` (the generalized step) or ``heun`` (predictions averaged over the
            step; second order for η = 0, stochastic for η > 0).
        noise: returns a fresh ξ ``[N, d]`` each call (needed when η > 0).
        final_mean: end on μ̂ of the last step instead of x (drops the ς_end noise).
        callback: called after every step with (step index, s, x_s).

    Returns:
        The final state ``[N, d]``.
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    if len(times) != len(sigmas):
        raise ValueError("times and sigmas must have the same length")
    n_steps = len(times) - 1
    for i in range(n_steps):
        t, s = float(times[i]), float(times[i + 1])
        sig_t, sig_s = _level(sigmas[i]), _level(sigmas[i + 1])
        eps, delta = predict(x, t)
        last = i == n_steps - 1
        if last and final_mean:
            x = generalized_step(
                x, eps, delta, t=t, s=s, sigma_t=sig_t, sigma_s=sig_s, eta=0.0, return_mean=True
            )
        else:
            if solver == "heun" and not last:
                x_pred = generalized_step(
                    x, eps, delta, t=t, s=s, sigma_t=sig_t, sigma_s=sig_s, eta=0.0
                )
                eps_s, delta_s = predict(x_pred, s)
                eps = 0.5 * (eps + eps_s)
                delta = None if delta is None or delta_s is None else 0.5 * (delta + delta_s)
            c = step_noise_scale(sig_t, sig_s, eta)
            xi = None
            if _any_positive(c):
                if noise is None:
                    raise ValueError("eta > 0 needs a noise source")
                xi = noise()
            x = generalized_step(
                x, eps, delta, t=t, s=s, sigma_t=sig_t, sigma_s=sig_s, eta=eta, noise=xi
            )
        if callback is not None:
            callback(i + 1, s, x)
    return x


def invert_start(
    predict: Predictor, m: torch.Tensor, t: float, sigma_t: float | torch.Tensor, iterations: int
) -> torch.Tensor:
    """A state x_t whose predicted clean part is the given mean ``m`` ``[N, d]``.

    The denoiser was trained on x_t = m_t + ς_t ε, never on the noise-free m_t itself. The
    state x = m + ς_t ε* with ε* = ε̂(x, t) is the point whose prediction x − ς_t ε̂ is exactly
    ``m``: it lies on the training distribution's shell and keeps m as its content. ε* is
    found by the fixed-point iteration ε ← ε̂(m + ς_t ε, t) from ε = 0, ``iterations`` times
    (0 returns ``m``). For Gaussian data m ~ N(0, s² I) and the exact ε̂ the map is a
    contraction with factor ς²/(s² + ς²) towards x = m (s² + ς²)/s².
    """
    if iterations < 0:
        raise ValueError(f"inversion iterations must be >= 0, got {iterations}")
    eps = torch.zeros_like(m)
    for _ in range(iterations):
        eps, _ = predict(m + sigma_t * eps, t)
    return m + sigma_t * eps


def nfe_per_sample(steps: int, solver: Solver) -> int:
    """Network evaluations per sample: ``steps`` for euler, 2·steps − 1 for heun."""
    return steps if solver == "euler" else 2 * steps - 1


# --------------------------------------------------------------------------- variants


@dataclass(frozen=True)
class LatentProcess:
    """How a variant's sampler state relates to the network input and to real latents.

    Attributes:
        sigma: ς(t) for float64 times.
        scale: the network input is scale(t)·x.
        use_delta: whether Δ̂ is used (``multibeta``) or taken as 0.
        mean, std: ``[d]`` un-normalisation (real latent = x·std + mean), or None.
        logsnr: the process's λ(t) (for the λ-based grids), or None where unknown.
    """

    sigma: SigmaFn
    scale: SigmaFn | None
    use_delta: bool
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    logsnr: LogSnrTable | None = None

    def sigma_at(self, t: float) -> float | torch.Tensor:
        """ς(t): a float, or ``[d]`` (float64) for a per-dimension schedule."""
        value = self.sigma(torch.tensor([t], dtype=torch.float64))[0]
        return value if value.ndim == 1 else float(value)

    def scale_at(self, t: float) -> float:
        return (
            1.0
            if self.scale is None
            else float(self.scale(torch.tensor([t], dtype=torch.float64))[0])
        )

    def to_latent(self, x: torch.Tensor) -> torch.Tensor:
        """Sampler state -> real latent units."""
        if self.std is None:
            return x
        return x * self.std.to(x) + self.mean.to(x)

    def from_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Real latent units -> sampler state (the clean part m)."""
        if self.std is None:
            return z
        return (z - self.mean.to(z)) / self.std.to(z)


def _ldm_sigma(t: torch.Tensor) -> torch.Tensor:
    abar = cosine_alpha_bar(t.to(torch.float64))
    return torch.sqrt((1.0 / abar - 1.0).clamp_min(0.0))


def _ldm_scale(t: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(cosine_alpha_bar(t.to(torch.float64)))


def make_process(
    variant: Variant, sigma: SigmaFn | None, model: object | None = None
) -> LatentProcess:
    """The :class:`LatentProcess` of a variant.

    ``multibeta``/``noise_only`` need ``sigma`` (the VAE's σ_t, e.g. ``LatentCache.sigma_table()``);
    ``standard_ldm`` ignores it and reads ``model.latent_mean``/``model.latent_std``. The λ(t)
    table of the λ-based grids comes from ``model.logsnr_table()`` where the model has one.
    """
    table_fn = getattr(model, "logsnr_table", None)
    logsnr = table_fn() if callable(table_fn) else None
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if variant == "standard_ldm":
        mean, std = getattr(model, "latent_mean", None), getattr(model, "latent_std", None)
        if mean is None or std is None:
            raise ValueError(
                "variant standard_ldm needs the denoiser's latent_mean/latent_std buffers (its "
                "latents are normalised); was this checkpoint trained as standard_ldm?"
            )
        return LatentProcess(
            _ldm_sigma,
            _ldm_scale,
            False,
            torch.as_tensor(mean).detach().float().cpu(),
            torch.as_tensor(std).detach().float().cpu(),
            LogSnrTable.cosine(),
        )
    if sigma is None:
        raise ValueError(
            f"variant {variant} needs the VAE's sigma schedule (LatentCache.sigma_table())"
        )

    table_device = None
    if isinstance(sigma, torch.nn.Module):  # a SigmaTable may live on the GPU
        table_device = next(iter(sigma.buffers()), torch.empty(0)).device

    def sigma64(t: torch.Tensor) -> torch.Tensor:
        t = t.to(torch.float64) if table_device is None else t.to(table_device, torch.float64)
        return torch.as_tensor(sigma(t)).to("cpu", torch.float64)

    return LatentProcess(sigma64, None, variant == "multibeta", logsnr=logsnr)


def make_predictor(model: Denoiser, process: LatentProcess) -> Predictor:
    """Wrap the network as ``predict(x, t)`` in sampler coordinates (fp32).

    The predictions are integrated over up to 1000 steps, so they run in fp32 even where
    training used bf16/fp16 autocast: the denoiser is a small MLP on ``[N, d]`` latents, and
    16-bit rounding of ε̂ and Δ̂ would enter every step."""

    def predict(x: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        t_vec = torch.full((x.shape[0],), t, device=x.device, dtype=torch.float32)
        scale = process.scale_at(t)
        eps, delta = model(x if scale == 1.0 else scale * x, t_vec)
        if eps.shape != x.shape:
            raise ValueError(
                f"denoiser returned eps of shape {tuple(eps.shape)} for input {tuple(x.shape)}"
            )
        if not process.use_delta:
            return eps.float(), None
        if delta is None:
            raise ValueError(
                "variant multibeta needs the denoiser's Δ head but the model returned delta=None; "
                "sample it with variant noise_only, or train it with the multibeta variant"
            )
        return eps.float(), delta.float()

    return predict


# --------------------------------------------------------------------------- start distribution


@dataclass(frozen=True)
class GaussianPrior:
    """A Gaussian start distribution N(mean, cov) for z_1, in real latent units.

    METHOD.md starts the chain from N(0, σ_1² I). The true z_1 = μ_1(x) + σ_1 ε has mean
    E[μ_1] and covariance Cov(μ_1) + σ_1² I; when the encoder keeps information at t = 1 the two
    differ (``start_mismatch``), and a deterministic sampler carries the difference to t = 0.
    :meth:`fit` matches the first two moments instead (config ``sampling.runs[].prior: fitted``).

    Attributes:
        mean: ``[d]``.
        scale_tril: ``[d, d]`` Cholesky factor L of the covariance (cov = L Lᵀ).
    """

    mean: torch.Tensor
    scale_tril: torch.Tensor

    @classmethod
    def fit(cls, mu_1: torch.Tensor | np.ndarray, sigma_1: float | np.ndarray | torch.Tensor) -> GaussianPrior:
        """Moment-match the aggregate z_1: mean of μ_1, covariance Cov(μ_1) + diag(σ_1²).

        Args:
            mu_1: encoder means at t = 1 of the training images, ``[N, d]`` (N ≥ 2).
            sigma_1: σ at t = 1 (a number, or ``[d]`` for a per-dimension schedule).
        """
        mu = torch.as_tensor(mu_1).to(torch.float64)
        if mu.ndim != 2 or len(mu) < 2:
            raise ValueError(f"mu_1 must be [N >= 2, d], got shape {tuple(mu.shape)}")
        cov = torch.cov(mu.T).reshape(mu.shape[1], mu.shape[1])
        if np.ndim(sigma_1) == 0:
            cov = cov + float(sigma_1) ** 2 * torch.eye(mu.shape[1], dtype=torch.float64)
        else:
            cov = cov + torch.diag(torch.as_tensor(np.asarray(sigma_1), dtype=torch.float64) ** 2)
        return cls(mean=mu.mean(0).float(), scale_tril=torch.linalg.cholesky(cov).float())

    @classmethod
    def from_cache(cls, cache: LatentCache) -> GaussianPrior:
        """:meth:`fit` on a latent cache: the training rows' μ at its last level (t = 1) and its
        σ_1 — the start the sample rule, the bundle and the benchmarks all use."""
        mu_1 = torch.as_tensor(cache.level(cache.num_levels - 1))
        return cls.fit(mu_1[cache.rows("train")], cache.sigma_1)

    @property
    def cov(self) -> torch.Tensor:
        return self.scale_tril @ self.scale_tril.T

    def transform(self, xi: torch.Tensor) -> torch.Tensor:
        """mean + L ξ for standard normal rows ξ ``[N, d]``."""
        return self.mean.to(xi) + xi @ self.scale_tril.to(xi).T


# --------------------------------------------------------------------------- seeded noise


def _stream_seed(seed: int, block: int) -> int:
    state = np.random.SeedSequence(seed, spawn_key=(block,)).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1  # < 2**63


class BlockNoise:
    """Gaussian noise for rows [start, stop) of a sample set, independent of how it is batched.

    Row i always takes row ``i % NOISE_BLOCK`` of each draw from stream ``i // NOISE_BLOCK``
    (a generator seeded from ``(seed, stream)``), so a sample's noise depends only on the seed
    and its index. Each call returns the next draw ``[stop - start, dim]``.
    """

    def __init__(self, seed: int, start: int, stop: int, dim: int, device: torch.device) -> None:
        self.dim, self.device = dim, device
        self.parts: list[tuple[torch.Generator, int, int]] = []
        for block in range(start // NOISE_BLOCK, (stop - 1) // NOISE_BLOCK + 1):
            gen = torch.Generator(device=device)
            gen.manual_seed(_stream_seed(seed, block))
            lo = max(start, block * NOISE_BLOCK) - block * NOISE_BLOCK
            hi = min(stop, (block + 1) * NOISE_BLOCK) - block * NOISE_BLOCK
            self.parts.append((gen, lo, hi))

    def __call__(self) -> torch.Tensor:
        draws = [
            torch.randn(NOISE_BLOCK, self.dim, generator=gen, device=self.device)[lo:hi]
            for gen, lo, hi in self.parts
        ]
        return torch.cat(draws) if len(draws) > 1 else draws[0]


# --------------------------------------------------------------------------- public API


def as_runtime(device: torch.device | str | Runtime) -> Runtime:
    """A :class:`Runtime` (no autocast) for a plain device; a Runtime is returned as is."""
    if isinstance(device, Runtime):
        return device
    dev = torch.device(device)
    return Runtime(device=dev, amp_dtype=None, pin_memory=dev.type == "cuda")


def eval_context(fn: object) -> contextlib.AbstractContextManager:
    """Eval mode for a module, or for the module of a bound method (``vae.decode_image``)."""
    module = fn if isinstance(fn, torch.nn.Module) else getattr(fn, "__self__", None)
    return eval_mode(module) if isinstance(module, torch.nn.Module) else contextlib.nullcontext()


def sample_latents(
    model: Denoiser,
    sigma: SigmaFn | None,
    settings: SamplerSettings,
    *,
    n: int | None = None,
    dim: int | None = None,
    device: torch.device | str | Runtime = "cpu",
    t_start: float = 1.0,
    z_start: torch.Tensor | None = None,
    start: StartMode = "noise_free",
    inversion_steps: int = 1,
    final_mean: bool = False,
    prior: GaussianPrior | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Draw latents by running the reverse process from ``t_start`` to 0.

    Without ``z_start`` the chain starts from the prior: z_1 ~ N(0, σ_1² I), or ``prior`` when
    given (e.g. :meth:`GaussianPrior.fit`; not for ``standard_ldm``, whose start
    N(0, (1 − ᾱ_1) I) in normalised units is exact). With ``z_start`` ``[n, d]`` (real latent
    units, the clean mean at ``t_start``, e.g. μ_{t_b}(x) for sharpening) it starts as ``start``
    says (:data:`START_MODES`; ``inversion`` takes ``inversion_steps`` extra network evaluations).

    Args:
        model: ``model(z [N, d], t [N]) -> (eps_hat, delta_hat | None)``.
        sigma: the VAE's σ(t) (ignored by ``standard_ldm``).
        settings: variant, steps, eta, solver, spacing, seed and batch_size (rows per forward
            pass; bounds memory, results do not depend on it).
        n: number of samples (defaults to ``len(z_start)``).
        dim: latent size; defaults to ``model.latent_dim``; not needed with ``z_start``.
        device: a device or a :class:`Runtime` (whose autocast is used).
        final_mean: return μ̂_0 instead of z_0.
        progress: show a tqdm bar (silent when not a TTY).

    Returns:
        Latents ``[n, d]`` float32 on the CPU, in real latent units, ready for D(z, 0).
    """
    runtime = as_runtime(device)
    dev = runtime.device
    variant, solver, batch_size = settings.variant, settings.solver, settings.batch_size
    if prior is not None and variant == "standard_ldm":
        raise ValueError(
            "variant standard_ldm starts from its exact N(0, I) prior; do not pass a fitted prior"
        )
    process = make_process(variant, sigma, model)
    if z_start is not None:
        if z_start.ndim != 2:
            raise ValueError(f"z_start must be [n, d], got shape {tuple(z_start.shape)}")
        if n is not None and n != len(z_start):
            raise ValueError(f"n={n} but z_start has {len(z_start)} rows")
        n, dim = z_start.shape
    else:
        dim = dim if dim is not None else getattr(model, "latent_dim", None)
        if n is None or dim is None:
            raise ValueError("sample_latents needs n and dim (or model.latent_dim) without z_start")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if start not in START_MODES:
        raise ValueError(f"unknown start {start!r}; choose one of {', '.join(START_MODES)}")
    if prior is not None:
        if z_start is not None or t_start != 1.0:
            raise ValueError("a prior is the start at t = 1: do not combine it with z_start/t_start")
        if prior.mean.shape != (dim,):
            raise ValueError(f"prior of dimension {tuple(prior.mean.shape)} for latents of size {dim}")
    times = time_grid(settings.steps, settings.spacing, t_start=t_start, t_end=0.0,
                      logsnr=process.logsnr)
    sigma_grid = process.sigma(times)
    # floats for a shared ς; [d] rows on the device for a per-dimension one (vae.sigma_stagger)
    sigmas = sigma_grid.tolist() if sigma_grid.ndim == 1 else list(sigma_grid.to(dev, torch.float32))
    times_l = times.tolist()
    predict = make_predictor(model, process)
    n_batches = math.ceil(n / batch_size) if n else 0
    n_steps = len(times_l) - 1
    out = torch.empty(n, dim, dtype=torch.float32)
    started = time.perf_counter()
    bar = tqdm(
        total=n_batches * n_steps,
        desc=f"sample {variant}/{solver}",
        unit="step",
        disable=None if progress else True,
        leave=False,
    )
    with torch.no_grad(), eval_context(model), bar:
        for b in range(n_batches):
            lo, hi = b * batch_size, min(n, (b + 1) * batch_size)
            noise = BlockNoise(settings.seed, lo, hi, dim, dev)
            if z_start is None:
                x = sigmas[0] * noise() if prior is None else prior.transform(noise())
            else:
                x = process.from_latent(z_start[lo:hi].to(dev, torch.float32))
                if start == "forward" and _any_positive(sigmas[0]):
                    x = x + sigmas[0] * noise()
                elif start == "inversion" and _any_positive(sigmas[0]):
                    x = invert_start(predict, x, times_l[0], sigmas[0], inversion_steps)
            x = run_sampler(
                predict,
                x,
                times_l,
                sigmas,
                eta=settings.eta,
                solver=solver,
                noise=noise,
                final_mean=final_mean,
                callback=lambda *_: bar.update(1),
            )
            z = process.to_latent(x).float()
            if not torch.isfinite(z).all():
                raise FloatingPointError(
                    f"sampling produced non-finite latents (variant {variant}, {settings.steps} steps, "
                    f"solver {solver}); check the denoiser checkpoint and the sigma schedule"
                )
            out[lo:hi] = z.cpu()
    logger.info(
        "sampled %d latents: variant=%s solver=%s eta=%g steps=%d spacing=%s t_start=%g prior=%s "
        "in %.2fs",
        n,
        variant,
        solver,
        settings.eta,
        n_steps,
        settings.spacing,
        t_start,
        "standard" if prior is None else "fitted",
        time.perf_counter() - started,
    )
    return out


def decode_latents(
    decoder: Decoder,
    z: torch.Tensor,
    *,
    t: float = 0.0,
    batch_size: int,
    device: torch.device | str | Runtime = "cpu",
    as_uint8: bool = False,
    progress: bool = True,
) -> torch.Tensor:
    """Decode latents ``[N, d]`` at level ``t`` in batches -> images ``[N, C, H, W]`` on the CPU.

    Images are float32 in [0, 1], or uint8 in [0, 255] with ``as_uint8`` (4x less memory).
    """
    runtime = as_runtime(device)
    chunks: list[torch.Tensor] = []
    with torch.no_grad(), eval_context(decoder):
        for lo in tqdm(
            range(0, len(z), batch_size),
            desc="decode",
            disable=None if progress else True,
            leave=False,
        ):
            zb = z[lo : lo + batch_size].to(runtime.device, torch.float32)
            tb = torch.full((len(zb),), t, device=runtime.device, dtype=torch.float32)
            with runtime.autocast():
                img = decoder(zb, tb)
            img = img.float().clamp(0.0, 1.0).cpu()
            chunks.append(img.mul(255).round().to(torch.uint8) if as_uint8 else img)
    if not chunks:
        raise ValueError("nothing to decode: z is empty")
    return torch.cat(chunks)


def timed(
    fn: Callable[[], T], *, n_items: int, device: torch.device | str | Runtime = "cpu"
) -> tuple[T, dict[str, float]]:
    """Run ``fn()`` and time it (synchronising CUDA); returns (result, {seconds, items_per_s})."""
    dev = as_runtime(device).device
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    start = time.perf_counter()
    result = fn()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - start
    return result, {
        "seconds": seconds,
        "items_per_s": n_items / seconds if seconds > 0 else float("inf"),
    }


@dataclass(frozen=True)
class SampleOutput:
    """Result of :func:`sample_run`: latents ``[n, d]``, images ``[n, C, H, W]`` (uint8) or None,
    and a timing dict (``samples_per_s`` etc., for ``timing.json``)."""

    latents: torch.Tensor
    images: torch.Tensor | None
    timing: dict[str, float | int | str]


def sample_run(
    run: SampleRunConfig,
    model: Denoiser,
    sigma: SigmaFn | None,
    *,
    dim: int | None = None,
    device: torch.device | str | Runtime = "cpu",
    decoder: Decoder | None = None,
    decode_batch_size: int | None = None,
    prior: GaussianPrior | None = None,
    progress: bool = True,
) -> SampleOutput:
    """One ``sampling.runs`` entry: sample ``run.n_samples`` latents, time it, optionally decode.

    ``run`` is the entry's sampler settings plus its own keys. ``prior`` is the fitted start
    distribution; required when ``run.uses_fitted_prior`` (:meth:`GaussianPrior.fit` on the
    cached t = 1 latents). The timing covers the sampler only (``samples_per_s``); decoding is
    timed separately. The record (``SampleOutput.timing``) holds the run's name, its sampler
    settings as they are, the start prior actually used, the sample count, the network
    evaluations per sample and the timings.
    """
    if run.uses_fitted_prior and prior is None:
        raise ValueError(
            f"sampling run {run.name} has prior: fitted; pass GaussianPrior.fit(mu_1, sigma_1) of "
            "the cached t = 1 latents (or set prior: standard)"
        )
    latents, timing = timed(
        lambda: sample_latents(
            model,
            sigma,
            run,
            n=run.n_samples,
            dim=dim,
            device=device,
            final_mean=run.final_mean,
            prior=prior if run.uses_fitted_prior else None,
            progress=progress,
        ),
        n_items=run.n_samples,
        device=device,
    )
    record: dict[str, float | int | str] = {
        "run": run.name,
        **to_dict(run.sampler()),
        "final_mean": run.final_mean,
        "prior": "fitted" if run.uses_fitted_prior else "standard",
        "n_samples": run.n_samples,
        "nfe_per_sample": nfe_per_sample(run.steps, run.solver),
        "sample_seconds": timing["seconds"],
        "samples_per_s": timing["items_per_s"],
        "device": str(as_runtime(device).device),
    }
    images = None
    if decoder is not None:
        images, dec_timing = timed(
            lambda: decode_latents(
                decoder,
                latents,
                batch_size=decode_batch_size or run.batch_size,
                device=device,
                as_uint8=True,
                progress=progress,
            ),
            n_items=run.n_samples,
            device=device,
        )
        record["decode_seconds"] = dec_timing["seconds"]
    logger.info(
        "run %s: %.1f samples/s (%d NFE per sample)",
        run.name,
        record["samples_per_s"],
        record["nfe_per_sample"],
    )
    return SampleOutput(latents=latents, images=images, timing=record)


def start_mismatch(mu_1: torch.Tensor, sigma_1: float | np.ndarray) -> dict[str, float]:
    """How far the cached t=1 latents are from the sampler's start N(0, σ_1² I).

    The true z_1 = μ_1(x) + σ_1 ε has per-dimension mean m_j and variance v_j + σ_1² (v_j the
    variance of μ_1 over the data). Returns the RMS of m, the mean variance ratio
    (v + σ_1²)/σ_1², and KL(N(m, diag(v + σ_1²)) || N(0, σ_1² I)) per dimension.

    Args:
        mu_1: cached encoder means at t = 1, ``[N, d]``.
        sigma_1: σ at t = 1 (a number, or ``[d]`` for a per-dimension schedule).
    """
    mu = mu_1.to(torch.float64)
    m, v = mu.mean(0), mu.var(0, unbiased=False)
    s2 = float(sigma_1) ** 2 if np.ndim(sigma_1) == 0 else torch.as_tensor(np.asarray(sigma_1), dtype=torch.float64) ** 2
    ratio = (v + s2) / s2
    kl = 0.5 * (ratio + m**2 / s2 - 1.0 - torch.log(ratio))
    return {
        "start_mean_rms": float(m.pow(2).mean().sqrt()),
        "start_var_ratio": float(ratio.mean()),
        "start_kl_per_dim": float(kl.mean()),
    }
