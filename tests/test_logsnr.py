"""Log-SNR coordinate: tables, training-time densities and sampler grids on analytic schedules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from multibeta.core.logsnr import (
    EDM_P_MEAN,
    EDM_P_STD,
    EDM_RHO,
    DensityTimes,
    LogSnrTable,
    cosine_logsnr,
    cosine_time,
    logsnr_grid,
)
from multibeta.core.schedules import SigmaTable
from multibeta.sampling.spacing import time_grid

F64 = torch.float64
LAM_HI, LAM_LO = 8.0, -4.0


def linear_table() -> LogSnrTable:
    """p = 1 and σ_t = exp((12 t − 8)/2): λ(t) = 8 − 12 t exactly (built as the trainer does)."""
    t = np.linspace(0.0, 1.0, 33)
    sigma = SigmaTable(np.linspace(0, 1, 4097), np.exp((12 * np.linspace(0, 1, 4097) - 8) / 2))
    return LogSnrTable.from_levels(t, np.ones_like(t), sigma)


def analytic_cosine_time(lam: np.ndarray, s: float = 0.008) -> np.ndarray:
    """Inverse of the cosine schedule's λ in closed form: ᾱ = sigmoid(λ), u from arccos."""
    ab = 1.0 / (1.0 + np.exp(-lam))
    phi0 = s / (1 + s) * math.pi / 2
    return (1 + s) * (2 / math.pi) * np.arccos(np.sqrt(ab) * math.cos(phi0)) - s


def test_table_is_the_linear_schedule_and_inverts() -> None:
    table = linear_table()
    t = np.linspace(0, 1, 101)
    assert np.allclose(table(t), LAM_HI - 12 * t, atol=1e-6)
    assert table.lambda_max == pytest.approx(LAM_HI) and table.lambda_min == pytest.approx(LAM_LO)
    assert np.allclose(table.time_of(LAM_HI - 12 * t), t, atol=1e-6)
    assert table.time_of(100.0) == 0.0 and table.time_of(-100.0) == 1.0  # clamped


def test_non_monotone_values_are_made_invertible() -> None:
    table = LogSnrTable(np.array([0.0, 0.5, 1.0]), np.array([2.0, 3.0, -1.0]))
    assert np.all(np.diff(table.logsnr) <= 0)
    assert table.time_of(2.0) == 0.0
    with pytest.raises(ValueError, match="finite"):
        LogSnrTable(np.array([0.0, 1.0]), np.array([np.inf, 0.0]))


def test_cosine_inverse_matches_closed_form() -> None:
    lam = np.linspace(-8, 8, 17)
    assert np.allclose(cosine_time(lam), analytic_cosine_time(lam), atol=1e-4)
    u = torch.linspace(0.05, 0.95, 10, dtype=F64)
    assert np.allclose(cosine_time(cosine_logsnr(u).numpy()), u.numpy(), atol=1e-4)


def test_cosine_density_has_the_cosine_quantiles() -> None:
    """Quantile v of the matched density is λ_cos at u_lo + v (u_hi − u_lo), u from the closed form."""
    table = linear_table()
    v = torch.tensor([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.999], dtype=F64)
    t = DensityTimes(table, "cosine")(v).numpy()
    u_lo, u_hi = analytic_cosine_time(np.array([LAM_HI, LAM_LO]))
    u = u_lo + v.numpy() * (u_hi - u_lo)
    ab = np.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2 / math.cos(0.008 / 1.008 * math.pi / 2) ** 2
    expected_lam = np.log(ab / (1 - ab))
    assert np.allclose(LAM_HI - 12 * t, expected_lam, atol=2e-3), (LAM_HI - 12 * t, expected_lam)


def test_edm_density_is_the_truncated_log_normal() -> None:
    table = linear_table()
    v = torch.tensor([0.05, 0.3, 0.5, 0.7, 0.95], dtype=F64)
    lam = LAM_HI - 12 * DensityTimes(table, "edm")(v).numpy()
    m, s = -2 * EDM_P_MEAN, 2 * EDM_P_STD
    expected = stats.truncnorm.ppf(1 - v.numpy(), (LAM_LO - m) / s, (LAM_HI - m) / s, loc=m, scale=s)
    assert np.allclose(lam, expected, atol=2e-3)


def test_uniform_density_is_the_identity_and_draws_keep_their_device_and_dtype() -> None:
    v = torch.rand(100, generator=torch.Generator().manual_seed(0))
    assert DensityTimes(linear_table(), "uniform")(v) is v
    t = DensityTimes(linear_table(), "cosine")(v)
    assert t.dtype == v.dtype and t.shape == v.shape
    assert torch.all(t[torch.argsort(v)].diff() >= 0)  # monotone: stratified stays stratified
    with pytest.raises(ValueError, match="time density"):
        DensityTimes(linear_table(), "laplace")  # type: ignore[arg-type]


def test_cosine_density_on_the_cosine_schedule_is_uniform() -> None:
    v = torch.linspace(0.0, 0.99, 50, dtype=F64)
    assert torch.allclose(DensityTimes(LogSnrTable.cosine(), "cosine")(v), v, atol=2e-3)


@pytest.mark.parametrize("t_start", [1.0, 0.5])
def test_logsnr_grid_has_equal_logsnr_steps(t_start: float) -> None:
    table = linear_table()
    grid = time_grid(10, "logsnr", t_start=t_start, logsnr=table).numpy()
    assert grid[0] == t_start and grid[-1] == 0.0
    steps = np.diff(table(grid))
    assert np.allclose(steps, steps[0], atol=1e-6) and steps[0] > 0


def test_edm_grid_follows_rho_spacing_in_sigma() -> None:
    table = linear_table()
    grid = logsnr_grid(8, "edm", table, 1.0, 0.0)
    sig = np.exp(-table(grid) / 2)
    i = np.arange(9) / 8
    s_max, s_min = math.exp(-LAM_LO / 2), math.exp(-LAM_HI / 2)
    expected = (s_max ** (1 / EDM_RHO) + i * (s_min ** (1 / EDM_RHO) - s_max ** (1 / EDM_RHO))) ** EDM_RHO
    assert np.allclose(sig, expected, rtol=1e-5)


def test_cosine_grid_on_the_cosine_schedule_is_uniform() -> None:
    grid = time_grid(10, "cosine", logsnr=LogSnrTable.cosine())
    assert torch.allclose(grid, time_grid(10, "uniform"), atol=2e-3)


def test_logsnr_grids_need_a_table() -> None:
    with pytest.raises(ValueError, match="log-SNR table"):
        time_grid(10, "logsnr")
