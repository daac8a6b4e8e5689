"""data.image_size 32-256: the VAE's conv stack, checkpoints that record the size, the patch-GAN,
LPIPS, the factor classifier and the dataset file at every size (CPU, seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from multibeta.core.image_size import IMAGE_SIZES, default_channels, patch_gan_fits
from multibeta.data.h5io import ImageDataset, chunk_rows, read_metadata, write_image_dataset
from multibeta.models.vae import MultiBetaVAE, VAEArch, load_vae
from multibeta.utils.checkpoint import CheckpointMismatchError, save_checkpoint
from multibeta.utils.device import select_runtime
from multibeta.vae.config import VAEConfig
from multibeta.vae.losses import PatchDiscriminator
from multibeta.vae.trainer import TensorSource, train_vae
from multibeta.workflow.config import ConfigError, resolve_config, section_defaults

CPU = select_runtime("cpu", "fp32")
SMALL_NET = {"latent_dim": 3, "arch": {"hidden_dim": 16, "time_embed_dim": 8, "sigma_hidden": 4}}
ATTRS = {"dataset": "t", "generator_version": 1, "seed": 0, "created_with": {}}


def cfg_of(**over) -> VAEConfig:
    return VAEConfig.from_section(section_defaults("vae", {**SMALL_NET, **over}))


def test_default_widths_follow_the_image_size_and_are_unchanged_at_64() -> None:
    assert default_channels(64) == (32, 32, 64, 64)
    assert default_channels(32) == (32, 64, 64)
    assert default_channels(128) == (32, 32, 32, 64, 64)
    assert default_channels(256) == (32, 32, 32, 32, 64, 64)
    for size in IMAGE_SIZES:  # every default ends at 4x4
        assert size // 2 ** len(default_channels(size)) == 4
    # the config as read: null widths become the image size's (so rules and hashes see lists)
    assert resolve_config({})["vae"]["arch"]["channels"] == [32, 32, 64, 64]
    assert resolve_config({"data": {"name": "shapes3d", "image_size": 128}})["vae"]["arch"]["channels"] == \
        [32, 32, 32, 64, 64]
    given = resolve_config({"data": {"name": "shapes3d", "image_size": 128}, "vae": {"arch": {"channels": [8, 16]}}})
    assert given["vae"]["arch"]["channels"] == [8, 16]


@pytest.mark.parametrize("size", IMAGE_SIZES)
def test_the_vae_encodes_and_decodes_every_size(size: int) -> None:
    arch = cfg_of(arch={**SMALL_NET["arch"], "channels": [4] * (len(default_channels(size)) - 1) + [8]}
                  ).vae_arch(3, size)
    model = MultiBetaVAE(arch)
    x = torch.rand(2, 3, size, size)
    mu, sigma, logits = model(x, torch.rand(2), torch.randn(2, 3))
    assert mu.shape == (2, 3) and logits.shape == (2, 3, size, size) and model.image_size == size


def test_too_many_levels_for_the_size_are_refused_naming_both_keys() -> None:
    cfg = cfg_of(arch={**SMALL_NET["arch"], "channels": [4] * 6})
    with pytest.raises(ConfigError, match=r"vae.arch.channels.*6 levels; 32x32 images \(data.image_size\) allow 1 to 5"):
        cfg.vae_arch(1, 32)
    assert cfg.vae_arch(1, 64).channels == (4,) * 6  # 64 -> 1x1 is still a stack


def test_a_checkpoint_records_its_image_size_and_one_without_it_is_64(tmp_path) -> None:
    cfg = cfg_of(arch={**SMALL_NET["arch"], "channels": [4, 8]})
    arch = cfg.vae_arch(3, 128)
    model = MultiBetaVAE(arch)
    save_checkpoint({"kind": "vae", "arch": arch.to_dict(), "model": model.state_dict()}, tmp_path / "m.pt")
    loaded, state = load_vae(tmp_path / "m.pt", arch=arch)
    assert loaded.image_size == 128 and state["arch"]["image_size"] == 128
    with pytest.raises(CheckpointMismatchError, match="image_size: checkpoint has 128, config asks for 64"):
        load_vae(tmp_path / "m.pt", arch=cfg.vae_arch(3, 64))
    old_arch = cfg.vae_arch(1, 64).to_dict()
    del old_arch["image_size"]  # a checkpoint written before image sizes existed
    save_checkpoint({"kind": "vae", "arch": old_arch, "model": MultiBetaVAE(cfg.vae_arch(1)).state_dict()},
                    tmp_path / "old.pt")
    old, _ = load_vae(tmp_path / "old.pt", arch=cfg.vae_arch(1))
    assert old.image_size == 64 and VAEArch.from_dict(old_arch).image_size == 64


@pytest.mark.parametrize("size", IMAGE_SIZES)
def test_the_patch_gan_has_patches_at_every_size_it_allows(size: int) -> None:
    for layers in range(1, 5):
        if not patch_gan_fits(size, layers):
            assert size == 32 and layers == 4
            continue
        out = PatchDiscriminator(3, 4, layers)(torch.rand(1, 3, size, size))
        assert out.shape[:2] == (1, 1) and min(out.shape[2:]) >= 1, (size, layers)


@pytest.fixture(scope="module")
def alexnet_features(tmp_path_factory) -> str:
    """torchvision AlexNet's ``features.*`` entries (random weights): what LPIPS reads."""
    import torchvision

    path = tmp_path_factory.mktemp("weights") / "alexnet-owt-7be5be79.pth"
    state = torchvision.models.alexnet(weights=None).state_dict()
    torch.save({k: v for k, v in state.items() if k.startswith("features.")}, path)
    return str(path)


@pytest.mark.parametrize("size", IMAGE_SIZES)
def test_lpips_works_at_every_size(alexnet_features: str, size: int) -> None:
    from multibeta.models.lpips import load_lpips

    model = load_lpips(alexnet_features, allow_download=False)
    a, b = torch.rand(2, 3, size, size), torch.rand(2, 3, size, size)
    d = model(a, b, normalize=True).flatten()
    assert d.shape == (2,) and torch.isfinite(d).all() and float(model(a, a, normalize=True).abs().max()) < 1e-6


def test_vae_training_with_lpips_and_gan_at_32_and_128(alexnet_features: str, tmp_path) -> None:
    for size in (32, 128):
        x = torch.randint(0, 256, (16, 3, size, size), dtype=torch.uint8)
        cfg = cfg_of(steps=3, batch_size=4, warmup_steps=1, log_every=1, checkpoint_every=100,
                     reconstruction="l1_lpips", lpips={"weights_path": alexnet_features},
                     gan={"weight": 0.5, "start_step": 1, "disc_channels": 4, "disc_layers": 3})
        result = train_vae(cfg, TensorSource(x), checkpoint_path=tmp_path / f"m{size}.pt",
                           log_csv=tmp_path / f"l{size}.csv", runtime=CPU)
        model, state = load_vae(tmp_path / f"m{size}.pt")
        assert result.completed and model.image_size == size
        assert state["arch"]["channels"] == list(default_channels(size)) and state["config"]["arch"]["channels"] == \
            list(default_channels(size))


@pytest.mark.parametrize("size", [32, 128])
def test_the_factor_classifier_is_built_for_the_data_size(size: int, tmp_path) -> None:
    from multibeta.metrics.config import MetricsConfig
    from multibeta.metrics.factor_classifier import load_factor_classifier, predict_probabilities, train_factor_classifier

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 3, size, size), dtype=np.uint8)
    labels = rng.integers(0, 3, (40, 2))
    cfg = MetricsConfig.from_section(section_defaults("metrics", {"factor_classifier": {
        "steps": 3, "batch_size": 8, "channels": 4, "width": 8}})).factor_classifier
    train_factor_classifier(images, labels, [3, 3], cfg, CPU, tmp_path / "c.pt", seed=0, factor_names=["a", "b"])
    model, state = load_factor_classifier(tmp_path / "c.pt")
    assert state["arch"]["image_size"] == size
    assert [p.shape for p in predict_probabilities(model, images[:5])] == [(5, 3), (5, 3)]


@pytest.mark.parametrize("size", IMAGE_SIZES)
def test_the_dataset_file_holds_every_size_and_says_which(size: int, tmp_path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (5, 3, size, size), dtype=np.uint8)
    path = tmp_path / "d.h5"
    write_image_dataset(path, images=images, split=np.zeros(5, np.int8), attrs=ATTRS, progress=False)
    assert read_metadata(path)["image_size"] == size
    data = ImageDataset(path)
    assert data.image_size == size and np.array_equal(data.uint8_batch([4, 0]), images[[4, 0]])
    import h5py

    with h5py.File(path, "r") as h5:
        assert h5["images"].chunks == (min(5, chunk_rows(size)), 3, size, size)
    assert chunk_rows(64) == 256  # the layout of every file written before
    with pytest.raises(ValueError, match=r"S one of \[32, 64, 128, 256\]"):
        write_image_dataset(tmp_path / "x.h5", images=np.zeros((2, 1, 48, 48), np.uint8),
                            split=np.zeros(2, np.int8), attrs=ATTRS)
