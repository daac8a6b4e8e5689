"""The dSprites rulers on generated data with known answers.

The render-consistency search is checked with an oracle classifier (one-hot probabilities of
the true factors), so every expected value is exact: true images score IoU 1, shifted or
blurred copies score exactly what their overlap with the true rendering allows, an all-black
set scores no valid image, and a one-mode sample set covers the factor distribution badly.
The classifier's symmetric loss and its accuracy modulo each shape's symmetry are checked on
dSprites' own equal images.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from multibeta.data.dsprites import FACTOR_NAMES, FACTOR_SIZES, NUM_IMAGES, factor_grid, render
from multibeta.metrics.factor_classifier import (
    FactorClassifier, classification_loss, factor_accuracy, label_symmetry, predict_probabilities,
)
from multibeta.metrics.render_consistency import (
    binarise, coverage, iou, render_consistency, render_fit, score_images,
)


def _grid_sample(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rows = np.random.default_rng(seed).choice(NUM_IMAGES, n, replace=False)
    classes = factor_grid(rows)[0]
    return render(classes), classes


def _oracle(classes: np.ndarray) -> list[torch.Tensor]:
    return [F.one_hot(torch.as_tensor(classes[:, k]), size).float() for k, size in enumerate(FACTOR_SIZES)]


def test_true_images_score_iou_one() -> None:
    images, classes = _grid_sample(300)
    fit = render_fit(images, _oracle(classes))
    assert np.all(fit.iou == 1.0)
    # the best rendering is the image itself: same shape, scale, position; orientation modulo symmetry
    np.testing.assert_array_equal(fit.factor_classes[:, [0, 1, 3, 4]], classes[:, [0, 1, 3, 4]])
    summary = render_consistency(fit)
    assert summary["render_iou"] == 1.0 and summary["valid_fraction"] == 1.0


def test_shifted_and_blurred_copies_score_their_exact_overlap() -> None:
    images, classes = _grid_sample(200, seed=1)
    interior = (classes[:, 3] >= 3) & (classes[:, 3] <= 28)  # shifts stay inside the grid
    images, classes = images[interior], classes[interior]
    truth = binarise(images)
    # a shift by 1 px is inside the search window: still a perfect dSprite
    one = np.roll(images, 1, axis=3)
    assert np.all(render_fit(one, _oracle(classes)).iou == 1.0)
    # a shift by 3 px is outside it: the score is at most the overlap with the best candidate,
    # which is the true rendering moved by 1 px (known exactly)
    three = np.roll(images, 3, axis=3)
    fit = render_fit(three, _oracle(classes))
    expected = iou(binarise(three), torch.roll(truth, 1, dims=2)).numpy()
    assert np.all(fit.iou >= expected - 1e-12)
    assert fit.iou.mean() < 0.8
    assert render_consistency(fit)["valid_fraction"] < 0.1
    # blurred then re-binarised: corners round off, the true rendering is still a candidate
    blurred = F.avg_pool2d(torch.as_tensor(images).float() / 255.0, 5, stride=1, padding=2)
    blurred = (blurred > 0.6).float()
    fit = render_fit(blurred, _oracle(classes))
    own = iou(binarise(blurred), truth).numpy()
    assert np.all(fit.iou >= own - 1e-12)  # never below the overlap with the true rendering
    assert 0.5 < fit.iou.mean() < 0.95


def test_black_and_disc_images_are_not_valid() -> None:
    images, classes = _grid_sample(64, seed=2)
    black = np.zeros_like(images)
    summary = render_consistency(render_fit(black, _oracle(classes)))
    assert summary["valid_fraction"] == 0.0 and summary["render_iou"] == 0.0
    # a disc of the square's area in place of every square scores about 0.83 (< 0.9)
    squares = classes[classes[:, 0] == 0]
    discs = np.zeros((len(squares), 1, 64, 64), np.uint8)
    yy, xx = np.mgrid[:64, :64]
    for i, c in enumerate(squares):
        side = 21.0 * (0.5 + 0.1 * c[1])
        cy, cx = c[4] + 16, c[3] + 16
        discs[i, 0][(yy - cy) ** 2 + (xx - cx) ** 2 <= side**2 / np.pi] = 255
    fit = render_fit(discs, _oracle(squares))
    assert fit.iou.max() < 0.9
    assert 0.7 < fit.iou.mean() < 0.9


def test_coverage_flags_a_single_mode_and_accepts_the_data() -> None:
    _, reference = _grid_sample(20000, seed=3)
    _, draw = _grid_sample(2000, seed=4)
    good = coverage(draw, reference)
    for f in ("shape", "scale", "posX", "posY"):
        assert good[f"tv.{f}"] < 2.5 * good[f"tv_floor.{f}"] + 0.01
    mode = coverage(np.repeat(draw[:1], 2000, axis=0), reference)
    assert mode["tv.shape"] == pytest.approx(2 / 3, abs=0.02)
    assert mode["tv.posX"] > 0.9 and mode["tv_max"] > 0.9
    empty = coverage(np.zeros((0, 5), np.int64), reference)
    assert empty["tv_max"] == 1.0


def test_symmetric_orientation_loss_and_accuracy() -> None:
    symmetry = label_symmetry(FACTOR_NAMES, FACTOR_SIZES)
    assert symmetry is not None and symmetry.periods == (10, 20, 40)
    labels = torch.tensor([[0, 0, 3, 0, 0], [1, 0, 3, 0, 0], [2, 0, 3, 0, 0]])
    # all probability on orientation 13: right for the square (period 10), wrong for the others
    logits = [torch.zeros(3, k) for k in FACTOR_SIZES]
    logits[2] = torch.full((3, 40), -30.0)
    logits[2][:, 13] = 30.0
    per_row = [float(classification_loss([lg[i:i + 1] for lg in logits], labels[i:i + 1], symmetry))
               for i in range(3)]
    base = sum(np.log(k) for k in (3, 6, 32, 32))  # the uniform heads
    assert per_row[0] == pytest.approx(base, abs=1e-3)
    assert per_row[1] > base + 10 and per_row[2] > base + 10
    predicted = labels.clone().numpy()
    predicted[:, 2] = [13, 23, 4]  # square +10 (equal image), ellipse +20 (equal), heart +1
    acc = factor_accuracy(predicted, labels.numpy(), FACTOR_NAMES, symmetry)
    assert acc["accuracy.orientation"] == pytest.approx(2 / 3)
    assert acc["within_one.orientation"] == 1.0
    # the images really are equal, which is why the loss must not separate them
    images = render(np.array([[0, 5, 3, 10, 10], [0, 5, 13, 10, 10], [1, 5, 3, 10, 10], [1, 5, 23, 10, 10]]))
    assert np.array_equal(images[0], images[1]) and np.array_equal(images[2], images[3])


def test_score_images_with_a_classifier_reports_every_ruler() -> None:
    images, classes = _grid_sample(32, seed=5)
    model = FactorClassifier(in_channels=1, factor_sizes=FACTOR_SIZES, channels=4, width=8).eval()
    probs = predict_probabilities(model, images)
    assert [p.shape for p in probs] == [(32, k) for k in FACTOR_SIZES]
    scores = score_images(model, images, labels=classes, originals=images, reference_classes=classes)
    assert scores["iou_to_input"] == 1.0
    for key in ("render_iou", "valid_fraction", "accuracy.shape", "within_one.posX", "tv.shape", "tv_floor.posY"):
        assert key in scores


def test_sharpening_scores_prefer_the_sharper_set() -> None:
    from multibeta.metrics.sharpening import score_sharpening
    from multibeta.sampling.edit import SharpenResult

    images, _ = _grid_sample(16, seed=6)
    x = torch.as_tensor(images).float() / 255.0
    blurry = F.avg_pool2d(x, 9, stride=1, padding=4)
    result = SharpenResult(levels=(0.5, 1.0), inputs=x, blurry=torch.stack([blurry, blurry * 0.5]),
                           sharp=torch.stack([x, x]), latents=torch.zeros(2, 16, 3))
    plain = score_sharpening(result)
    assert [set(lvl["decoded"]) for lvl in plain["levels"]] == [{"mse"}, {"mse"}]
    model = FactorClassifier(in_channels=1, factor_sizes=FACTOR_SIZES, channels=4, width=8).eval()
    scores = score_sharpening(result.select(range(8)), classifier=model)
    assert scores["n_images"] == 8
    for lvl in scores["levels"]:
        assert lvl["denoised"]["iou_to_input"] == 1.0 > lvl["decoded"]["iou_to_input"]
        assert lvl["denoised"]["mse"] == 0.0 < lvl["decoded"]["mse"]
        assert {"render_iou", "valid_fraction"} <= set(lvl["denoised"])


def test_the_rulers_say_they_do_not_apply_to_a_classifier_of_other_data() -> None:
    """A Shapes3D/MPI3D/folder classifier gets the reason, not a crash (rules check the dataset first)."""
    from multibeta.metrics.factor_classifier import FactorClassifier
    from multibeta.metrics.render_consistency import classifier_not_applicable, score_images

    other = FactorClassifier(in_channels=3, factor_sizes=[10, 4], channels=4, width=8)
    out = score_images(other, torch.zeros(2, 3, 64, 64))
    assert set(out) == {"not_applicable"} and "does not apply" in out["not_applicable"]
    dsprites = FactorClassifier(in_channels=1, factor_sizes=[3, 6, 40, 32, 32], channels=4, width=8)
    assert classifier_not_applicable(dsprites) is None
