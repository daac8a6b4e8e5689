"""Reconstruction metrics: MSE/PSNR hand values, LPIPS loading from a local AlexNet file, offline errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from multibeta.models import pretrained as fetch
from multibeta.models.pretrained import WeightsError
from multibeta.metrics.reconstruction import PSNR_CAP_DB, compute_reconstruction, wants_lpips
from multibeta.models.lpips import load_lpips
from multibeta.utils.io import file_sha256


def test_mse_psnr_hand_values() -> None:
    x = torch.zeros(2, 1, 8, 8)
    x_hat = torch.empty(2, 1, 8, 8)
    x_hat[0] = 0.1    # MSE 1e-2 -> 20 dB
    x_hat[1] = 0.01   # MSE 1e-4 -> 40 dB
    res = compute_reconstruction(x, x_hat)
    assert res["mse"] == pytest.approx((1e-2 + 1e-4) / 2, rel=1e-6)
    assert res["psnr"] == pytest.approx(30.0, rel=1e-6)  # mean of per-image PSNRs
    assert res["n_images"] == 2 and "lpips" not in res and res["elapsed_s"] >= 0
    exact = compute_reconstruction(x, x)
    assert exact["mse"] == 0 and exact["psnr"] == pytest.approx(PSNR_CAP_DB)


def test_uint8_and_float_inputs_agree() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(3, 3, 16, 16), dtype=np.uint8)
    b = rng.integers(0, 256, size=(3, 3, 16, 16), dtype=np.uint8)
    r1 = compute_reconstruction(a, b)
    r2 = compute_reconstruction(a / 255.0, b.astype(np.float32) / 255.0)
    assert r1["mse"] == pytest.approx(r2["mse"], rel=1e-5) and r1["psnr"] == pytest.approx(r2["psnr"], rel=1e-5)


def test_rejects_logits_and_shape_mismatch() -> None:
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        compute_reconstruction(x, x * 4 - 2)
    with pytest.raises(ValueError, match="shape"):
        compute_reconstruction(x, x[:1])


def test_wants_lpips() -> None:
    assert wants_lpips("auto", 3) and not wants_lpips("auto", 1)
    assert wants_lpips("always", 1) and not wants_lpips("never", 3)


# --- LPIPS weights ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory):
    """A randomly initialised torchvision AlexNet state dict (the real one cannot be downloaded here)."""
    import torchvision

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "alexnet-owt-7be5be79.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    return path


def test_lpips_loads_backbone_from_file(alexnet_file) -> None:
    model = load_lpips(alexnet_file)
    saved = torch.load(alexnet_file, weights_only=True)
    torch.testing.assert_close(model.net.slice1[0].weight, saved["features.0.weight"])
    torch.testing.assert_close(model.net.slice5._modules["10"].bias, saved["features.10.bias"])
    assert model.weights_sha256 == file_sha256(alexnet_file)

    rng = np.random.default_rng(1)
    x = rng.random((4, 3, 64, 64)).astype(np.float32)
    same = compute_reconstruction(x, x, lpips_model=model, batch_size=2)
    noisy = np.clip(x + rng.normal(0, 0.3, x.shape), 0, 1).astype(np.float32)
    worse = compute_reconstruction(x, noisy, lpips_model=model, batch_size=2)
    assert same["lpips"] == pytest.approx(0.0, abs=1e-6) and worse["lpips"] > 0
    gray = compute_reconstruction(x[:, :1], noisy[:, :1], lpips_model=model)  # repeated to 3 channels
    assert gray["lpips"] > 0


def test_missing_lpips_file_names_the_key(tmp_path) -> None:
    with pytest.raises(WeightsError, match=r"metrics\.lpips_weights") as err:
        load_lpips(tmp_path / "missing.pth")
    assert "fetch_weights" in str(err.value)


def test_offline_default_lpips_names_the_key(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setitem(fetch.PRETRAINED_FILES, "lpips_alexnet",
                        dataclasses.replace(fetch.LPIPS_ALEXNET, urls=("http://127.0.0.1:9/alexnet.pth",)))
    with pytest.raises(WeightsError, match=r"metrics\.lpips_weights") as err:
        load_lpips(None, timeout_s=5)
    assert "fetch_weights" in str(err.value)


def test_wrong_lpips_file_is_reported(tmp_path) -> None:
    bad = tmp_path / "bad.pth"
    torch.save({"something": torch.zeros(3)}, bad)
    with pytest.raises(WeightsError, match="AlexNet"):
        load_lpips(bad)
