"""Latent cache: build/read round trip, interpolation, Δ targets (FD vs JVP), atomicity, errors."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from multibeta.cache import CacheConfig, CacheError, LatentCache, VAEMismatchError, build_cache
from multibeta.cache.delta import finite_difference_delta, jvp_delta
from multibeta.core.levels import level_grid
from multibeta.utils.device import Runtime
from multibeta.workflow.config import section_defaults

CPU = Runtime(device=torch.device("cpu"), amp_dtype=None, pin_memory=False)
N, D = 24, 3


class SmoothEncoder(nn.Module):
    """μ_t(x) = exp(−t)·W₂ tanh(W₁x + t·u): smooth in t, images [N, 1, 4, 4]."""

    def __init__(self, d: int = D) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(1)
        self.w1 = nn.Parameter(torch.randn(8, 16, generator=gen) / 4)
        self.u = nn.Parameter(2 * torch.randn(8, generator=gen))
        self.w2 = nn.Parameter(torch.randn(d, 8, generator=gen))

    def encode(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(x.flatten(1) @ self.w1.T + t[:, None] * self.u)
        return torch.exp(-t)[:, None] * (h @ self.w2.T)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sin(math.pi * t / 2)

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return 1e-3 * (1e4) ** t


def images(n: int = N) -> torch.Tensor:
    return torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(0))


def batches(x: torch.Tensor, size: int):
    for i in range(0, len(x), size):
        yield x[i : i + size], torch.arange(i, min(i + size, len(x)))


def make_cache(path: Path, encoder: nn.Module | None = None, **overrides) -> Path:
    cfg = CacheConfig.from_section(
        section_defaults("cache", {"levels": 5, "batch_size": 10, **overrides})
    )
    x = images()
    split = np.array([0, 0, 1] * (N // 3), dtype=np.int8)
    factors = np.arange(N * 2, dtype=np.float32).reshape(N, 2)
    return build_cache(
        encoder or SmoothEncoder(),
        batches(x, cfg.batch_size),
        path,
        cfg=cfg,
        num_items=N,
        runtime=CPU,
        vae_sha256="a" * 64,
        vae_config={"latent_dim": D},
        metadata={"split": split, "factors": factors},
        metadata_attrs={"factor_names": ["p", "q"]},
    )


def test_level_grid() -> None:
    assert np.allclose(level_grid(5), [0, 0.25, 0.5, 0.75, 1])
    assert np.allclose(level_grid(3, "denser_near_0"), [0, 0.25, 1])
    assert np.allclose(level_grid([0, 0.1, 1.0]), [0, 0.1, 1])
    for bad in ([0.1, 1.0], [0, 0.5, 0.5, 1], [0, 0.9]):
        with pytest.raises(ValueError, match="ascending from 0 to 1"):
            level_grid(bad)


def test_build_and_read_round_trip(tmp_path: Path) -> None:
    path = make_cache(tmp_path / "latents.h5")
    with h5py.File(path) as f:
        assert f["mu"].shape == (N, 5, D) and f["mu"].dtype == np.float32
        assert f["schedule_t"].shape == (1001,) and f.attrs["vae_sha256"] == "a" * 64
        assert "delta" not in f
    cache = LatentCache(path)
    enc = SmoothEncoder()
    assert cache.in_memory and cache.num_items == N and cache.latent_dim == D
    np.testing.assert_allclose(cache.t, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(cache.sigma, np.sin(np.pi * cache.t / 2), atol=1e-6)
    np.testing.assert_allclose(cache.beta, 1e-3 * 1e4**cache.t, rtol=1e-5)
    np.testing.assert_array_equal(cache.index, np.arange(N))
    np.testing.assert_array_equal(cache.metadata("factors")[:, 0], np.arange(0, 2 * N, 2))
    np.testing.assert_array_equal(cache.rows("validation"), np.arange(2, N, 3))
    assert cache.metadata("attributes") is None and cache.vae_config() == {"latent_dim": D}
    with torch.no_grad():
        expect = enc.encode(images(), torch.full((N,), 0.5))
    np.testing.assert_allclose(cache.level(2), expect.numpy(), rtol=1e-6, atol=1e-6)
    t = torch.tensor([0.0, 0.3, 1.0])
    np.testing.assert_allclose(cache.sigma_at(t), np.sin(np.pi * t.numpy() / 2), atol=1e-5)
    assert torch.isclose(cache.sigma_table()(torch.tensor([1.0])), torch.tensor([1.0]))


@pytest.mark.parametrize("in_memory", [True, False])
def test_interpolation_exact_at_levels_and_linear_between(tmp_path: Path, in_memory: bool) -> None:
    cache = LatentCache(make_cache(tmp_path / "c.h5"), in_memory=in_memory)
    assert cache.in_memory is in_memory
    mu = np.stack([cache.level(k) for k in range(5)], axis=1)  # [N, K, d]
    idx = torch.tensor([3, 0, 3, 7, 23, 11])
    # exact at every level, including t = 1
    for k, tk in enumerate(cache.t):
        got = cache.mu_at(idx, torch.full((6,), tk))
        np.testing.assert_array_equal(got.numpy(), mu[idx.numpy(), k])
    # linear in between; Δ is the segment slope
    t = torch.tensor([0.1, 0.3, 0.3, 0.6, 0.99, 0.75])
    k = np.array([0, 1, 1, 2, 3, 3])
    w = (t.numpy() - cache.t[k]) / 0.25
    expect = (1 - w)[:, None] * mu[idx.numpy(), k] + w[:, None] * mu[idx.numpy(), k + 1]
    np.testing.assert_allclose(cache.mu_at(idx, t).numpy(), expect, rtol=1e-5, atol=1e-6)
    slope = (mu[idx.numpy(), k + 1] - mu[idx.numpy(), k]) / 0.25
    mu_t, delta = cache.mu_and_delta_at(idx, t)
    np.testing.assert_allclose(delta.numpy(), slope, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cache.delta_at(idx, t).numpy(), slope, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        finite_difference_delta(mu, cache.t)[idx.numpy(), k], slope, rtol=1e-5
    )


def test_statistics_match_numpy(tmp_path: Path) -> None:
    cache = LatentCache(make_cache(tmp_path / "c.h5"), in_memory=False)
    rows = cache.rows("train")
    stats = cache.statistics(rows, block_rows=7)
    mu = np.stack([cache.level(k) for k in range(5)], axis=1)[rows].astype(np.float64)
    np.testing.assert_allclose(stats.mean, mu.mean(0), rtol=1e-10)
    np.testing.assert_allclose(stats.var, mu.var(0), rtol=1e-8, atol=1e-12)
    fd = finite_difference_delta(mu, cache.t)
    np.testing.assert_allclose(stats.delta_rms, np.sqrt((fd**2).mean((0, 1))), rtol=1e-8)
    assert stats.count == len(rows)

    # the per-level Δ scale: RMS over rows of the Δ the cache returns at each segment's midpoint
    jvp = LatentCache(make_cache(tmp_path / "jvp.h5", delta="jvp"), in_memory=False)
    for c in (cache, jvp):
        seg = c.statistics(rows, block_rows=7).delta_rms_segment
        assert seg.shape == (c.num_levels - 1, c.latent_dim)
        for k, tm in enumerate(0.5 * (c.t[:-1] + c.t[1:])):
            delta = c.delta_at(torch.as_tensor(rows), torch.full((len(rows),), tm)).double().numpy()
            np.testing.assert_allclose(seg[k], np.sqrt((delta**2).mean(0)), rtol=1e-5)


def test_jvp_matches_numerical_derivative() -> None:
    enc, x, t = SmoothEncoder(), images(6), torch.linspace(0, 1, 6)
    mu, dmu = jvp_delta(enc, x, t)
    h, enc64, x64, t64 = 1e-4, SmoothEncoder().double(), x.double(), t.double()
    with torch.no_grad():
        num = (enc64.encode(x64, t64 + h) - enc64.encode(x64, t64 - h)) / (2 * h)
    np.testing.assert_allclose(dmu.numpy(), num.numpy(), rtol=1e-4, atol=1e-5)


def test_finite_differences_converge_to_jvp(tmp_path: Path) -> None:
    """As K grows the finite-difference Δ approaches the exact derivative (error ~ h)."""
    enc = SmoothEncoder()
    idx = torch.arange(N).repeat(8)
    t = torch.rand(len(idx), generator=torch.Generator().manual_seed(3))
    _, exact = jvp_delta(enc, images()[idx], t)
    errors = []
    for k in (5, 9, 17):
        jvp_cache = LatentCache(make_cache(tmp_path / f"jvp{k}.h5", enc, levels=k, delta="jvp"))
        fd_cache = LatentCache(make_cache(tmp_path / f"fd{k}.h5", enc, levels=k))
        assert jvp_cache.has_delta and not fd_cache.has_delta
        # JVP targets at the levels are exact
        lv = torch.full((N,), float(jvp_cache.t[1]))
        _, exact_lv = jvp_delta(enc, images(), lv)
        np.testing.assert_allclose(
            jvp_cache.delta_at(torch.arange(N), lv), exact_lv, rtol=1e-5, atol=1e-5
        )
        fd = fd_cache.delta_at(idx, t)
        jv = jvp_cache.delta_at(idx, t)
        errors.append(float((fd - jv).abs().mean() / jv.abs().mean()))
        np.testing.assert_array_equal(jvp_cache.level(2), fd_cache.level(2))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.35 * errors[0]
    # and both approach the exact derivative at the sampled times
    fd_err = float((fd - exact).abs().mean() / exact.abs().mean())
    assert fd_err < 0.1


def test_float16_cache(tmp_path: Path) -> None:
    cache = LatentCache(make_cache(tmp_path / "h.h5", dtype="float16"))
    with h5py.File(cache.path) as f:
        assert f["mu"].dtype == np.float16
    assert cache.mu_at(torch.tensor([0]), torch.tensor([0.5])).dtype == torch.float32


class FailingEncoder(SmoothEncoder):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def encode(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > 7:
            raise KeyboardInterrupt("simulated interruption")
        return super().encode(x, t)


def test_interrupted_build_leaves_no_file(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "latents.h5"
    with pytest.raises(KeyboardInterrupt):
        make_cache(target, FailingEncoder())
    assert not target.exists()
    assert list(target.parent.iterdir()) == []
    with pytest.raises(CacheError, match="cache_latents"):
        LatentCache(target)


def test_wrong_item_count_is_an_error(tmp_path: Path) -> None:
    cfg = CacheConfig.from_section(section_defaults("cache", {"levels": 3}))
    with pytest.raises(CacheError, match="expected num_items=30"):
        build_cache(
            SmoothEncoder(),
            batches(images(), 8),
            tmp_path / "c.h5",
            cfg=cfg,
            num_items=30,
            runtime=CPU,
            vae_sha256="x",
            vae_config={},
        )
    assert not (tmp_path / "c.h5").exists()


def test_corrupt_cache_names_the_rule(tmp_path: Path) -> None:
    bad = tmp_path / "latents.h5"
    bad.write_bytes(b"not an hdf5 file")
    with pytest.raises(CacheError, match="cache_latents"):
        LatentCache(bad)
    with h5py.File(tmp_path / "partial.h5", "w") as f:
        f.create_dataset("mu", data=np.zeros((2, 2, 2)))
    with pytest.raises(CacheError, match="lacks .*cache_latents"):
        LatentCache(tmp_path / "partial.h5")


def test_check_vae_names_both_hashes(tmp_path: Path) -> None:
    cache = LatentCache(make_cache(tmp_path / "c.h5"))
    cache.check_vae("a" * 64)
    with pytest.raises(VAEMismatchError, match=f"{'a' * 64}.*{'b' * 64}.*cache_latents"):
        cache.check_vae("b" * 64)


def test_cache_latents_with_the_real_vae_and_dataset_file(tmp_path: Path) -> None:
    """The rule's entry point: dataset file + VAE checkpoint -> cache with labels and the VAE hash."""
    from multibeta.cache import cache_latents
    from multibeta.data.h5io import write_image_dataset
    from multibeta.models.vae import MultiBetaVAE
    from multibeta.utils.checkpoint import save_checkpoint
    from multibeta.utils.io import file_sha256
    from multibeta.vae.config import VAEConfig

    n = 6
    gen = np.random.default_rng(0)
    write_image_dataset(
        tmp_path / "dataset.h5",
        images=gen.integers(0, 256, (n, 1, 64, 64), dtype=np.uint8),
        split=np.array([0, 0, 0, 0, 1, 2]),
        factors=np.arange(n, dtype=np.float32)[:, None],
        factor_classes=np.arange(n)[:, None],
        factor_names=["x"],
        factor_sizes=[n],
        attrs={"dataset": "toy", "generator_version": "1", "seed": 0, "created_with": {}},
        progress=False,
    )
    vae_cfg = VAEConfig.from_section(section_defaults("vae", {}))
    vae = MultiBetaVAE(vae_cfg.vae_arch(1))
    with torch.no_grad():  # an untrained VAE may ignore t; perturb so that dμ/dt ≠ 0
        for p in vae.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    vae_path = tmp_path / "model.pt"
    save_checkpoint(
        {"kind": "vae", "arch": vae.arch.to_dict(), "model": vae.state_dict(), "config": {"x": 1}}, vae_path
    )
    cfg = CacheConfig.from_section(
        section_defaults("cache", {"levels": 3, "batch_size": 4, "delta": "jvp"})
    )
    cache = LatentCache(
        cache_latents(
            vae_path, tmp_path / "dataset.h5", tmp_path / "latents.h5", cfg=cfg, runtime=CPU
        )
    )
    cache.check_vae(file_sha256(vae_path))
    assert (cache.num_items, cache.num_levels, cache.latent_dim) == (n, 3, vae.latent_dim)
    np.testing.assert_array_equal(cache.metadata("split"), [0, 0, 0, 0, 1, 2])
    np.testing.assert_array_equal(cache.metadata("factor_classes")[:, 0], np.arange(n))
    assert cache.attrs["factor_names"] == '["x"]' and cache.vae_config()["config"] == {"x": 1}
    np.testing.assert_allclose(
        cache.sigma,
        vae.sigma(torch.tensor(cache.t, dtype=torch.float32)).detach().numpy(),
        rtol=1e-6,
    )
    # the stored JVP matches a central difference through the real encoder
    with h5py.File(tmp_path / "dataset.h5") as f:
        x = torch.from_numpy(f["images"][...]).float() / 255
    t, h = torch.full((n,), 0.5), 1e-2
    with torch.no_grad():
        num = (vae.encode(x, t + h) - vae.encode(x, t - h)) / (2 * h)
    got = cache.delta_at(torch.arange(n), t)
    assert float(num.abs().max()) > 1e-3
    assert float((got - num).abs().max()) < 0.02 * float(num.abs().max()) + 1e-4


def test_a_damaged_chunk_read_names_the_file_and_the_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = LatentCache(make_cache(tmp_path / "latents.h5"), in_memory=False)

    class DamagedDataset:
        name = "/mu"

        def __getitem__(self, selection):
            raise OSError("Can't synchronously read data (inflate() failed)")

    monkeypatch.setattr(cache, "_h5", lambda: {"mu": DamagedDataset(), "delta": DamagedDataset()})
    for read in (lambda: cache.level(0), lambda: cache.block(0, 3)):
        with pytest.raises(CacheError) as err:
            read()
        assert str(cache.path) in str(err.value) and "cache_latents" in str(err.value)
        assert "damaged" in str(err.value)


class StaggeredEncoder(SmoothEncoder):
    """SmoothEncoder with a per-dimension σ: dimension j follows sin(π t / 2) on its own clock."""

    per_dimension_sigma = True

    def posterior_sigma(self, t: torch.Tensor) -> torch.Tensor:
        offsets = torch.tensor([0.0, 0.25, 0.5])
        return torch.sin(math.pi * ((t[:, None] - offsets) / 0.5).clamp(0, 1) / 2)


def test_a_per_dimension_sigma_is_stored_and_tabulated_per_dimension(tmp_path: Path) -> None:
    cache = LatentCache(make_cache(tmp_path / "c.h5", StaggeredEncoder()))
    assert cache.per_dimension_sigma
    assert cache.sigma.shape == (5, D) and cache.schedule_sigma.shape == (len(cache.schedule_t), D)
    np.testing.assert_allclose(cache.sigma[2], [1.0, math.sin(math.pi / 4), 0.0], atol=1e-6)  # t = 0.5
    np.testing.assert_allclose(cache.sigma[[0, -1]], [[0.0] * D, [1.0] * D], atol=1e-6)
    table = cache.sigma_table()
    assert table.per_dimension
    at_half = table(torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert at_half.shape == (2, D)
    np.testing.assert_allclose(at_half[0].numpy(), [1.0, math.sin(math.pi / 4), 0.0], atol=1e-6)
    np.testing.assert_allclose(cache.sigma_1, [1.0] * D, atol=1e-6)
    shared = LatentCache(make_cache(tmp_path / "s.h5"))
    assert not shared.per_dimension_sigma and shared.sigma.shape == (5,)
    assert isinstance(shared.sigma_1, float) and not shared.sigma_table().per_dimension
