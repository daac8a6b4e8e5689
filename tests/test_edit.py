"""Sharpening, traversals and grids with tiny fake encoder/decoder/denoiser callables."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from multibeta.core.config import from_section
from multibeta.sampling.config import SamplingConfig, SharpenConfig
from multibeta.sampling.edit import (
    dimension_directions,
    pca_directions,
    save_sharpening_grid,
    save_traversal_grid,
    sharpen,
    traversal_values,
    traverse,
)
from multibeta.sampling.grids import save_sample_grid, tile
from multibeta.workflow.config import section_defaults

D, C, H = 4, 1, 16


class FakeVAE:
    """μ_t(x) = (1 − t/2)·Wx; D(z, t) = sigmoid(W'z) (t-independent), images 1x16x16."""

    def __init__(self) -> None:
        gen = torch.Generator().manual_seed(0)
        self.w_enc = torch.randn(C * H * H, D, generator=gen) / H
        self.w_dec = torch.randn(D, C * H * H, generator=gen)

    def encode(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (1 - t[:, None] / 2) * (x.flatten(1) @ self.w_enc)

    def decode_image(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(z @ self.w_dec).reshape(-1, C, H, H)


def fake_model(z: torch.Tensor, t: torch.Tensor):
    return 0.3 * torch.tanh(z), 0.5 * z


def sigma(t: torch.Tensor) -> torch.Tensor:
    return 0.01 + 0.99 * t


def sharpen_config(**overrides) -> SharpenConfig:
    """``sampling.sharpen`` with 20 steps and ``overrides``."""
    section = section_defaults("sampling", {"sharpen": {"steps": 20, **overrides}})
    return from_section(SamplingConfig, section, "sampling").sharpen


def sharpen_fake(images: torch.Tensor, cfg: SharpenConfig, levels: list[float]):
    """:func:`sharpen` of ``images`` with the fake VAE and denoiser."""
    vae = FakeVAE()
    return sharpen(vae.encode, vae.decode_image, fake_model, sigma, images, cfg, levels=levels,
                   start=cfg.start, inversion_steps=cfg.inversion_steps, progress=False)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(3, C, H, H, generator=torch.Generator().manual_seed(1))


def test_sharpen_shapes_identity_level_and_grid(tmp_path: Path, images: torch.Tensor) -> None:
    vae = FakeVAE()
    res = sharpen_fake(images, sharpen_config(), [0.0, 0.5, 1.0])
    assert res.blurry.shape == res.sharp.shape == (3, 3, C, H, H)
    assert res.latents.shape == (3, 3, D)
    # t_b = 0: no denoising steps, so the sharpened decode is D(E(x, 0), 0)
    direct = vae.decode_image(vae.encode(images, torch.zeros(3)), torch.zeros(3))
    assert torch.equal(res.sharp[0], res.blurry[0])
    assert torch.allclose(res.sharp[0], direct)
    assert not torch.allclose(res.sharp[2], res.blurry[2])
    again = sharpen_fake(images, sharpen_config(), [0.0, 0.5, 1.0])
    assert torch.equal(again.sharp, res.sharp)
    path = tmp_path / "fig" / "sharpening.png"
    save_sharpening_grid(res, path)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width > img.height  # 7 columns, 3 rows
    assert not list(path.parent.glob(".*tmp*"))


def test_sharpen_with_noise_depends_on_seed(images: torch.Tensor) -> None:
    cfg = sharpen_config(start="forward", eta=1.0)
    one = sharpen_fake(images, cfg, [0.5])
    same = sharpen_fake(images, cfg, [0.5])
    other = sharpen_fake(images, replace(cfg, seed=1), [0.5])
    assert torch.equal(one.latents, same.latents)
    assert not torch.allclose(one.latents, other.latents)


def test_sharpen_rejects_standard_ldm(images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="standard_ldm"):  # the schema refuses it in a config
        sharpen_fake(images, replace(sharpen_config(), variant="standard_ldm"), [0.5])


def test_pca_directions_recover_known_axes() -> None:
    gen = torch.Generator().manual_seed(2)
    rot = torch.linalg.qr(torch.randn(D, D, generator=gen, dtype=torch.float64))[0]
    scales = torch.tensor([3.0, 1.0, 0.5, 0.1], dtype=torch.float64)
    lat = (torch.randn(20000, D, generator=gen, dtype=torch.float64) * scales) @ rot.T + 5.0
    dirs = pca_directions(lat, 2)
    assert dirs.vectors.shape == (2, D) and dirs.stds.shape == (2,)
    for k in range(2):
        assert abs(float(dirs.vectors[k].double() @ rot[:, k])) > 0.999
        assert float(dirs.stds[k]) == pytest.approx(float(scales[k]), rel=0.03)
        assert float(dirs.vectors[k][dirs.vectors[k].abs().argmax()]) > 0
    assert dirs.labels[0].startswith("PC1 (")
    assert len(pca_directions(lat, 10).vectors) == D


def test_dimension_directions_order_by_std() -> None:
    lat = torch.randn(500, D) * torch.tensor([0.1, 2.0, 1.0, 0.0])
    dirs = dimension_directions(lat, max_dims=3)
    assert torch.equal(dirs.vectors, torch.eye(D)[[1, 2, 0]])
    assert dirs.labels[0].startswith("z1 ")
    assert len(dimension_directions(lat, None).vectors) == D


def test_traverse_shapes_centre_column_and_grid(tmp_path: Path) -> None:
    vae = FakeVAE()
    lat = torch.randn(300, D)
    dirs = pca_directions(lat, 3)
    values = traversal_values(2.0, 5)
    assert values.tolist() == pytest.approx([-2, -1, 0, 1, 2])
    section = section_defaults("sampling", {"traverse": {"steps": 20, "t_b": 0.6}})
    cfg = from_section(SamplingConfig, section, "sampling").traverse
    base = lat[0]

    def run(t_b: float) -> torch.Tensor:
        return traverse(fake_model, sigma, vae.decode_image, base, dirs, values, cfg, t_b=t_b,
                        progress=False)

    imgs = run(cfg.t_b)
    assert imgs.shape == (3, 5, C, H, H)
    assert torch.allclose(imgs[:, 2], imgs[0, 2].expand(3, -1, -1, -1))  # value 0 = the base
    assert not torch.allclose(imgs[0, 0], imgs[0, 4])
    again = run(cfg.t_b)
    assert torch.equal(again, imgs)
    # at t_b = 0 a traversal is a plain decode of the moved latents
    flat = run(0.0)
    moved = base + values[1] * dirs.stds[2] * dirs.vectors[2]
    assert torch.allclose(flat[2, 1], vae.decode_image(moved[None], torch.zeros(1))[0], atol=1e-6)
    path = tmp_path / "traversal_pca.png"
    save_traversal_grid(imgs, dirs, values, path, t_b=0.6)
    with Image.open(path) as img:
        assert img.format == "PNG"


def test_tile_layout_and_sample_grid(tmp_path: Path) -> None:
    imgs = torch.zeros(2, 3, 3, 4, 4)
    imgs[1, 2] = 1.0
    mosaic = tile(imgs, pad=1)
    assert mosaic.shape == (2 * 5 + 1, 3 * 5 + 1, 3)
    assert np.all(mosaic[6:10, 11:15] == 1.0) and np.all(mosaic[1:5, 1:5] == 0.0)
    assert np.all(mosaic[0] == 1.0)  # padding
    u8 = (torch.rand(10, 1, 8, 8) * 255).to(torch.uint8)
    path = tmp_path / "grid.png"
    save_sample_grid(u8, path, n_cols=4, title="samples")
    with Image.open(path) as img:
        assert img.format == "PNG"
    with pytest.raises(ValueError, match="channels"):
        save_sample_grid(torch.rand(2, 2, 8, 8), tmp_path / "bad.png", n_cols=2)
    assert not (tmp_path / "bad.png").exists()
    assert math.isfinite(float(mosaic.sum()))
