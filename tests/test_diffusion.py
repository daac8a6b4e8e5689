"""Stage 2: denoiser, forward processes, weighting, trainer (variants, resume, NaN), VAE hash checks."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from multibeta.cache import CacheConfig, LatentCache, VAEMismatchError, build_cache
from multibeta.diffusion.config import DiffusionConfig
from multibeta.diffusion.plots import plot_training_curves, read_train_log
from multibeta.diffusion.process import WeightingParams, get_weighting, sample_t
from multibeta.diffusion.trainer import DiffusionTrainer, train_diffusion
from multibeta.models.denoiser import LatentDenoiser
from multibeta.models.loading import DenoiserVAEMismatchError, check_denoiser_vae, load_denoiser
from multibeta.training.errors import NonFiniteLossError
from multibeta.utils.device import Runtime
from multibeta.workflow.config import section_defaults

CPU = Runtime(device=torch.device("cpu"), amp_dtype=None, pin_memory=False)
N, D, HASH_A, HASH_B = 48, 4, "a" * 64, "b" * 64


class ToyEncoder(nn.Module):
    """Two clusters whose means shrink to 0 as t -> 1 (β grows): μ_t = (1 − t)·3·c(x) + small."""

    def encode(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        c = torch.where(x.flatten(1)[:, :D] > 0.5, 1.0, -1.0)
        return (1 - t)[:, None] ** 2 * 3 * c + 0.05 * torch.sin(6 * t)[:, None]

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sin(math.pi * t / 2)

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return 1e-2 * 100**t


@pytest.fixture(scope="module")
def cache_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cache") / "latents.h5"
    x = torch.rand(N, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    cfg = CacheConfig.from_section(section_defaults("cache", {"levels": 9, "schedule_points": 101}))
    split = np.zeros(N, dtype=np.int8)
    split[-8:] = 1
    build_cache(
        ToyEncoder(),
        [(x, torch.arange(N))],
        path,
        cfg=cfg,
        num_items=N,
        runtime=CPU,
        vae_sha256=HASH_A,
        vae_config={},
        metadata={"split": split},
    )
    return path


def paths(folder: Path) -> dict[str, Any]:
    """The trainer's output paths in ``folder``, named as the rule train_diffusion names them."""
    return {
        "model_path": folder / "model.pt",
        "log_csv": folder / "train_log.csv",
        "state_path": folder / "resume.pt",
    }


def config(**overrides) -> DiffusionConfig:
    base = {
        "width": 32,
        "depth": 2,
        "time_embed_dim": 16,
        "batch_size": 32,
        "steps": 20,
        "warmup_steps": 5,
        "log_every": 5,
        "checkpoint_every": 10,
    }
    return DiffusionConfig.from_section(section_defaults("diffusion", {**base, **overrides}))


def test_denoiser_shapes_and_real_units() -> None:
    model = LatentDenoiser(
        latent_dim=D,
        width=16,
        depth=2,
        time_embed_dim=8,
        variant="multibeta",
        num_precond=3,
        schedule_points=11,
    )
    nn.init.normal_(model.delta_head.weight)
    z, t = torch.randn(5, D), torch.rand(5)
    eps, delta = model(z, t)
    assert eps.shape == delta.shape == (5, D)
    model.set_normalisation(delta_scale=np.full(D, 10.0))
    torch.testing.assert_close(model(z, t)[1], 10 * delta)
    for variant in ("noise_only", "standard_ldm"):
        other = LatentDenoiser(
            latent_dim=D,
            width=16,
            depth=1,
            time_embed_dim=8,
            variant=variant,
            schedule_points=0 if variant == "standard_ldm" else 11,
        )
        eps, delta = other(z, t)
        assert eps.shape == (5, D) and delta is None
    with pytest.raises(ValueError, match="unknown diffusion variant"):
        LatentDenoiser(latent_dim=D, width=8, depth=1, time_embed_dim=8, variant="ddpm")


def test_weightings_and_t_sampling() -> None:
    p = WeightingParams(min_snr_gamma=5.0, snr_max=100.0)
    snr = torch.tensor([0.0, 1.0, 5.0, 50.0, float("inf")])
    torch.testing.assert_close(get_weighting("uniform")(snr, p), torch.ones(5))
    torch.testing.assert_close(
        get_weighting("snr")(snr, p), torch.tensor([0.0, 1.0, 5.0, 50.0, 100.0])
    )
    torch.testing.assert_close(
        get_weighting("min_snr")(snr, p), torch.tensor([1.0, 1.0, 1.0, 0.1, 0.0])
    )
    with pytest.raises(ValueError, match="unknown diffusion.weighting"):
        get_weighting("p2")
    gen = torch.Generator().manual_seed(0)
    t = sample_t(8, "stratified", gen, torch.device("cpu"))
    assert sorted((t * 8).floor().long().tolist()) == list(range(8))
    assert sample_t(8, "uniform", gen, torch.device("cpu")).shape == (8,)


def test_loss_falls(cache_path: Path, tmp_path: Path) -> None:
    # λ_Δ = 1 so the Δ head gets as much gradient as the ε head within 300 steps; the global Δ
    # scale, whose loss is dominated by the large Δ of early t here (the per-level scale's
    # relative error is tested in test_per_level_delta_scale_learns_the_small_delta_of_early_levels).
    cfg = config(steps=300, lr=3e-3, log_every=25, checkpoint_every=1000, lr_schedule="constant",
                 lambda_delta=1.0, delta_scale="global")
    train_diffusion(cfg, variant="multibeta", cache=cache_path, **paths(tmp_path), runtime=CPU)
    log = read_train_log(tmp_path / "train_log.csv")
    assert [r["step"] for r in log] == list(range(25, 301, 25))
    assert log[-1]["loss"] < 0.6 * log[0]["loss"]
    assert log[-1]["delta_loss"] < 0.3 * log[0]["delta_loss"]


@pytest.mark.parametrize("variant", ["multibeta", "noise_only", "standard_ldm"])
def test_each_variant_trains_saves_and_loads(
    cache_path: Path, tmp_path: Path, variant: str
) -> None:
    out = train_diffusion(
        config(),
        variant=variant,
        cache=cache_path,
        **paths(tmp_path),
        runtime=CPU,
        vae_sha256=HASH_A,
    )
    assert out == tmp_path / "model.pt" and not (tmp_path / "resume.pt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "train_log.csv"]
    model, ckpt = load_denoiser(out)
    assert ckpt["variant"] == variant and ckpt["vae_sha256"] == HASH_A and ckpt["latent_dim"] == D
    assert ckpt["step"] == 20 and not model.training
    for key, value in ckpt["ema"].items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)
    eps, delta = model(torch.randn(3, D), torch.rand(3))
    assert eps.shape == (3, D) and (delta is not None) == (variant == "multibeta")
    assert torch.all(model.sigma(torch.tensor([0.0])) < 1e-3) and torch.allclose(
        model.sigma(torch.tensor([1.0])), torch.ones(1), atol=1e-3
    )
    if variant != "standard_ldm":  # the whole σ_t table, not only its ends: σ = sin(πt/2)
        t = torch.linspace(0, 1, 11, dtype=torch.float64)
        torch.testing.assert_close(model.sigma_table(t), torch.sin(math.pi * t / 2), atol=1e-3, rtol=0)
    if variant == "standard_ldm":
        cache = LatentCache(cache_path)
        z0 = model.normalize(torch.from_numpy(cache.level(0)[cache.rows("train")]))
        torch.testing.assert_close(z0.mean(0), torch.zeros(D), atol=1e-5, rtol=0)
        torch.testing.assert_close(model.denormalize(z0), torch.from_numpy(cache.level(0)[:40]))
    else:
        assert torch.all(model.alpha(torch.rand(4)) == 1)
    if variant == "multibeta":
        assert torch.all(model.delta_scale > 0.5)  # Δ of μ_t = 3(1−t)²c is O(1..6)
    png = plot_training_curves({variant: tmp_path / "train_log.csv"}, tmp_path / "loss.png")
    assert png.stat().st_size > 1000


def test_denoiser_from_other_vae_is_refused(cache_path: Path, tmp_path: Path) -> None:
    out = train_diffusion(
        config(steps=2), variant="noise_only", cache=cache_path, **paths(tmp_path), runtime=CPU
    )
    _, ckpt = load_denoiser(out)
    check_denoiser_vae(ckpt, HASH_A)
    with pytest.raises(
        DenoiserVAEMismatchError, match=f"{HASH_A}.*{HASH_B}.*cache_latents and train_diffusion"
    ):
        check_denoiser_vae(ckpt, HASH_B)
    with pytest.raises(VAEMismatchError, match="cache_latents"):
        train_diffusion(
            config(steps=2),
            variant="noise_only",
            cache=cache_path,
            **paths(tmp_path / "b"),
            runtime=CPU,
            vae_sha256=HASH_B,
        )


def test_resume_is_bitwise_identical(cache_path: Path, tmp_path: Path) -> None:
    cfg = config(steps=12, dropout=0.1, checkpoint_every=100, log_every=4)
    train_diffusion(
        cfg, variant="multibeta", cache=cache_path, **paths(tmp_path / "full"), runtime=CPU
    )
    assert (
        train_diffusion(
            cfg,
            variant="multibeta",
            cache=cache_path,
            **paths(tmp_path / "split"),
            runtime=CPU,
            stop_at=6,
        )
        is None
    )
    assert (tmp_path / "split" / "resume.pt").exists() and not (
        tmp_path / "split" / "model.pt"
    ).exists()
    train_diffusion(
        cfg, variant="multibeta", cache=cache_path, **paths(tmp_path / "split"), runtime=CPU
    )
    _, a = load_denoiser(tmp_path / "full" / "model.pt")
    _, b = load_denoiser(tmp_path / "split" / "model.pt")
    for part in ("model", "ema"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs"
    for key, sa in a["optimizer"]["state"].items():
        assert torch.equal(sa["exp_avg_sq"], b["optimizer"]["state"][key]["exp_avg_sq"])
    assert a["log"] == b["log"]
    assert (tmp_path / "full" / "train_log.csv").read_text() == (
        tmp_path / "split" / "train_log.csv"
    ).read_text()


def _poison_noise(monkeypatch: pytest.MonkeyPatch, value: float, from_step: int = 0) -> None:
    """Multiply the training noise by ``value`` (nan or inf) from step index ``from_step`` on."""
    original = DiffusionTrainer.sample_batch

    def poisoned(self: DiffusionTrainer):
        batch = original(self)
        if self.step >= from_step:
            batch.eps = batch.eps * value
        return batch

    monkeypatch.setattr(DiffusionTrainer, "sample_batch", poisoned)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(
    cache_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _poison_noise(monkeypatch, float("nan"), from_step=12)
    with pytest.raises(NonFiniteLossError) as err:
        train_diffusion(
            config(), variant="multibeta", cache=cache_path, **paths(tmp_path), runtime=CPU
        )
    message = str(err.value)
    # batch 13 (step index 12) is the first poisoned one: step 13, found at the log window of step 15
    assert "non-finite eps_loss, delta_loss, loss first at training step 13 (found at step 15)" in message
    assert "diffusion.lr" in message and "diffusion.lambda_delta" in message and "fp32" in message
    assert "a rerun with this config stops here again: the config must change" in message
    assert f"{tmp_path / 'resume.pt'} holds the state of step 10" in message and "resume.stale" in message
    assert not (tmp_path / "model.pt").exists()
    state = torch.load(tmp_path / "resume.pt", weights_only=True)
    assert state["step"] == 10 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_nan_before_any_checkpoint_says_none_was_written(
    cache_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _poison_noise(monkeypatch, float("inf"))
    with pytest.raises(NonFiniteLossError, match=r"first at training step 1 .*diffusion\.snr_max = .*Checkpoint: none was written"):
        train_diffusion(
            config(weighting="min_snr"), variant="noise_only", cache=cache_path, **paths(tmp_path), runtime=CPU
        )
    assert not (tmp_path / "resume.pt").exists() and not (tmp_path / "model.pt").exists()


def test_resume_state_of_another_config_is_kept_as_stale(
    cache_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    train_diffusion(
        config(steps=8), variant="noise_only", cache=cache_path, runtime=CPU, stop_at=4, **paths(tmp_path)
    )
    cfg = config(steps=8, lr=5e-4)  # another config: must start from scratch
    trainer = DiffusionTrainer(cfg, variant="noise_only", cache=LatentCache(cache_path), runtime=CPU,
                               **paths(tmp_path))
    with caplog.at_level(logging.WARNING, logger="multibeta.training.resume"):
        assert not trainer.try_resume() and trainer.step == 0
    assert "diffusion.lr: checkpoint has 0.001, config asks for 0.0005" in caplog.text
    assert not (tmp_path / "resume.pt").exists() and (tmp_path / "resume.stale").exists()
    # the same config resumes; keys that do not shape training may change
    train_diffusion(
        config(steps=8), variant="noise_only", cache=cache_path, runtime=CPU, stop_at=4, **paths(tmp_path)
    )
    trainer = DiffusionTrainer(config(steps=8, checkpoint_every=3), variant="noise_only",
                               cache=LatentCache(cache_path), runtime=CPU, **paths(tmp_path))
    assert trainer.try_resume() and trainer.step == 4


def test_learning_rate_warms_up_then_decays_to_its_floor(cache_path: Path, tmp_path: Path) -> None:
    def rates(**over) -> list[float]:
        cfg = config(steps=20, warmup_steps=4, lr=1e-3, **over)
        trainer = DiffusionTrainer(cfg, variant="noise_only", cache=LatentCache(cache_path), runtime=CPU,
                                   **paths(tmp_path))
        return [trainer.learning_rate(s) for s in range(21)]

    cosine = rates(min_lr_ratio=0.1)
    assert cosine[:5] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])  # decay starts after warm-up
    assert cosine[12] == pytest.approx(0.55e-3) and cosine[20] == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(cosine[3:], cosine[4:]))
    assert rates()[20] == 0.0  # the default floor
    assert rates(lr_schedule="constant", min_lr_ratio=0.1)[4:] == [1e-3] * 17


def test_trains_from_chunked_cache_under_bf16_autocast(cache_path: Path, tmp_path: Path) -> None:
    runtime = Runtime(device=torch.device("cpu"), amp_dtype=torch.bfloat16, pin_memory=False)
    cache = LatentCache(cache_path, in_memory=False)
    out = train_diffusion(
        config(steps=6), variant="multibeta", cache=cache, **paths(tmp_path), runtime=runtime
    )
    _, ckpt = load_denoiser(out)
    assert np.isfinite(ckpt["log"][-1]["loss"])


def test_cosine_time_density_draws_the_cosine_log_snr(cache_path: Path, tmp_path: Path) -> None:
    """With t_density cosine the trainer's times have the cosine schedule's log-SNR quantiles
    (restricted to the process's range), and time_input logsnr trains, saves and reloads."""
    from multibeta.core.logsnr import cosine_time

    trainer = DiffusionTrainer(config(t_density="cosine", batch_size=4096, t_sampling="stratified",
                                      time_input="logsnr"),
                               variant="multibeta", cache=LatentCache(cache_path), runtime=CPU,
                               **paths(tmp_path))
    table = trainer.model.logsnr_table()
    t = trainer.sample_batch().t
    u = np.sort(cosine_time(table(t.numpy())))  # cosine time of each draw's λ: uniform if matched
    u_lo, u_hi = cosine_time(table.lambda_max), cosine_time(table.lambda_min)
    expected = u_lo + (np.arange(len(u)) + 0.5) / len(u) * (u_hi - u_lo)
    assert np.abs(u - expected).max() < 0.01
    uniform = DiffusionTrainer(config(batch_size=4096, t_sampling="stratified", t_density="uniform"), variant="multibeta",
                               cache=LatentCache(cache_path), runtime=CPU, **paths(tmp_path / "u"))
    u_uniform = np.sort(cosine_time(table(uniform.sample_batch().t.numpy())))
    assert np.abs(u_uniform - expected).max() > 0.05  # uniform t is not the cosine density
    trainer.run()
    model, ckpt = load_denoiser(tmp_path / "model.pt")
    assert model.time_input == "logsnr" and ckpt["arch"]["time_input"] == "logsnr"
    t_in = model.time_features(torch.tensor([0.0, 0.5, 1.0]))
    assert torch.all(t_in.diff() > 0) and 0 <= float(t_in.min()) and float(t_in.max()) < 1


def test_sigma_table_buffers_do_not_alias_and_old_checkpoints_are_repaired(
    cache_path: Path, tmp_path: Path
) -> None:
    """A table built from one array for t and σ, then filled by load_state_dict, keeps both
    buffers apart; a checkpoint written when they aliased (σ in both) loads with the true σ_t."""
    from multibeta.core.schedules import SigmaTable

    grid = np.linspace(0, 1, 5)
    table = SigmaTable(grid, grid)
    table.load_state_dict(SigmaTable(grid, grid**2).state_dict())
    assert torch.equal(table.t_grid, torch.as_tensor(grid)) and torch.equal(table.sigma_grid, torch.as_tensor(grid**2))
    out = train_diffusion(config(), variant="multibeta", cache=cache_path, **paths(tmp_path), runtime=CPU)
    state = torch.load(out, weights_only=True)
    for weights in (state["ema"], state["model"]):  # what the aliased buffers wrote
        weights["sigma_table.t_grid"] = weights["sigma_table.sigma_grid"].clone()
    torch.save(state, tmp_path / "old.pt")
    model, _ = load_denoiser(tmp_path / "old.pt")
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(model.sigma_table(t), torch.sin(math.pi * t / 2), atol=1e-3, rtol=0)


def test_sigma_rms_is_one_convention_for_shared_and_per_dimension_sigma() -> None:
    """The one number that stands for σ_{t,j}: the RMS over dimensions; a shared σ (a plain
    number, or a last axis of 1) comes back exactly, in numpy and in torch alike."""
    from multibeta.core.schedules import SigmaTable, sigma_rms

    shared = np.array([0.01, 0.3, 0.999])
    assert sigma_rms(0.3) == 0.3 and sigma_rms(np.float32(0.25)) == 0.25
    assert np.array_equal(sigma_rms(shared[:, None]), shared)
    assert torch.equal(sigma_rms(torch.as_tensor(shared)[:, None]), torch.as_tensor(shared))
    per_dim = np.array([[0.1, 0.5, 0.7], [3.0, 4.0, 0.0]])
    np.testing.assert_allclose(sigma_rms(per_dim), [np.sqrt(0.25), np.sqrt(25 / 3)], rtol=1e-12)
    np.testing.assert_allclose(sigma_rms(torch.as_tensor(per_dim)).numpy(), sigma_rms(per_dim), rtol=1e-12)
    grid = np.linspace(0, 1, 5)
    table = SigmaTable(grid, np.stack([grid, 2 * grid], axis=1))
    t = torch.tensor([0.3, 0.9, 0.5], dtype=torch.float64)  # N = 3 != d = 2: a swapped axis fails on shape
    torch.testing.assert_close(table.rms(t), t * math.sqrt(2.5), rtol=1e-12, atol=0)
    # the form that scales latents [N, d]: per-dimension rows as they are, a shared σ as a column
    torch.testing.assert_close(table.columns(t), torch.stack([t, 2 * t], dim=1), rtol=1e-12, atol=0)
    shared_table = SigmaTable(grid, grid)
    assert shared_table.columns(t).shape == (3, 1)
    torch.testing.assert_close(shared_table.columns(t)[:, 0], t, rtol=1e-12, atol=0)


def test_per_level_delta_scale_interpolates_and_scales_the_head() -> None:
    model = LatentDenoiser(
        latent_dim=D, width=16, depth=1, time_embed_dim=8, variant="multibeta",
        num_precond=3, schedule_points=11, delta_scale_points=3,
    )
    assert model.arch()["delta_scale_points"] == 3
    nn.init.normal_(model.delta_head.weight)
    table = np.array([[1.0] * D, [2.0] * D, [10.0] * D])
    model.set_normalisation(delta_scale_t=np.array([0.25, 0.5, 0.75]), delta_scale_table=table)
    t = torch.tensor([0.0, 0.25, 0.375, 0.625, 1.0])
    torch.testing.assert_close(
        model.delta_scale_at(t)[:, 0], torch.tensor([1.0, 1.0, 1.5, 6.0, 10.0])
    )
    z = torch.randn(5, D)
    _, delta = model(z, t)
    model.set_normalisation(delta_scale_table=np.ones_like(table))
    _, unit = model(z, t)  # the head's own output: Δ̂ is that times s(t)
    torch.testing.assert_close(delta, unit * torch.tensor([1.0, 1.0, 1.5, 6.0, 10.0])[:, None])
    with pytest.raises(ValueError, match="multibeta variant"):
        LatentDenoiser(latent_dim=D, width=8, depth=1, time_embed_dim=8, variant="noise_only",
                       schedule_points=11, delta_scale_points=3)
    one_scale = LatentDenoiser(latent_dim=D, width=8, depth=1, time_embed_dim=8, variant="multibeta",
                               schedule_points=11)
    assert "delta_scale_points" not in one_scale.arch()  # older checkpoints' arch stays valid
    with pytest.raises(ValueError, match="one Δ scale"):
        one_scale.set_normalisation(delta_scale_table=table)


class SlowStartEncoder(nn.Module):
    """μ_t = 2(1 − t³)·c(x): Δ = −6t²·c is 100× smaller at t = 0.1 than at t = 1."""

    def encode(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        c = torch.where(x.flatten(1)[:, :D] > 0.5, 1.0, -1.0)
        return 2 * (1 - t**3)[:, None] * c

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return 0.01 + 0.99 * torch.sin(math.pi * t / 2)

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return 1e-2 * 100**t


def test_per_level_delta_scale_learns_the_small_delta_of_early_levels(tmp_path: Path) -> None:
    path = tmp_path / "slow.h5"
    x = torch.rand(N, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    build_cache(
        SlowStartEncoder(), [(x, torch.arange(N))], path,
        cfg=CacheConfig.from_section(section_defaults("cache", {"levels": 9, "schedule_points": 101})),
        num_items=N, runtime=CPU, vae_sha256=HASH_A, vae_config={},
    )
    cache = LatentCache(path)
    rows = torch.arange(N)
    t = torch.full((N,), 0.15, dtype=torch.float64)
    mu, delta = cache.mu_and_delta_at(rows, t)
    rel_err = {}
    for scale in ("global", "per_level"):
        cfg = config(steps=400, lr=3e-3, lambda_delta=1.0, lr_schedule="constant", checkpoint_every=1000,
                     delta_scale=scale, ema_decay=0.9)
        model, ckpt = load_denoiser(
            train_diffusion(cfg, variant="multibeta", cache=path, **paths(tmp_path / scale), runtime=CPU)
        )
        if scale == "per_level":
            assert ckpt["arch"]["delta_scale_points"] == cache.num_levels - 1
            assert model.delta_scale_table.shape == (cache.num_levels - 1, D)
        with torch.no_grad():
            _, delta_hat = model(mu, t.float())
        rel_err[scale] = float((delta_hat - delta).norm() / delta.norm())
    # the global scale (RMS over all t) leaves the early levels' Δ to a loss 100x too small
    assert rel_err["per_level"] < 0.5 * rel_err["global"], rel_err


class StaggeredToyEncoder(ToyEncoder):
    """:class:`ToyEncoder` with a per-dimension σ: dimension j follows sin(π τ_j/2) on its own clock."""

    per_dimension_sigma = True

    def posterior_sigma(self, t: torch.Tensor) -> torch.Tensor:
        from multibeta.models.schedules import stagger_offsets, staggered_times

        return torch.sin(math.pi * staggered_times(t, stagger_offsets(D, 0.5), 0.5) / 2)


@pytest.mark.parametrize("variant", ["multibeta", "noise_only"])
def test_a_per_dimension_sigma_trains_loads_and_samples(tmp_path: Path, variant: str) -> None:
    """A cache from a VAE with a per-dimension σ: the forward process noises each dimension at its
    own level, the denoiser keeps the [M, d] table through its checkpoint, the sampler uses it."""
    from multibeta.diffusion.process import MultiBetaProcess
    from multibeta.sampling.samplers import sample_latents
    from multibeta.sampling.settings import SamplerSettings

    path = tmp_path / "latents.h5"
    x = torch.rand(N, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    cfg = CacheConfig.from_section(section_defaults("cache", {"levels": 9, "schedule_points": 101}))
    build_cache(StaggeredToyEncoder(), [(x, torch.arange(N))], path, cfg=cfg, num_items=N,
                runtime=CPU, vae_sha256=HASH_A, vae_config={})
    cache = LatentCache(path)
    process = MultiBetaProcess(cache, signal_var=np.ones(cache.num_levels), weighting="uniform",
                               params=WeightingParams(5.0, 5.0), with_delta=False)
    t = torch.full((N,), 0.5, dtype=torch.float64)
    eps = torch.ones(N, D)
    z = process.q_sample(torch.zeros(N, D), t, eps)
    expected = torch.sin(math.pi * ((0.5 - torch.arange(D) / (D - 1) * 0.5) / 0.5).clamp(0, 1) / 2)
    torch.testing.assert_close(z[0], expected.float(), atol=2e-3, rtol=0)
    assert float(process.snr(t[:1])) == pytest.approx(1.0 / float(expected.pow(2).mean()), rel=1e-2)

    out = train_diffusion(config(), variant=variant, cache=path, **paths(tmp_path / "run"),
                          runtime=CPU, vae_sha256=HASH_A)
    model, ckpt = load_denoiser(out)
    assert model.arch()["per_dimension_sigma"] and model.sigma_table.per_dimension
    torch.testing.assert_close(model.sigma(torch.full((1,), 0.5))[0], expected.float(), atol=2e-3, rtol=0)
    settings = SamplerSettings(variant=variant, steps=8, eta=1.0, solver="euler", spacing="uniform",
                               seed=0, batch_size=16)
    z0 = sample_latents(model, model.sigma_table, settings, n=16, dim=D, progress=False)
    assert z0.shape == (16, D) and torch.isfinite(z0).all()


@pytest.mark.parametrize("variant", ["multibeta", "standard_ldm"])
def test_v_prediction_recovers_eps_from_the_v_target_and_its_loss_is_the_v_loss(
    variant: str, cache_path: Path, tmp_path: Path
) -> None:
    """With the head's output F equal to the v-target a·ε − b·m/sqrt(p) the ε̂ of ``prediction: v``
    is ε exactly, and the weighted ε loss equals ‖F − v‖²."""
    trainer = DiffusionTrainer(config(prediction="v"), variant=variant, cache=LatentCache(cache_path),
                               runtime=CPU, **paths(tmp_path))
    model = trainer.model
    gen = torch.Generator().manual_seed(1)
    t = torch.tensor([0.05, 0.3, 0.6, 0.9, 1.0])
    m = torch.randn(len(t), D, generator=gen) * model.signal_power(t).float().sqrt()[:, None]
    eps = torch.randn(len(t), D, generator=gen)
    sig = model.sigma(t)[:, None]
    alpha = model.alpha(t)[:, None]
    if variant == "standard_ldm":
        m = m / alpha  # normalised ẑ_0: the input z = sqrt(ᾱ)·ẑ_0 + sqrt(1 − ᾱ)·ε
    z = alpha * m + sig * eps
    power = model.signal_power(t).float()[:, None]
    a, b = (power / (power + sig**2)).sqrt(), sig / (power + sig**2).sqrt()
    v = a * eps - b * (alpha * m) / power.sqrt()
    gain, a_model = model._v_coefficients(t)
    torch.testing.assert_close(a_model.expand_as(a), a)
    torch.testing.assert_close(gain * z + a_model * v, eps, rtol=1e-5, atol=1e-5)
    f_hat = v + 0.1 * torch.randn(v.shape, generator=gen)
    eps_hat = gain * z + a_model * f_hat
    weighted = ((eps_hat - eps) ** 2 * model.eps_loss_weight(t)).mean()
    torch.testing.assert_close(weighted, ((f_hat - v) ** 2).mean(), rtol=1e-5, atol=1e-6)


def test_v_prediction_starts_at_the_gaussian_noise_estimate_and_round_trips(
    cache_path: Path, tmp_path: Path
) -> None:
    """The zero-initialised head of a v-predicting denoiser gives ε̂ = σ/(p + σ²)·z, which at the
    noisiest level already predicts the noise better than ε̂ = 0; the checkpoint records the
    prediction, and a checkpoint without the key loads as ε-prediction."""
    cache = LatentCache(cache_path)
    trainer = DiffusionTrainer(config(prediction="v"), variant="multibeta", cache=cache,
                               runtime=CPU, **paths(tmp_path))
    rows = torch.arange(N)
    t = torch.full((N,), 0.95, dtype=torch.float64)
    mu = cache.mu_at(rows, t).float()
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(2))
    z = mu + trainer.model.sigma(t.float())[:, None] * eps
    with torch.no_grad():
        eps_hat, _ = trainer.model(z, t.float())
    err = float(((eps_hat - eps) ** 2).mean())
    assert err < 0.9  # ε̂ = 0 scores 1
    trainer.run()
    model, ckpt = load_denoiser(tmp_path / "model.pt")
    assert model.prediction == "v" and ckpt["arch"]["prediction"] == "v"
    eps_model = DiffusionTrainer(config(), variant="multibeta", cache=cache, runtime=CPU,
                                 **paths(tmp_path / "eps")).model
    assert "prediction" not in eps_model.arch() and eps_model.prediction == "eps"
