"""FID/KID (torch-fidelity), the factor-classifier feature space, and pretrained-weights handling.

Everything runs offline on CPU in seconds: the domain feature space is a factor classifier
trained here on tiny synthetic images; the Inception path is checked with a randomly
initialised weights file (it proves the loading path only) on a dozen images.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np
import pytest
import torch

from multibeta.models import pretrained as fetch
from multibeta.metrics.config import MetricsConfig
from multibeta.metrics.factor_classifier import (
    EXTRACTOR_NAME,
    FactorClassifier,
    load_factor_classifier,
    register_factor_classifier_extractor,
    train_factor_classifier,
)
from multibeta.models.pretrained import WeightsError, download, fetch_weights, resolve_weights
from multibeta.metrics.fidelity import (
    ReferenceMismatchError,
    compute_fidelity,
    extract_features,
    factor_classifier_feature_space,
    feature_space,
    inception_feature_space,
    load_reference_features,
    reference_images,
)
from multibeta.utils.device import select_runtime
from multibeta.workflow.config import section_defaults

SIZES = (2, 4, 4)  # shape (square side), x, y
UNREACHABLE = "http://127.0.0.1:9/weights.pth"


def _cfg(**overrides) -> MetricsConfig:
    base = {
        "factor_classifier": {"steps": 150, "batch_size": 32, "width": 32, "channels": 8},
        "generation": {"kid_subset_size": 100, "kid_subsets": 20, "batch_size": 100},
    }
    for key, value in overrides.items():
        base[key] = {**base.get(key, {}), **value}
    return MetricsConfig.from_section(section_defaults("metrics", base))


def _shapes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Squares of 2 sizes on a 4x4 grid of positions: uint8 [n, 1, 64, 64] and classes [n, 3]."""
    rng = np.random.default_rng(seed)
    f = np.stack([rng.integers(0, k, size=n) for k in SIZES], axis=1)
    images = np.zeros((n, 1, 64, 64), np.uint8)
    for i, (s, x, y) in enumerate(f):
        r, cx, cy = 4 + 4 * s, 8 + 14 * x, 8 + 14 * y
        images[i, 0, max(cy - r, 0):cy + r, max(cx - r, 0):cx + r] = 255
    return images, f


@pytest.fixture(scope="module")
def runtime():
    return select_runtime("cpu")


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return _shapes(600, seed=0)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, data, runtime) -> tuple[str, dict]:
    images, f = data
    path = tmp_path_factory.mktemp("fc") / "factor_classifier.pt"
    res = train_factor_classifier(images, f, SIZES, _cfg().factor_classifier, runtime, path, seed=0,
                                  factor_names=["size", "x", "y"])
    return str(path), res


# --- factor classifier --------------------------------------------------------------------


def test_factor_classifier_learns_and_saves(classifier, data) -> None:
    path, res = classifier
    assert res["accuracy"] > 0.9 and res["accuracy.size"] > 0.9 and res["n_heldout"] == 60
    assert res["seed"] == 0 and res["elapsed_s"] > 0
    model, state = load_factor_classifier(path)
    assert state["kind"] == "factor_classifier" and state["arch"]["factor_sizes"] == list(SIZES)
    assert state["factor_names"] == ["size", "x", "y"]
    x = torch.from_numpy(data[0][:540]).float() / 255  # ~ the training images
    feats = model.features(x)
    assert feats.shape == (540, 32)
    assert feats.mean(0).abs().max() < 0.2 and abs(feats.var(0, unbiased=False).mean().item() - 1) < 0.2


def test_factor_classifier_rejects_misaligned_labels(data, runtime, tmp_path) -> None:
    images, f = data
    with pytest.raises(ValueError, match="aligned"):
        train_factor_classifier(images, f[:10], SIZES, _cfg().factor_classifier, runtime, tmp_path / "x.pt", seed=0)
    with pytest.raises(ValueError, match="out of range"):
        train_factor_classifier(images, f + 5, SIZES, _cfg().factor_classifier, runtime, tmp_path / "x.pt", seed=0)


def test_extractor_registration_is_idempotent() -> None:
    assert register_factor_classifier_extractor() == EXTRACTOR_NAME
    assert register_factor_classifier_extractor() == EXTRACTOR_NAME


def test_factor_classifier_forward_shapes() -> None:
    model = FactorClassifier(in_channels=3, factor_sizes=[3, 5], channels=4, width=8)
    logits = model(torch.rand(2, 3, 64, 64))
    assert [tuple(lg.shape) for lg in logits] == [(2, 3), (2, 5)]


# --- FID / KID in the domain feature space ------------------------------------------------


def test_fid_against_itself_is_zero_and_grows_with_noise(classifier, data, runtime, tmp_path) -> None:
    path, _ = classifier
    space = factor_classifier_feature_space(path)
    cfg = _cfg(generation={"kid_subset_size": 300, "kid_subsets": 3}).generation  # whole sets
    images = data[0]
    ref = tmp_path / "ref.pt"
    same = compute_fidelity(images[:300], images[:300], space, runtime, cfg, seed=0, reference_cache=ref)
    assert abs(same["fid"]) < 1e-6
    # KID is unbiased for independent sets: ~0 between two draws of the same distribution
    # (a set against itself is not independent: the x_i == y_i kernel terms bias it by O(1/n)).
    # With 300 images the estimate's sampling noise is a few hundredths; the noisy copies below
    # must score above it.
    indep = compute_fidelity(images[300:], images[:300], space, runtime, cfg, seed=0, reference_cache=ref)
    assert abs(indep["kid_mean"]) < 0.05
    assert same["classifier_accuracy"] > 0.9 and same["n_samples"] == 300 and same["seed"] == 0
    rng = np.random.default_rng(1)
    fids, kids = [], []
    for sigma in (90.0, 200.0, 400.0):  # the smallest must exceed the halves' sampling noise
        noisy = np.clip(images[:300] + rng.normal(0, sigma, images[:300].shape), 0, 255).astype(np.uint8)
        res = compute_fidelity(noisy, images[:300], space, runtime, cfg, seed=0, reference_cache=ref)
        fids.append(res["fid"])
        kids.append(res["kid_mean"])
    assert 0 < fids[0] < fids[1] < fids[2]
    assert indep["fid"] < fids[0]
    assert abs(indep["kid_mean"]) < kids[0] < kids[1] < kids[2]


def test_cached_reference_matches_calculate_metrics(classifier, data, runtime, tmp_path) -> None:
    path, _ = classifier
    space = factor_classifier_feature_space(path)
    cfg = _cfg().generation
    images = data[0]
    noisy = np.clip(images[:250].astype(float) + 40 * np.random.default_rng(2).normal(size=images[:250].shape),
                    0, 255).astype(np.uint8)
    direct = compute_fidelity(noisy, images[300:], space, runtime, cfg, seed=3)  # calculate_metrics
    ref = tmp_path / "ref.pt"
    built = compute_fidelity(noisy, images[300:], space, runtime, cfg, seed=3, reference_cache=ref, reference_id="r1")
    assert ref.is_file()
    stamp = os.stat(ref).st_mtime_ns
    loaded = compute_fidelity(noisy, images[300:], space, runtime, cfg, seed=3, reference_cache=ref, reference_id="r1")
    assert os.stat(ref).st_mtime_ns == stamp  # read, not rewritten
    for key in ("fid", "kid_mean", "kid_std", "n_samples", "n_reference"):
        assert built[key] == pytest.approx(direct[key], rel=1e-6, abs=1e-9)
        assert loaded[key] == built[key]
    feats = load_reference_features(ref, space, reference_id="r1")
    assert feats.shape == (300, 32)
    from_feats = compute_fidelity(noisy, feats, space, runtime, cfg, seed=3)
    assert from_feats["fid"] == built["fid"]
    cache_only = compute_fidelity(noisy, None, space, runtime, cfg, seed=3, reference_cache=ref)
    assert cache_only["fid"] == built["fid"]
    with pytest.raises(ValueError, match="no reference"):
        compute_fidelity(noisy, None, space, runtime, cfg, seed=3, reference_cache=tmp_path / "none.pt")
    with pytest.raises(ReferenceMismatchError, match="reference_id"):
        load_reference_features(ref, space, reference_id="another-set")
    other = dataclasses.replace(space, weights_sha256="0" * 64)
    with pytest.raises(ReferenceMismatchError, match="weights_sha256"):
        load_reference_features(ref, other)


def test_kid_subset_clipped_and_max_samples(classifier, data, runtime) -> None:
    space = factor_classifier_feature_space(classifier[0])
    cfg = _cfg(generation={"kid_subset_size": 1000, "max_samples": 50}).generation
    res = compute_fidelity(data[0][:200], data[0][200:260], space, runtime, cfg, seed=0)
    assert res["kid_subset_size"] == 50 and res["n_samples"] == 50 and res["n_reference"] == 60


def test_float_images_and_rgb_input(classifier, data, runtime) -> None:
    space = factor_classifier_feature_space(classifier[0])
    as_uint8 = extract_features(data[0][:20], space, runtime)
    as_float = extract_features(data[0][:20].astype(np.float32) / 255.0, space, runtime)
    torch.testing.assert_close(as_uint8, as_float)
    rgb = extract_features(np.repeat(data[0][:20], 3, axis=1), space, runtime)  # averaged to 1 channel
    torch.testing.assert_close(as_uint8, rgb)


def test_reference_images_from_dataset_file(tmp_path) -> None:
    from multibeta.data.h5io import write_image_dataset

    images, f = _shapes(40, seed=3)
    split = np.r_[np.zeros(30), np.ones(10)].astype(np.int8)
    path = tmp_path / "ds-abc" / "dataset.h5"
    write_image_dataset(path, images=images, split=split, attrs={
        "dataset": "test", "generator_version": 1, "seed": 0, "created_with": {}}, progress=False)
    source, ref_id = reference_images(path, 12, seed=0)
    assert len(source) == 12 and ref_id == "ds-abc/dataset.h5:train:12:0"
    batch = source.uint8_batch(np.arange(12))
    assert batch.shape == (12, 1, 64, 64)
    rows = source.rows
    assert (rows < 30).all() and len(set(rows)) == 12
    np.testing.assert_array_equal(batch, images[rows])


# --- Inception: weights handling ---------------------------------------------------------


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home"


@pytest.fixture
def offline(monkeypatch):
    """Every download URL points at a closed local port."""
    for name, spec in fetch.PRETRAINED_FILES.items():
        monkeypatch.setitem(fetch.PRETRAINED_FILES, name, dataclasses.replace(spec, urls=(UNREACHABLE,)))


def test_missing_inception_file_names_the_key(tmp_path) -> None:
    with pytest.raises(WeightsError, match=r"metrics\.inception_weights") as err:
        inception_feature_space(tmp_path / "nope.pth")
    assert "fetch_weights" in str(err.value)


def test_offline_default_inception_names_the_key(empty_torch_home, offline) -> None:
    with pytest.raises(WeightsError, match=r"metrics\.inception_weights") as err:
        inception_feature_space(None, timeout_s=5)
    assert "fetch_weights" in str(err.value) and "127.0.0.1:9" in str(err.value)
    with pytest.raises(WeightsError, match="fetch_weights"):
        resolve_weights("inception", None, allow_download=False)


def test_feature_space_by_name(tmp_path) -> None:
    cfg = _cfg()
    cfg = dataclasses.replace(cfg, inception_weights=str(tmp_path / "missing.pth"))
    with pytest.raises(WeightsError, match=r"metrics\.inception_weights"):
        feature_space("inception", cfg)
    with pytest.raises(ValueError, match="checkpoint"):
        feature_space("factor_classifier", cfg)


def _random_inception_weights(path, monkeypatch) -> None:
    """A randomly initialised Inception state dict (the real one cannot be downloaded here)."""
    import torch_fidelity.feature_extractor_inceptionv3 as inc

    with monkeypatch.context() as m:
        m.setattr(inc, "load_state_dict_from_url", lambda *a, **k: {})
        m.setattr(inc.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None)
        model = inc.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    torch.save(model.state_dict(), path)


def test_inception_path_with_local_weights_file(tmp_path, runtime, monkeypatch) -> None:
    weights = tmp_path / "inception.pth"
    _random_inception_weights(weights, monkeypatch)
    space = inception_feature_space(weights)
    assert space.channels == 3 and space.layer == "2048"
    images, _ = _shapes(4, seed=5)  # 1-channel: repeated to 3 for Inception
    # Features only: FID on 2048-d features costs ~6 s of eigvals on CPU, and the FID/KID
    # code after extraction is the one tested with the factor classifier above.
    feats = extract_features(images, space, runtime, batch_size=4)
    assert feats.shape == (4, 2048) and torch.isfinite(feats).all()


# --- fetch --------------------------------------------------------------------------------


def test_fetch_offline_gives_a_clear_error(tmp_path) -> None:
    with pytest.raises(WeightsError) as err:
        fetch_weights(tmp_path / "w", names=["lpips_alexnet"], timeout_s=5,
                      urls={"lpips_alexnet": (UNREACHABLE,)})
    msg = str(err.value)
    assert "127.0.0.1:9" in msg and "offline" in msg and "metrics.lpips_weights" in msg
    assert not any((tmp_path / "w").glob("*")) if (tmp_path / "w").exists() else True


def test_download_checks_sha256_and_writes_atomically(tmp_path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"pretend weights")
    prefix = hashlib.sha256(b"pretend weights").hexdigest()[:8]
    dest = tmp_path / "out" / "w.pth"
    assert download([src.as_uri()], dest, sha256_prefix=prefix, timeout_s=5) == dest
    assert dest.read_bytes() == b"pretend weights"
    bad = tmp_path / "out" / "bad.pth"
    with pytest.raises(WeightsError, match="checksum"):
        download([src.as_uri()], bad, sha256_prefix="00000000", timeout_s=5)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["w.pth"]  # no partial file


def test_fetch_weights_file_layout(tmp_path, monkeypatch) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"alexnet bytes")
    digest = hashlib.sha256(b"alexnet bytes").hexdigest()
    monkeypatch.setitem(fetch.PRETRAINED_FILES, "lpips_alexnet", dataclasses.replace(
        fetch.LPIPS_ALEXNET, urls=(src.as_uri(),), sha256_prefix=digest[:8]))
    out = fetch_weights(tmp_path / "w", names=["lpips_alexnet"])
    assert out["lpips_alexnet"] == tmp_path / "w" / "alexnet-owt-7be5be79.pth"
    assert out["lpips_alexnet"].read_bytes() == b"alexnet bytes"
    src.unlink()  # present and valid: not downloaded again
    assert fetch_weights(tmp_path / "w", names=["lpips_alexnet"]) == out
