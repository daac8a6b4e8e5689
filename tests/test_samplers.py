"""Samplers against analytic oracles: convergence order, exact marginals, DDIM, seeding, config.

The oracles stand in for the denoiser. The latent path is μ_t(x) = a(t)·x + b(t) with
non-linear a, b and a smooth σ_t:

- *path oracle*: one known trajectory z_t = μ_t(x) + σ_t ε0; ε̂ = ε0 and Δ̂ = dμ/dt of the path
  through μ̂ = z − σ_t ε0. The η = 0 sampler is then Euler on the μ path (its σ part is exact).
- *Gaussian oracle*: x ~ N(m, s²); ε̂ = E[ε | z_t] and Δ̂ = E[dμ_t/dt | z_t] in closed form, so
  the η = 0 sampler integrates the probability-flow ODE, whose solution is an affine map.
- *point-mass oracle*: a single x, ε̂ = (z − μ_t)/σ_t, Δ̂ = μ'_t: the ancestral chain must have
  the marginals N(μ_t, σ_t²) at every visited t.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from multibeta.core.schedules import SigmaTable, cosine_alpha_bar
from multibeta.core.config import from_section, to_dict
from multibeta.sampling.config import SamplingConfig
from multibeta.sampling.samplers import (
    NOISE_BLOCK,
    BlockNoise,
    GaussianPrior,
    decode_latents,
    generalized_step,
    invert_start,
    make_process,
    nfe_per_sample,
    run_sampler,
    sample_latents,
    sample_run,
    start_mismatch,
)
from multibeta.sampling.settings import SamplerSettings
from multibeta.core.logsnr import LogSnrTable
from multibeta.sampling.spacing import level_steps, time_grid
from multibeta.workflow.config import ConfigError, section_defaults

F64 = torch.float64


def a_fn(t: torch.Tensor) -> torch.Tensor:
    return torch.exp(-1.5 * t) + 0.2 * t**2


def da_fn(t: torch.Tensor) -> torch.Tensor:
    return -1.5 * torch.exp(-1.5 * t) + 0.4 * t


def b_fn(t: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.sin(3 * t)


def db_fn(t: torch.Tensor) -> torch.Tensor:
    return 1.5 * torch.cos(3 * t)


def sigma_fn(t: torch.Tensor) -> torch.Tensor:
    return 0.02 + 0.98 * torch.sin(math.pi * t / 2)


def at(fn, t: float) -> torch.Tensor:
    return fn(torch.tensor(t, dtype=F64))


def settings(**overrides) -> SamplerSettings:
    """Deterministic Euler settings of the tests, with ``overrides``."""
    base = dict(
        variant="multibeta", steps=10, eta=0.0, solver="euler", spacing="uniform", seed=0,
        batch_size=64,
    )
    return SamplerSettings(**{**base, **overrides})


class PathOracle:
    """ε̂ = ε0 (the true noise of the trajectory), Δ̂ = dμ/dt of the path through z − σ ε0."""

    def __init__(self, eps0: torch.Tensor) -> None:
        self.eps0 = eps0

    def __call__(self, z: torch.Tensor, t: torch.Tensor):
        tt = t.to(F64)[:, None]
        mu = z.to(F64) - sigma_fn(tt) * self.eps0
        x_hat = (mu - b_fn(tt)) / a_fn(tt)
        return self.eps0.float(), (da_fn(tt) * x_hat + db_fn(tt)).float()


class GaussianOracle:
    """Posterior means E[ε | z_t], E[Δ | z_t] for x ~ N(m, s²) per dimension."""

    def __init__(self, m: float, s: float) -> None:
        self.m, self.s2 = m, s * s

    def __call__(self, z: torch.Tensor, t: torch.Tensor):
        tt = t.to(F64)[:, None]
        sig, a, b = sigma_fn(tt), a_fn(tt), b_fn(tt)
        var = a**2 * self.s2 + sig**2
        r = z.to(F64) - a * self.m - b
        eps = sig * r / var
        x_mean = self.m + a * self.s2 * r / var
        return eps.float(), (da_fn(tt) * x_mean + db_fn(tt)).float()

    def logsnr_table(self) -> LogSnrTable:
        """λ(t) = log p(t) − 2 log σ_t with the signal power p = E[μ_t²] of this data."""
        t = torch.linspace(0.0, 1.0, 2001, dtype=F64)
        a, b = a_fn(t), b_fn(t)
        power = (a * self.m + b) ** 2 + a**2 * self.s2
        return LogSnrTable(t.numpy(), (torch.log(power) - 2 * torch.log(sigma_fn(t))).numpy())

    def flow_map(self, z1: torch.Tensor) -> torch.Tensor:
        """Exact probability-flow solution z_0 for a start z_1."""
        var0 = at(a_fn, 0.0) ** 2 * self.s2 + at(sigma_fn, 0.0) ** 2
        var1 = at(a_fn, 1.0) ** 2 * self.s2 + at(sigma_fn, 1.0) ** 2
        mean0 = at(a_fn, 0.0) * self.m + at(b_fn, 0.0)
        mean1 = at(a_fn, 1.0) * self.m + at(b_fn, 1.0)
        return mean0 + torch.sqrt(var0 / var1) * (z1.to(F64) - mean1)


def slope(steps: list[int], errors: list[float]) -> float:
    return float(np.polyfit(np.log(steps), np.log(errors), 1)[0])


def flow_errors(oracle, sigma, z1: torch.Tensor, exact: torch.Tensor, steps: list[int], **overrides) -> list[float]:
    """Max error of the sampler's z_0 against the exact flow ``exact`` from ``z1``, per step count."""
    errors = []
    for n in steps:
        z0 = sample_latents(oracle, sigma, settings(steps=n, **overrides), z_start=z1)
        errors.append(float((z0.to(F64) - exact).abs().max()))
    return errors


# --------------------------------------------------------------------------- spacing


def test_time_grid_end_points_and_density() -> None:
    uni = time_grid(10, "uniform")
    quad = time_grid(10, "quadratic", t_start=0.5)
    assert uni[0] == 1.0 and uni[-1] == 0.0 and len(uni) == 11
    assert torch.allclose(torch.diff(uni), torch.full((10,), -0.1, dtype=F64))
    assert quad[0] == 0.5 and quad[-1] == 0.0 and torch.all(torch.diff(quad) < 0)
    assert -torch.diff(quad)[-1] < -torch.diff(quad)[0]  # denser near t = 0
    assert time_grid(5, "uniform", t_start=0.0).tolist() == [0.0]
    assert level_steps(100, 0.25) == 25 and level_steps(100, 0.001) == 1
    with pytest.raises(ValueError, match="spacing"):
        time_grid(10, "cubic")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- oracle convergence


@pytest.mark.parametrize(("solver", "order"), [("euler", 1.0), ("heun", 2.0)])
def test_path_oracle_convergence_order(solver: str, order: float) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(16, 4, generator=gen, dtype=F64)
    eps0 = torch.randn(16, 4, generator=gen, dtype=F64)
    z1 = (at(a_fn, 1.0) * x + at(b_fn, 1.0) + at(sigma_fn, 1.0) * eps0).float()
    target = at(a_fn, 0.0) * x + at(b_fn, 0.0)
    steps = [8, 16, 32, 64]
    errors = []
    for n in steps:
        mu0 = sample_latents(
            PathOracle(eps0), sigma_fn, settings(steps=n, solver=solver), z_start=z1,
            final_mean=True, progress=False,
        )
        errors.append(float((mu0.to(F64) - target).abs().max()))
    assert abs(slope(steps, errors) - (-order)) < 0.15, errors
    fine = sample_latents(
        PathOracle(eps0), sigma_fn, settings(steps=1000, solver=solver), z_start=z1,
        final_mean=True, progress=False,
    )
    assert float((fine.to(F64) - target).abs().max()) < (1e-2 if solver == "euler" else 1e-4)


@pytest.mark.parametrize("spacing", ["uniform", "logsnr", "cosine", "edm"])
@pytest.mark.parametrize(("solver", "order"), [("euler", 1.0), ("heun", 2.0)])
def test_gaussian_probability_flow_order(solver: str, order: float, spacing: str) -> None:
    """The exact flow is reached at the solver's order on every grid (the λ-based grids read
    the oracle's λ(t) table, as the sampler reads a denoiser's)."""
    oracle = GaussianOracle(m=0.7, s=0.5)
    z1 = torch.randn(32, 4, generator=torch.Generator().manual_seed(2))
    exact = oracle.flow_map(z1)
    steps = [8, 16, 32, 64]
    errors = flow_errors(oracle, sigma_fn, z1, exact, steps, solver=solver, spacing=spacing)
    assert abs(slope(steps, errors) - (-order)) < 0.2, errors
    fine = sample_latents(oracle, sigma_fn, settings(steps=500, solver=solver, spacing=spacing),
                          z_start=z1)
    assert float((fine.to(F64) - exact).abs().max()) < (1e-2 if solver == "euler" else 1e-4)


def test_noise_only_ignores_delta_and_solves_constant_mean_flow() -> None:
    m, s2 = -0.3, 0.4**2

    def oracle(z: torch.Tensor, t: torch.Tensor):
        sig = sigma_fn(t.to(F64))[:, None]
        eps = sig * (z.to(F64) - m) / (s2 + sig**2)
        return eps.float(), torch.full_like(z, 1e3)  # a garbage Δ that must be ignored

    z1 = torch.randn(8, 3, generator=torch.Generator().manual_seed(3))
    exact = m + (z1.to(F64) - m) * math.sqrt(
        (s2 + at(sigma_fn, 0.0) ** 2) / (s2 + at(sigma_fn, 1.0) ** 2)
    )
    z0 = sample_latents(
        oracle, sigma_fn, settings(variant="noise_only", steps=200, solver="heun"), z_start=z1
    )
    assert torch.allclose(z0.to(F64), exact, atol=1e-4)


def test_inversion_start_is_the_gaussian_fixed_point() -> None:
    """For Gaussian data N(c, s²) and the exact ε̂, the inversion of a mean g at level ς is
    x* = c + (g − c)(s² + ς²)/s² (its predicted mean is g), reached at the rate ς²/(s² + ς²)."""
    c, s2, sig = 0.2, 0.5**2, 0.8

    def predict(x: torch.Tensor, t: float):
        return (sig * (x.to(F64) - c) / (s2 + sig**2)).to(x.dtype), None

    g = torch.randn(16, 3, generator=torch.Generator().manual_seed(5), dtype=F64)
    exact = c + (g - c) * (s2 + sig**2) / s2
    assert torch.equal(invert_start(predict, g, 0.5, sig, 0), g)
    errors = [float((invert_start(predict, g, 0.5, sig, k) - exact).abs().max()) for k in (1, 2, 3)]
    rate = sig**2 / (s2 + sig**2)
    assert errors[1] / errors[0] == pytest.approx(rate, rel=1e-9)
    assert errors[2] / errors[1] == pytest.approx(rate, rel=1e-9)
    x = invert_start(predict, g, 0.5, sig, 200)
    assert torch.allclose(x, exact, atol=1e-10)
    eps, _ = predict(x, 0.5)
    assert torch.allclose(x - sig * eps, g, atol=1e-10)  # the predicted clean part is g
    with pytest.raises(ValueError, match="iterations"):
        invert_start(predict, g, 0.5, sig, -1)


def test_sample_latents_start_modes() -> None:
    def oracle(z: torch.Tensor, t: torch.Tensor):
        sig = sigma_fn(t.to(F64))[:, None]
        return (sig * z.to(F64) / (0.25 + sig**2)).float(), torch.zeros_like(z)

    z = torch.randn(6, 3, generator=torch.Generator().manual_seed(2))
    run = {k: sample_latents(oracle, sigma_fn, settings(steps=20, seed=0), t_start=0.6, z_start=z,
                             start=k, progress=False) for k in ("noise_free", "inversion")}
    again = sample_latents(oracle, sigma_fn, settings(steps=20, seed=7), t_start=0.6, z_start=z,
                           start="inversion", progress=False)
    assert torch.equal(run["inversion"], again)  # deterministic: no noise drawn
    assert not torch.allclose(run["inversion"], run["noise_free"])
    # the inversion keeps more of the start's spread than the noise-free chain, which shrinks it
    assert run["inversion"].norm() > run["noise_free"].norm()
    with pytest.raises(ValueError, match="unknown start"):
        sample_latents(oracle, sigma_fn, settings(steps=5), t_start=0.6, z_start=z, start="nope")


# --------------------------------------------------------------------------- ancestral marginals


def point_mass_oracle(x: torch.Tensor):
    def mu(t: torch.Tensor) -> torch.Tensor:
        return torch.cos(math.pi * t / 2)[:, None] * x  # μ_1 = 0: the prior start is exact

    def oracle(z: torch.Tensor, t: torch.Tensor):
        tt = t.to(F64)
        eps = (z.to(F64) - mu(tt)) / sigma_fn(tt)[:, None]
        delta = -math.pi / 2 * torch.sin(math.pi * tt / 2)[:, None] * x
        return eps.float(), delta.float()

    return oracle, mu


def test_ancestral_marginals_at_every_visited_level() -> None:
    x = torch.tensor([1.5, -0.5], dtype=F64)
    oracle, mu = point_mass_oracle(x)
    table = SigmaTable(
        np.linspace(0, 1, 1001), sigma_fn(torch.linspace(0, 1, 1001, dtype=F64)).numpy()
    )
    process = make_process("multibeta", table)
    times = time_grid(60, "quadratic").tolist()
    sigmas = process.sigma(torch.tensor(times, dtype=F64)).tolist()
    n = 6000
    noise = BlockNoise(seed=5, start=0, stop=n, dim=2, device=torch.device("cpu"))
    from multibeta.sampling.samplers import make_predictor

    predict = make_predictor(oracle, process)
    seen: list[tuple[float, torch.Tensor]] = []
    x1 = sigmas[0] * noise()
    run_sampler(
        predict,
        x1,
        times,
        sigmas,
        eta=1.0,
        solver="euler",
        noise=noise,
        callback=lambda i, s, xs: seen.append((s, xs.to(F64))),
    )
    assert len(seen) == 60
    for s, xs in seen:
        sig = float(table(torch.tensor(s, dtype=F64)))
        se_mean = sig / math.sqrt(n)
        mean_err = (xs.mean(0) - mu(torch.tensor([s], dtype=F64))[0]).abs()
        assert torch.all(mean_err < 5 * se_mean + 1e-3), (s, mean_err)
        ratio = xs.var(0) / sig**2
        assert torch.all((ratio - 1).abs() < 5 * math.sqrt(2 / n)), (s, ratio)


def test_ancestral_1000_steps_from_the_prior_matches_the_data() -> None:
    x = torch.tensor([0.8, -1.2, 0.0], dtype=F64)
    oracle, _ = point_mass_oracle(x)
    n = 3000
    z0 = sample_latents(
        oracle, sigma_fn, settings(steps=1000, eta=1.0, batch_size=n), n=n, dim=3
    ).to(F64)
    sig0 = float(at(sigma_fn, 0.0))
    assert torch.all((z0.mean(0) - x).abs() < 5 * sig0 / math.sqrt(n) + 1e-3)
    assert torch.all((z0.std(0) / sig0 - 1).abs() < 0.1)


def test_ancestral_gaussian_data_final_marginal() -> None:
    oracle = GaussianOracle(m=0.7, s=0.5)
    n, d = 4000, 2
    z1 = (
        at(a_fn, 1.0) * 0.7
        + at(b_fn, 1.0)
        + torch.sqrt(at(a_fn, 1.0) ** 2 * 0.25 + at(sigma_fn, 1.0) ** 2)
        * torch.randn(n, d, dtype=F64)
    )
    z0 = sample_latents(
        oracle, sigma_fn, settings(steps=300, eta=1.0, batch_size=n), z_start=z1.float()
    ).to(F64)
    mean0 = float(at(a_fn, 0.0) * 0.7 + at(b_fn, 0.0))
    std0 = float(torch.sqrt(at(a_fn, 0.0) ** 2 * 0.25 + at(sigma_fn, 0.0) ** 2))
    assert abs(float(z0.mean()) - mean0) < 5 * std0 / math.sqrt(n * d) + 0.01
    assert abs(float(z0.std()) / std0 - 1) < 0.05


def test_stochastic_heun_marginals_at_every_visited_level() -> None:
    """Heun with η > 0 (averaged predictions taking the η step) keeps the point-mass chain's
    marginals N(μ_t, σ_t²) at every visited t before the last step (which is Euler, first
    order in Δ by design), on a coarse grid of 8 steps."""
    x = torch.tensor([0.8, -1.2, 0.0], dtype=F64)
    oracle, mu = point_mass_oracle(x)
    n = 4000
    z1 = (mu(torch.tensor([1.0], dtype=F64))[0] + at(sigma_fn, 1.0) * torch.randn(n, 3, dtype=F64)).float()
    seen: dict[float, torch.Tensor] = {}
    times = time_grid(8, "uniform").tolist()
    process = make_process("multibeta", sigma_fn)
    predict = lambda z, t: oracle(z, torch.full((len(z),), t, dtype=torch.float32))  # noqa: E731
    noise_gen = torch.Generator().manual_seed(3)
    run_sampler(predict, z1.to(F64), times, [process.sigma_at(t) for t in times], eta=0.7, solver="heun",
                noise=lambda: torch.randn(n, 3, generator=noise_gen, dtype=F64),
                callback=lambda i, s, xs: seen.__setitem__(s, xs.clone()))
    assert len(seen) == 8
    for s, xs in list(seen.items())[:-1]:
        sig = float(at(sigma_fn, s))
        mean_err = (xs.mean(0) - mu(torch.tensor([s], dtype=F64))[0]).abs()
        assert torch.all(mean_err < 5 * sig / math.sqrt(n) + 1e-3), (s, mean_err)
        ratio = xs.var(0) / sig**2
        assert torch.all((ratio - 1).abs() < 5 * math.sqrt(2 / n)), (s, ratio)


def test_stochastic_heun_reaches_the_gaussian_data_with_fewer_steps_than_euler() -> None:
    """On Gaussian data with the exact posterior-mean oracle the η = 0.5 Heun chain's final
    spread is much closer to the data's than the η = 0.5 Euler chain's at the same step count."""
    oracle = GaussianOracle(m=0.7, s=0.5)
    n, d, steps = 6000, 2, 25
    gen = torch.Generator().manual_seed(0)
    z1 = (at(a_fn, 1.0) * 0.7 + at(b_fn, 1.0)
          + torch.sqrt(at(a_fn, 1.0) ** 2 * 0.25 + at(sigma_fn, 1.0) ** 2) * torch.randn(n, d, generator=gen, dtype=F64))
    std0 = float(torch.sqrt(at(a_fn, 0.0) ** 2 * 0.25 + at(sigma_fn, 0.0) ** 2))
    mean0 = float(at(a_fn, 0.0) * 0.7 + at(b_fn, 0.0))
    spread, shift = {}, {}
    for solver in ("euler", "heun"):
        z0 = sample_latents(oracle, sigma_fn, settings(steps=steps, eta=0.5, solver=solver, batch_size=n),
                            z_start=z1.float(), progress=False).to(F64)
        spread[solver] = abs(float(z0.std()) / std0 - 1)
        shift[solver] = abs(float(z0.mean()) - mean0) / std0
    # measured: spread error 0.015 (heun) against 0.086 (euler), mean within 0.03 std for both
    assert spread["heun"] < 0.03 and spread["heun"] < 0.5 * spread["euler"], spread
    assert shift["heun"] < 0.05, shift


def test_generalized_step_noise_scale() -> None:
    x, eps, xi = torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1)
    out = generalized_step(x, eps, None, t=1.0, s=0.5, sigma_t=1.0, sigma_s=0.6, eta=1.0, noise=xi)
    c = 0.6 * math.sqrt(1 - 0.36)
    assert out.item() == pytest.approx(-1.0 + math.sqrt(0.36 - c * c) + c, rel=1e-6)
    with pytest.raises(ValueError, match="noise"):
        generalized_step(x, eps, None, t=1.0, s=0.5, sigma_t=1.0, sigma_s=0.6, eta=1.0)


# --------------------------------------------------------------------------- standard_ldm


def test_standard_ldm_step_is_textbook_ddim() -> None:
    gen = torch.Generator().manual_seed(4)
    z_t, eps, xi = (torch.randn(5, 3, generator=gen, dtype=F64) for _ in range(3))
    t, s, eta = 0.7, 0.4, 0.6
    ab_t, ab_s = (float(cosine_alpha_bar(torch.tensor(v, dtype=F64))) for v in (t, s))
    x0 = (z_t - math.sqrt(1 - ab_t) * eps) / math.sqrt(ab_t)
    c = eta * math.sqrt((1 - ab_s) / (1 - ab_t)) * math.sqrt(1 - ab_t / ab_s)
    ddim = math.sqrt(ab_s) * x0 + math.sqrt(1 - ab_s - c * c) * eps + c * xi
    proc = make_process(
        "standard_ldm",
        None,
        type("M", (), {"latent_mean": torch.zeros(3), "latent_std": torch.ones(3)})(),
    )
    ours = generalized_step(
        z_t / proc.scale_at(t),
        eps,
        None,
        t=t,
        s=s,
        sigma_t=proc.sigma_at(t),
        sigma_s=proc.sigma_at(s),
        eta=eta,
        noise=xi,
    ) * proc.scale_at(s)
    assert torch.allclose(ours, ddim, atol=1e-10)


class LdmOracle(torch.nn.Module):
    """Posterior-mean ε for normalised z_0 ~ N(m, s²) under the cosine schedule."""

    def __init__(self, m: float, s: float, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.m, self.s2 = m, s * s
        self.register_buffer("latent_mean", mean)
        self.register_buffer("latent_std", std)

    def forward(self, z: torch.Tensor, t: torch.Tensor):
        ab = cosine_alpha_bar(t.to(F64))[:, None]
        eps = torch.sqrt(1 - ab) * (z.to(F64) - torch.sqrt(ab) * self.m) / (ab * self.s2 + 1 - ab)
        return eps.float(), None


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_standard_ldm_samples_the_data_distribution(solver: str) -> None:
    mean, std = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 3.0])
    model = LdmOracle(m=0.3, s=0.8, mean=mean, std=std)
    n = 4000
    z = sample_latents(
        model, None, settings(variant="standard_ldm", steps=100, solver=solver, batch_size=n),
        n=n, dim=2,
    ).to(F64)
    normed = (z - mean.to(F64)) / std.to(F64)
    assert torch.all((normed.mean(0) - 0.3).abs() < 5 * 0.8 / math.sqrt(n) + 0.01)
    assert torch.all((normed.std(0) / 0.8 - 1).abs() < 0.05)


def test_standard_ldm_needs_normalisation_buffers() -> None:
    with pytest.raises(ValueError, match="latent_mean"):
        sample_latents(
            lambda z, t: (z, None), None, settings(variant="standard_ldm", steps=3), n=4, dim=2
        )


# --------------------------------------------------------------------------- seeding, batching


def toy_model(z: torch.Tensor, t: torch.Tensor):
    return 0.5 * z, -0.1 * z + t[:, None]


def test_same_seed_same_samples_independent_of_batch_size() -> None:
    n = NOISE_BLOCK + 44  # spans two noise streams
    def draw(n: int, batch_size: int, seed: int = 11) -> torch.Tensor:
        kw = settings(steps=5, eta=1.0, seed=seed, batch_size=batch_size)
        return sample_latents(toy_model, sigma_fn, kw, n=n, dim=3)

    ref = draw(n, n)
    for bs in (7, 100, 1000):
        assert torch.equal(draw(n, bs), ref)
    assert torch.equal(draw(10, 3), ref[:10])
    other = draw(n, n, seed=12)
    assert not torch.allclose(other, ref)
    assert torch.isfinite(ref).all() and ref.shape == (n, 3)


def test_deterministic_sampler_with_start_ignores_seed() -> None:
    z = torch.randn(6, 3)
    one = sample_latents(toy_model, sigma_fn, settings(steps=4, seed=1), z_start=z, t_start=0.5)
    two = sample_latents(toy_model, sigma_fn, settings(steps=4, seed=2), z_start=z, t_start=0.5)
    assert torch.equal(one, two)
    ident = sample_latents(toy_model, sigma_fn, settings(steps=4), z_start=z, t_start=0.0)
    assert torch.equal(ident, z)


def test_user_errors_are_explained() -> None:
    with pytest.raises(ValueError, match="Δ head"):
        sample_latents(lambda z, t: (z, None), sigma_fn, settings(steps=3), n=2, dim=3)
    with pytest.raises(ValueError, match="variant"):
        sample_latents(toy_model, sigma_fn, settings(variant="ddpm", steps=3), n=2, dim=3)
    with pytest.raises(FloatingPointError, match="non-finite"):
        sample_latents(lambda z, t: (z / 0.0, z), sigma_fn, settings(steps=3), n=2, dim=3)


# --------------------------------------------------------------------------- fitted start


def test_gaussian_prior_fit_matches_moments() -> None:
    gen = torch.Generator().manual_seed(0)
    mu_1 = torch.randn(20000, 2, generator=gen, dtype=F64) @ torch.tensor(
        [[1.0, 0.0], [0.6, 0.5]], dtype=F64
    ).T + torch.tensor([0.3, -1.0], dtype=F64)
    prior = GaussianPrior.fit(mu_1, sigma_1=0.8)
    expected_cov = torch.tensor([[1.0, 0.6], [0.6, 0.61]]) + 0.64 * torch.eye(2)
    torch.testing.assert_close(prior.mean, torch.tensor([0.3, -1.0]), atol=0.03, rtol=0)
    torch.testing.assert_close(prior.cov, expected_cov, atol=0.04, rtol=0)
    xi = torch.randn(50000, 2, generator=gen)
    z = prior.transform(xi)
    torch.testing.assert_close(torch.cov(z.T), prior.cov, atol=0.04, rtol=0)
    with pytest.raises(ValueError, match="N >= 2"):
        GaussianPrior.fit(torch.zeros(1, 2), sigma_1=1.0)


@pytest.mark.parametrize("start", ["fitted", "standard"])
def test_deterministic_sampler_from_fitted_prior_reaches_the_data(start: str) -> None:
    """With x ~ N(0.7, 2²) the encoder keeps information at t = 1 (a_1 = 0.42), so the true
    z_1 is wider than N(0, σ_1²). The exact probability-flow ODE (Gaussian oracle) reaches the
    t = 0 marginal from the fitted start and misses it from the standard one."""
    m, s = 0.7, 2.0
    oracle = GaussianOracle(m=m, s=s)
    x = m + s * torch.randn(20000, 1, generator=torch.Generator().manual_seed(1), dtype=F64)
    mu_1 = at(a_fn, 1.0) * x + at(b_fn, 1.0)
    prior = GaussianPrior.fit(mu_1, float(at(sigma_fn, 1.0))) if start == "fitted" else None
    n = 4000
    z0 = sample_latents(
        oracle, sigma_fn, settings(steps=100, solver="heun", batch_size=n), n=n, dim=1, prior=prior,
    ).to(F64)
    mean0 = float(at(a_fn, 0.0) * m + at(b_fn, 0.0))
    std0 = float(torch.sqrt(at(a_fn, 0.0) ** 2 * s**2 + at(sigma_fn, 0.0) ** 2))
    hits = abs(float(z0.mean()) - mean0) < 4 * std0 / math.sqrt(n) and abs(
        float(z0.std()) / std0 - 1
    ) < 0.05
    assert hits == (start == "fitted"), (float(z0.mean()), float(z0.std()), mean0, std0)


def test_fitted_prior_is_seeded_batch_independent_and_checked() -> None:
    prior = GaussianPrior.fit(torch.randn(100, 3, generator=torch.Generator().manual_seed(2)), 0.9)
    def kw(batch_size: int) -> SamplerSettings:
        return settings(steps=5, eta=1.0, seed=4, batch_size=batch_size)

    ref = sample_latents(toy_model, sigma_fn, kw(30), n=30, dim=3, prior=prior)
    same = sample_latents(toy_model, sigma_fn, kw(7), n=30, dim=3, prior=prior)
    assert torch.equal(ref, same)
    plain = sample_latents(toy_model, sigma_fn, kw(30), n=30, dim=3)
    assert not torch.allclose(ref, plain)
    with pytest.raises(ValueError, match="exact N"):
        sample_latents(toy_model, sigma_fn, settings(variant="standard_ldm", steps=2), n=2, dim=3,
                       prior=prior)
    with pytest.raises(ValueError, match="dimension"):
        sample_latents(toy_model, sigma_fn, settings(steps=2), n=2, dim=4, prior=prior)


# --------------------------------------------------------------------------- runs, decoding, config


def test_sample_run_decodes_and_times() -> None:
    runs = [{"name": "few", "steps": 4, "eta": 0.0, "solver": "heun", "n_samples": 9, "batch_size": 4}]
    cfg = sampling_config({"runs": runs})
    run = cfg.run("few")

    def decoder(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(z[:, :1, None, None].expand(-1, 1, 8, 8))

    assert run.prior == "fitted" and run.uses_fitted_prior  # the measured default
    with pytest.raises(ValueError, match="prior: fitted"):
        sample_run(run, toy_model, sigma_fn, dim=3, progress=False)
    prior = GaussianPrior.fit(torch.randn(50, 3), sigma_1=1.0)
    out = sample_run(
        run, toy_model, sigma_fn, dim=3, decoder=decoder, decode_batch_size=5, prior=prior,
        progress=False,
    )
    assert out.timing["prior"] == "fitted"
    assert out.latents.shape == (9, 3)
    assert (
        out.images is not None
        and out.images.shape == (9, 1, 8, 8)
        and out.images.dtype == torch.uint8
    )
    assert out.timing["nfe_per_sample"] == nfe_per_sample(4, "heun") == 7
    assert out.timing["samples_per_s"] > 0 and out.timing["run"] == "few"
    # the sampler's settings are recorded as they are, beside the run's own keys
    settings_record = to_dict(run.sampler())
    assert {k: out.timing[k] for k in settings_record} == settings_record
    assert settings_record == {"variant": "multibeta", "steps": 4, "eta": 0.0, "solver": "heun",
                               "spacing": "uniform", "seed": 0, "batch_size": 4}
    floats = decode_latents(decoder, out.latents, batch_size=4, progress=False)
    assert torch.equal(floats.mul(255).round().to(torch.uint8), out.images)


def sampling_config(overrides: dict | None = None) -> SamplingConfig:
    return from_section(SamplingConfig, section_defaults("sampling", overrides), "sampling")


def test_sampling_config_defaults_and_errors() -> None:
    cfg = sampling_config()
    first, second = cfg.runs[0], cfg.runs[1]
    assert (first.steps, first.eta, first.solver, first.variant) == (1000, 1.0, "euler", "multibeta")
    assert second.eta == 0.0 and second.steps <= 100
    stochastic_heun = sampling_config({"runs": [{"name": "h", "solver": "heun"}]}).runs[0]
    assert (stochastic_heun.solver, stochastic_heun.eta) == ("heun", 1.0)  # a run's default eta
    with pytest.raises(ConfigError, match=r"'sampling\.runs'.*unique"):
        sampling_config({"runs": [{"name": "a"}, {"name": "a"}]})
    with pytest.raises(ConfigError, match="runs.0.name"):
        section_defaults("sampling", {"runs": [{"name": "has space"}]})
    with pytest.raises(ConfigError, match="sharpen.variant"):
        section_defaults("sampling", {"sharpen": {"variant": "standard_ldm"}})


@pytest.mark.parametrize("part", ["sharpen", "traverse"])
def test_one_settings_type_and_check_in_every_section(part: str) -> None:
    """runs, sharpen and traverse share the sampler's keys (one schema, one type, one check),
    each with its own defaults."""
    cfg = sampling_config()
    section = getattr(cfg, part)
    assert isinstance(section, SamplerSettings) and isinstance(cfg.runs[0], SamplerSettings)
    assert (section.steps, section.eta, section.batch_size) == (100, 0.0, 256)
    assert (cfg.runs[0].steps, cfg.runs[0].eta, cfg.runs[0].batch_size) == (1000, 1.0, 1000)
    assert type(section.sampler()) is SamplerSettings
    assert to_dict(section.sampler()) == {k: to_dict(section)[k] for k in to_dict(section.sampler())}
    assert getattr(sampling_config({part: {"solver": "heun", "eta": 0.5}}), part).eta == 0.5  # stochastic Heun
    # the shared keys are validated (and read from command-line text) through the reference
    with pytest.raises(ConfigError, match=rf"invalid config at '{part}\.steps'"):
        section_defaults("sampling", {part: {"steps": 0}})
    assert section_defaults("sampling", {part: {"seed": "3"}})[part]["seed"] == 3
    # an unknown key is refused, naming the shared keys among the allowed ones
    with pytest.raises(ConfigError, match=r"'stepz' was unexpected.*Allowed keys here: .*seed, .*steps"):
        section_defaults("sampling", {part: {"stepz": 3}})


def test_start_mismatch_known_values() -> None:
    zero = start_mismatch(torch.zeros(100, 4), sigma_1=0.9)
    assert zero == pytest.approx(
        {"start_mean_rms": 0.0, "start_var_ratio": 1.0, "start_kl_per_dim": 0.0}
    )
    shifted = start_mismatch(torch.ones(100, 4), sigma_1=1.0)
    assert shifted["start_mean_rms"] == pytest.approx(1.0)
    assert shifted["start_kl_per_dim"] == pytest.approx(0.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_autocast_sampling_is_seeded_and_batch_independent() -> None:
    from multibeta.utils.device import Runtime

    runtime = Runtime(device=torch.device("cuda"), amp_dtype=torch.bfloat16, pin_memory=True)
    ref = sample_latents(
        toy_model, sigma_fn, settings(steps=20, eta=1.0, seed=3, batch_size=300), n=300, dim=3,
        device=runtime,
    )
    again = sample_latents(
        toy_model, sigma_fn, settings(steps=20, eta=1.0, seed=3, batch_size=64), n=300, dim=3,
        device=runtime,
    )
    assert ref.device.type == "cpu" and torch.isfinite(ref).all()
    assert torch.equal(ref, again)


# --------------------------------------------------------------------------- per-dimension σ
POWERS = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=F64)


def sigma_dims_fn(t: torch.Tensor) -> torch.Tensor:
    """A per-dimension σ ``t.shape + (4,)``: dimension j follows 0.02 + 0.98 sin(π t/2)^(j+1)."""
    return 0.02 + 0.98 * torch.sin(math.pi * t.to(F64) / 2)[..., None] ** POWERS


class DiagonalGaussianOracle(GaussianOracle):
    """:class:`GaussianOracle` with the per-dimension σ of :func:`sigma_dims_fn` (4 dimensions)."""

    def __call__(self, z: torch.Tensor, t: torch.Tensor):
        tt = t.to(F64)
        sig, a, b = sigma_dims_fn(tt), a_fn(tt)[:, None], b_fn(tt)[:, None]
        var = a**2 * self.s2 + sig**2
        r = z.to(F64) - a * self.m - b
        x_mean = self.m + a * self.s2 * r / var
        return (sig * r / var).float(), (da_fn(tt)[:, None] * x_mean + db_fn(tt)[:, None]).float()

    def flow_map(self, z1: torch.Tensor) -> torch.Tensor:
        ends = torch.tensor([0.0, 1.0], dtype=F64)
        a, b, sig = a_fn(ends), b_fn(ends), sigma_dims_fn(ends)  # [2], [2], [2, 4]
        var0, var1 = a[0] ** 2 * self.s2 + sig[0] ** 2, a[1] ** 2 * self.s2 + sig[1] ** 2
        return a[0] * self.m + b[0] + torch.sqrt(var0 / var1) * (z1.to(F64) - a[1] * self.m - b[1])


@pytest.mark.parametrize(("solver", "order"), [("euler", 1.0), ("heun", 2.0)])
def test_diagonal_sigma_probability_flow_order(solver: str, order: float) -> None:
    """With σ differing between dimensions every update acts per dimension: the exact flow
    (a different affine map in each dimension) is reached at the solver's order."""
    oracle = DiagonalGaussianOracle(m=0.7, s=0.5)
    z1 = torch.randn(32, 4, generator=torch.Generator().manual_seed(2))
    exact = oracle.flow_map(z1)
    steps = [8, 16, 32, 64]
    errors = flow_errors(oracle, sigma_dims_fn, z1, exact, steps, solver=solver)
    assert abs(slope(steps, errors) - (-order)) < 0.2, errors
    # stepping the same oracle with one shared σ_t misses the flow: the test sees the per-dimension σ
    assert flow_errors(oracle, sigma_fn, z1, exact, [64], solver=solver)[0] > 10 * errors[-1]


def test_diagonal_sigma_ancestral_marginals() -> None:
    """A point mass with a per-dimension σ: the ancestral chain has N(μ_t, diag σ_t²) at every level."""
    x = torch.tensor([1.5, -0.5, 0.8, 0.2], dtype=F64)
    grid = np.linspace(0, 1, 1001)
    table = SigmaTable(grid, sigma_dims_fn(torch.as_tensor(grid)).numpy())
    assert table.per_dimension

    def oracle(z: torch.Tensor, t: torch.Tensor):
        tt = t.to(F64)
        mu = torch.cos(math.pi * tt / 2)[:, None] * x
        delta = -math.pi / 2 * torch.sin(math.pi * tt / 2)[:, None] * x
        return ((z.to(F64) - mu) / table(tt)).float(), delta.float()

    n = 6000
    seen: list[tuple[float, torch.Tensor]] = []
    run = settings(steps=40, eta=1.0, spacing="quadratic", batch_size=n)
    from multibeta.sampling import samplers

    original = samplers.run_sampler

    def spy(*args, **kwargs):
        kwargs["callback"] = lambda i, s, xs: seen.append((s, xs.to(F64)))
        return original(*args, **kwargs)

    samplers.run_sampler = spy
    try:
        sample_latents(oracle, table, run, n=n, dim=4, progress=False)
    finally:
        samplers.run_sampler = original
    assert len(seen) == 40
    for s, xs in seen[:-1]:
        sig = table(torch.tensor([s], dtype=F64))[0]
        mean_err = (xs.mean(0) - math.cos(math.pi * s / 2) * x).abs()
        assert torch.all(mean_err < 5 * sig / math.sqrt(n) + 1e-3), (s, mean_err)
        ratio = xs.var(0) / sig**2
        assert torch.all((ratio - 1).abs() < 5 * math.sqrt(2 / n)), (s, ratio)


@pytest.mark.parametrize(("eta", "solver"), [(1.0, "euler"), (0.0, "heun")])
def test_a_per_dimension_table_with_equal_columns_samples_as_the_shared_one(eta: float, solver: str) -> None:
    grid = np.linspace(0, 1, 257)
    shared = sigma_fn(torch.as_tensor(grid)).numpy()
    tables = SigmaTable(grid, shared), SigmaTable(grid, np.repeat(shared[:, None], 3, axis=1))
    x = torch.tensor([0.8, -1.2, 0.3], dtype=F64)
    oracle, _ = point_mass_oracle(x)
    out = [sample_latents(oracle, table, settings(steps=50, eta=eta, solver=solver), n=300, dim=3,
                          progress=False) for table in tables]
    assert torch.allclose(out[0], out[1], atol=1e-5, rtol=0)


def test_gaussian_prior_and_start_mismatch_take_a_per_dimension_sigma() -> None:
    mu = torch.randn(500, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    sig = np.array([0.5, 1.0, 2.0])
    prior = GaussianPrior.fit(mu, sig)
    np.testing.assert_allclose(prior.cov.double().numpy(), (torch.cov(mu.T) + torch.diag(torch.tensor(sig) ** 2)).numpy(),
                               rtol=1e-5, atol=1e-5)
    same = start_mismatch(mu, np.array([0.7, 0.7, 0.7]))
    assert same == pytest.approx(start_mismatch(mu, 0.7))
