"""Attribute (probe) directions, matching PCA/ICA directions to factors, edit selectivity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from multibeta.sampling.settings import SamplerSettings

from multibeta.data.dsprites import FACTOR_NAMES, FACTOR_SIZES
from multibeta.metrics.edits import (
    EditScores,
    class_distance,
    distribution_change,
    factor_geometries,
    measure_edits,
    reference_change,
    symmetry_class_maps,
)
from multibeta.sampling.direction_plots import (
    direction_grid_title,
    save_direction_grid,
    save_edit_score_plot,
)
from multibeta.sampling.directions import (
    attribute_directions,
    correlation_ratio,
    default_categorical,
    denoise_function,
    direction_coordinates,
    edit_images,
    edit_pipeline,
    match_directions,
    select_directions,
)
from multibeta.sampling.edit import Directions, ica_directions, pca_directions

NAMES = ["smiling", "scale", "shape"]
SIZES = [2, 6, 3]


def _orthonormal(d: int, k: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q[:, :k].T  # [k, d]


def _synthetic(n: int = 1500, d: int = 8, seed: int = 0, mixing: np.ndarray | None = None):
    """Labels (binary, ordinal 6, categorical 3) and latents linear in known directions."""
    rng = np.random.default_rng(seed)
    labels = np.stack([rng.integers(0, s, n) for s in SIZES], axis=1)
    u = _orthonormal(d, 3, seed) if mixing is None else mixing
    signal = np.stack([
        2.0 * labels[:, 0] - 1.0,            # binary
        (labels[:, 1] - 2.5) / 1.7,          # ordinal index
        np.where(labels[:, 2] == 2, 1.5, -0.75),  # the target class of the categorical factor
    ], axis=1)
    latents = signal @ u + 0.1 * rng.normal(size=(n, d))
    return latents, labels, u


def _cos(a: np.ndarray | torch.Tensor, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_probe_recovers_known_directions_with_signs_and_scores():
    latents, labels, u = _synthetic()
    result = attribute_directions(torch.as_tensor(latents), labels, NAMES, SIZES, categorical={"shape": 2})
    vectors = result.directions.vectors.numpy()
    assert result.kinds == ("logistic", "ridge", "one_vs_rest")
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    for k in range(3):
        assert _cos(vectors[k], u[k]) > 0.95, (NAMES[k], _cos(vectors[k], u[k]))  # positive: sign too
    assert result.scores[0] > 0.95 and result.scores[2] > 0.95  # accuracies
    assert result.scores[1] > 0.9  # R² of the ordinal index
    assert result.chance[1] == 0.0 and 0.4 < result.chance[0] < 0.6
    stds = result.directions.stds.numpy()
    assert np.allclose(stds, (latents @ vectors.T).std(axis=0, ddof=1), rtol=1e-4)
    assert set(result.summary()) == {f"probe_{w}.{n}" for w in ("score", "chance") for n in NAMES}


def test_pattern_follows_mixed_factors_where_the_normal_does_not():
    # non-orthogonal mixing: the factors' latent directions are 60 degrees apart
    d = 6
    u = _orthonormal(d, 3, 1)
    mixing = np.stack([u[0], 0.5 * u[0] + np.sqrt(0.75) * u[1], u[2]])
    latents, labels, _ = _synthetic(d=d, mixing=mixing, seed=2)
    pattern = attribute_directions(latents, labels, NAMES, SIZES, categorical={"shape": 2}, orientation="pattern")
    normal = attribute_directions(latents, labels, NAMES, SIZES, categorical={"shape": 2}, orientation="normal")
    assert _cos(pattern.directions.vectors[1].numpy(), mixing[1]) > 0.95
    assert _cos(normal.directions.vectors[1].numpy(), mixing[1]) < 0.9


def test_probe_rejects_a_constant_factor_and_bad_labels():
    latents, labels, _ = _synthetic(n=200)
    labels[:, 0] = 1
    with pytest.raises(ValueError, match="smiling"):
        attribute_directions(latents, labels, NAMES, SIZES, categorical={})
    with pytest.raises(ValueError, match="out of range"):
        attribute_directions(latents, labels + 5, NAMES, SIZES)
    with pytest.raises(ValueError, match="colour"):
        attribute_directions(latents, labels, NAMES, SIZES, categorical={"colour": 0})


def test_default_categorical_is_the_dsprites_heart():
    assert default_categorical(FACTOR_NAMES, FACTOR_SIZES) == {"shape": 2}
    assert default_categorical(NAMES, SIZES) == {}


def test_match_directions_picks_the_principal_direction_of_each_factor():
    rng = np.random.default_rng(3)
    n, d = 2000, 6
    u = _orthonormal(d, 2, 3)
    labels = np.stack([rng.integers(0, 32, n), rng.integers(0, 6, n)], axis=1)  # posX-like, scale-like
    # factor 0 along u[1] with the smaller variance, factor 1 along -u[0] with the larger one
    latents = (labels[:, :1] / 31 - 0.5) * 1.0 * u[1] - (labels[:, 1:] / 5 - 0.5) * 4.0 * u[0]
    latents = latents + 0.05 * rng.normal(size=(n, d))
    pca = pca_directions(torch.as_tensor(latents), 4)
    match = match_directions(latents, labels, pca, names=["posX", "scale"], sizes=[32, 6])
    assert match.indices.tolist() == [1, 0]
    assert match.strengths.min() > 0.95 and match.association.shape == (2, 4)
    chosen = select_directions(pca, match, ["posX", "scale"])
    assert _cos(chosen.vectors[0].numpy(), u[1]) > 0.99
    assert _cos(chosen.vectors[1].numpy(), -u[0]) > 0.99  # sign: increasing the class index
    assert chosen.labels[0].startswith("posX: PC2")
    assert torch.equal(chosen.stds, pca.stds[[1, 0]])


def test_direction_coordinates_are_the_sources_of_non_orthogonal_directions():
    rng = np.random.default_rng(4)
    sources = rng.uniform(-1, 1, size=(500, 2))
    mixing = np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0]])
    latents = sources @ mixing + 1e-3 * rng.normal(size=(500, 3))
    dirs = Directions("ica", torch.as_tensor(mixing, dtype=torch.float32), torch.ones(2), ["IC1", "IC2"])
    coords = direction_coordinates(latents, dirs)
    assert np.allclose(coords, sources - sources.mean(0), atol=1e-2)
    # and ICA itself, matched to labels built from the sources
    labels = np.stack([np.digitize(sources[:, 0], [-0.5, 0, 0.5]), np.digitize(sources[:, 1], [0.0])], axis=1)
    match = match_directions(latents, labels, ica_directions(torch.as_tensor(latents), 2))
    assert sorted(match.indices.tolist()) == [0, 1] and match.strengths.min() > 0.8


def test_correlation_ratio_is_order_free():
    classes = np.repeat([0, 1, 2], 50)
    values = np.array([0.0, 5.0, -5.0])[classes]
    assert correlation_ratio(values, classes) == pytest.approx(1.0)
    assert correlation_ratio(np.ones(150), classes) == 0.0


# --------------------------------------------------------------------------- edit selectivity


N_FACTORS = 3
N_CLASSES = 6


def _fake_probabilities(images: torch.Tensor) -> list[torch.Tensor]:
    """'Images' [N, 1, 1, F] hold the factor values; each factor reads as a soft class."""
    vals = images.reshape(len(images), -1)
    centres = torch.arange(N_CLASSES, dtype=torch.float32)
    return [torch.softmax(-8.0 * (vals[:, j, None] - centres) ** 2, dim=1) for j in range(vals.shape[1])]


def _images(n: int = 40) -> torch.Tensor:
    """Every factor of image n has the same value, so every factor's reference is the same."""
    rng = np.random.default_rng(5)
    values = rng.integers(1, N_CLASSES - 1, size=(n, 1, 1, 1))
    return torch.as_tensor(np.repeat(values, N_FACTORS, axis=3), dtype=torch.float32)


def _measure(directions: Directions, amounts) -> EditScores:
    return measure_edits(
        _images(), directions, amounts,
        encode=lambda x: x.reshape(len(x), -1), render=lambda z: z.reshape(len(z), 1, 1, -1),
        probabilities=_fake_probabilities, names=[f"f{j}" for j in range(N_FACTORS)],
    )


def test_an_edit_of_the_target_only_scores_one():
    dirs = Directions("axes", torch.eye(N_FACTORS), torch.ones(N_FACTORS), ["a", "b", "c"])
    scores = _measure(dirs, [-1.0, 1.0])
    assert scores.change.shape == (2, N_FACTORS, N_FACTORS)
    assert np.allclose(scores.score, 1.0)
    # a one-class move of an ordinal factor with 6 classes: W1 = 1/5, in units of the reference
    assert np.allclose(scores.change[:, [0, 1, 2], [0, 1, 2]], 0.2, atol=1e-3)
    assert np.allclose(scores.target_change, 0.2 / scores.reference, atol=1e-3)
    assert np.allclose(scores.off_target_change, 0.0)
    summary = scores.summary()
    assert summary["score"] == pytest.approx(1.0) and summary["change.f0.f1"] == 0.0


def test_an_edit_that_moves_every_factor_scores_one_half():
    diagonal = torch.ones(N_FACTORS, N_FACTORS) / N_FACTORS**0.5
    dirs = Directions("diag", diagonal, torch.full((N_FACTORS,), N_FACTORS**0.5), ["a", "b", "c"])
    scores = _measure(dirs, [1.0])
    assert np.allclose(scores.score, 0.5, atol=1e-6)
    assert np.all(scores.target_change > 0.3)


def test_a_no_op_edit_changes_nothing():
    dirs = Directions("axes", torch.eye(N_FACTORS), torch.ones(N_FACTORS), ["a", "b", "c"])
    scores = _measure(dirs, [0.0])
    assert np.all(scores.target_change == 0.0) and np.all(scores.change == 0.0)
    assert np.allclose(scores.score, 0.5)  # no evidence of selectivity


def test_changes_are_relative_to_the_difference_between_images():
    # factor f1 spans 5 classes among the images, f0 only 2: the same one-class move of each is a
    # bigger change, relative to how much images differ, for f0
    rng = np.random.default_rng(6)
    images = torch.as_tensor(np.stack([rng.integers(2, 4, 60), rng.integers(0, 5, 60), np.full(60, 2)],
                                      axis=1).reshape(60, 1, 1, 3), dtype=torch.float32)
    dirs = Directions("axes", torch.eye(2, N_FACTORS), torch.ones(2), ["a", "b"])
    scores = measure_edits(images, dirs, [1.0], encode=lambda x: x.reshape(len(x), -1),
                           render=lambda z: z.reshape(len(z), 1, 1, -1), probabilities=_fake_probabilities,
                           names=["f0", "f1", "f2"])
    assert scores.change[0, 0, 0] == pytest.approx(scores.change[0, 1, 1], abs=1e-3)
    assert scores.target_change[0] > 1.5 * scores.target_change[1]
    assert scores.reference[2] < 1e-3 and np.all(np.isfinite(scores.relative_change))


def test_measure_edits_with_targets_and_baseline_accuracy():
    images = _images()
    labels = images.reshape(len(images), -1).long().numpy()
    dirs = Directions("one", torch.eye(N_FACTORS)[[2]], torch.ones(1), ["c"])
    scores = measure_edits(
        images, dirs, [1.0], encode=lambda x: x.reshape(len(x), -1),
        render=lambda z: z.reshape(len(z), 1, 1, -1), probabilities=_fake_probabilities,
        names=["f0", "f1", "f2"], targets=[2], labels=labels, family="attribute",
    )
    assert scores.family == "attribute" and scores.change[0, 0, 2] == pytest.approx(0.2, abs=1e-3)
    assert np.allclose(scores.baseline_accuracy, 1.0) and scores.score == pytest.approx([1.0])
    assert set(scores.summary()) >= {"score.f2", "target_change.f2", "baseline_accuracy.f0", "reference.f1"}
    with pytest.raises(ValueError, match="targets"):
        measure_edits(images, dirs, [1.0], encode=lambda x: x, render=lambda z: z,
                      probabilities=_fake_probabilities, names=["f0"], targets=[3])


def test_class_distance_on_each_geometry():
    eye = torch.eye(8, dtype=torch.float64)
    assert class_distance(eye[[0]], eye[[3]], "ordinal").item() == pytest.approx(3 / 7)
    assert class_distance(eye[[0]], eye[[7]], "ordinal").item() == pytest.approx(1.0)
    assert class_distance(eye[[0]], eye[[7]], "cyclic").item() == pytest.approx(1 / 4)  # neighbours
    assert class_distance(eye[[1]], eye[[5]], "cyclic").item() == pytest.approx(1.0)  # opposite
    assert class_distance(eye[[0]], eye[[3]], "categorical").item() == pytest.approx(1.0)
    spread = torch.full((1, 8), 1 / 8, dtype=torch.float64)
    assert 0 < class_distance(eye[[3]], spread, "ordinal").item() < 1  # same mean, not the same
    two = torch.tensor([[0.9, 0.1]])
    for geometry in ("categorical", "ordinal", "cyclic"):
        assert class_distance(two, two.flip(1), geometry).item() == pytest.approx(0.8)


def test_dsprites_geometries_and_orientation_quarter_turns():
    assert factor_geometries(FACTOR_NAMES, FACTOR_SIZES) == ["categorical", "ordinal", "cyclic", "ordinal", "ordinal"]
    assert factor_geometries(NAMES, SIZES) == ["ordinal"] * 3
    maps = symmetry_class_maps(FACTOR_NAMES, FACTOR_SIZES)
    assert [m is None for m in maps] == [True, True, False, True, True]
    one_hot = torch.eye(40)
    assert distribution_change([one_hot[[3]]], [one_hot[[13]]], ["cyclic"], [maps[2]]) == pytest.approx([0.0])
    assert distribution_change([one_hot[[3]]], [one_hot[[13]]], ["cyclic"]) == pytest.approx([0.5])
    # pooled modulo 10 and still cyclic: 9 and 10 (= 0) are neighbours
    assert distribution_change([one_hot[[9]]], [one_hot[[10]]], ["cyclic"], [maps[2]]) == pytest.approx([0.2])
    ref = reference_change([one_hot[[0, 0, 20]]], ["ordinal"])
    assert ref == pytest.approx([2 * (20 / 39) / 3])


# --------------------------------------------------------------------------- pipelines and figures


def test_edit_pipeline_without_denoiser_decodes_at_zero_and_renders_edits():
    calls: list[float] = []

    def encoder(x, t):
        calls.append(float(t[0]))
        return x.reshape(len(x), -1)[:, :2]

    def decoder(z, t):
        assert torch.all(t == 0)
        return torch.sigmoid(z).reshape(len(z), 1, 1, 2)

    with pytest.raises(ValueError, match="t = 0"):
        edit_pipeline(encoder, decoder, t=0.5, denoise=None, batch_size=4)
    pipe = edit_pipeline(encoder, decoder, t=0.0, denoise=None, batch_size=4)
    images = torch.rand(5, 1, 1, 2)
    dirs = Directions("axes", torch.eye(2), torch.ones(2), ["a", "b"])
    out = edit_images(images, dirs, [-1.0, 0.0, 1.0], pipe)
    assert out.shape == (5, 2, 3, 1, 1, 2) and calls == [0.0, 0.0]
    assert torch.allclose(out[:, 0, 1], torch.sigmoid(images))  # amount 0 = the plain reconstruction
    assert torch.allclose(out[:, 1, 2, ..., 1], torch.sigmoid(images[..., 1] + 1))


def test_denoise_function_at_level_zero_is_the_identity():
    def model(z, t):  # never called at t_b = 0
        raise AssertionError("the denoiser must not run at t_b = 0")

    settings = SamplerSettings(variant="multibeta", steps=4, eta=0.0, solver="euler",
                               spacing="uniform", seed=0, batch_size=8)
    z = torch.randn(3, 4)
    denoise = denoise_function(model, lambda t: t, t_b=0.0, settings=settings)
    assert torch.equal(denoise(z), z)
    pipe = edit_pipeline(lambda x, t: x, lambda z, t: z, t=0.0, denoise=denoise, batch_size=2)
    assert torch.allclose(pipe.render(z.clamp(0, 1)), z.clamp(0, 1))


def test_figures_are_written(tmp_path):
    dirs = Directions("attribute", torch.eye(2), torch.ones(2), ["shape", "scale"])
    grid = torch.rand(2, 3, 1, 8, 8)
    save_direction_grid(grid, dirs, [-1.0, 0.0, 1.0], tmp_path / "grid.png",
                        title=direction_grid_title("attribute", 0.5, denoised=True))
    assert (tmp_path / "grid.png").stat().st_size > 0
    with pytest.raises(ValueError, match="expected images"):
        save_direction_grid(grid[:1], dirs, [-1.0, 0.0, 1.0], tmp_path / "bad.png", title="x")
    save_edit_score_plot({"attribute": (["shape", "scale"], [0.9, 0.7], [0.5, 0.8]),
                          "pca": (["scale"], [0.6], [0.4])}, tmp_path / "scores.png")
    assert (tmp_path / "scores.png").stat().st_size > 0
