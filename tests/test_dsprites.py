"""Procedural dSprites: factor grid, rendering properties, and the original-npz loader."""

from __future__ import annotations

import numpy as np
import pytest

from multibeta.data import dsprites
from multibeta.data.dsprites import FACTOR_NAMES, FACTOR_SIZES, NUM_IMAGES


def _rows(shape, scale, orient, posx, posy) -> np.ndarray:
    """Grid rows of the cartesian product of the given class lists."""
    values = (shape, scale, orient, posx, posy)
    grids = np.meshgrid(*(np.atleast_1d(v) for v in values), indexing="ij")
    return np.ravel_multi_index([g.ravel() for g in grids], FACTOR_SIZES)


def _render_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    classes, _ = dsprites.factor_grid(rows)
    return classes, dsprites.render(classes)[:, 0]


@pytest.fixture(scope="module")
def sample() -> tuple[np.ndarray, np.ndarray]:
    """A seeded sample of 400 grid points plus every extreme position, rendered."""
    rng = np.random.default_rng(0)
    random_rows = rng.choice(NUM_IMAGES, size=400, replace=False)
    corners = _rows([0, 1, 2], 5, [0, 5, 13], [0, 31], [0, 31])
    return _render_rows(np.concatenate([random_rows, corners]))


def test_factor_grid_is_the_full_product_in_canonical_order() -> None:
    classes, factors = dsprites.factor_grid()
    assert classes.shape == factors.shape == (NUM_IMAGES, 5) == (737_280, len(FACTOR_NAMES))
    assert classes.dtype == np.int64 and factors.dtype == np.float32
    # Row i is the mixed-radix number i (shape slowest, posY fastest): all rows distinct.
    assert np.array_equal(np.ravel_multi_index(classes.T, FACTOR_SIZES), np.arange(NUM_IMAGES))
    assert [len(np.unique(factors[:, f])) for f in range(5)] == list(FACTOR_SIZES)
    np.testing.assert_allclose(np.unique(factors[:, 1]), np.linspace(0.5, 1, 6), rtol=1e-6)
    orient = np.unique(factors[:, 2])
    assert orient[0] == 0 and orient[-1] < 2 * np.pi
    np.testing.assert_allclose(orient[10], np.pi / 2, rtol=1e-6)
    np.testing.assert_allclose(np.unique(factors[:, 3]), np.linspace(0, 1, 32), atol=1e-7)


def test_images_binary_nonempty_and_inside(sample) -> None:
    classes, images = sample
    assert images.dtype == np.uint8
    assert set(np.unique(images)) <= {0, 255}
    assert (images.reshape(len(images), -1).max(axis=1) == 255).all()
    # No shape touches the border, so no shape is clipped at any position.
    border = np.concatenate(
        [images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1
    )
    assert not border.any()


def test_render_matches_a_plain_slicing_reference(sample) -> None:
    classes, images = sample
    masks = dsprites.shape_masks()
    for c, image in zip(classes, images):
        ref = np.zeros((64, 64), np.uint8)
        ref[c[4] : c[4] + 33, c[3] : c[3] + 33] = masks[c[0], c[1], c[2]] * 255
        assert np.array_equal(image, ref)


def test_area_grows_with_scale() -> None:
    classes, images = _render_rows(_rows([0, 1, 2], range(6), [0, 3, 7, 13, 26], 10, 20))
    area = (images > 0).sum(axis=(1, 2)).reshape(3, 6, 5)
    assert (np.diff(area, axis=1) > 0).all(), area


def test_centroid_follows_position() -> None:
    for shape in range(3):
        _, by_x = _render_rows(_rows(shape, 2, 7, range(32), 12))
        _, by_y = _render_rows(_rows(shape, 2, 7, 12, range(32)))
        cols, rows = np.arange(64)[None, :], np.arange(64)[:, None]
        cx = (by_x * cols).sum(axis=(1, 2)) / by_x.sum(axis=(1, 2))
        cy_at_x = (by_x * rows).sum(axis=(1, 2)) / by_x.sum(axis=(1, 2))
        cy = (by_y * rows).sum(axis=(1, 2)) / by_y.sum(axis=(1, 2))
        np.testing.assert_allclose(np.diff(cx), 1.0, atol=1e-9)  # one pixel per posX step
        np.testing.assert_allclose(np.diff(cy), 1.0, atol=1e-9)
        np.testing.assert_allclose(cy_at_x, cy_at_x[0])  # posX does not move the row
        assert 14 < cx[0] < 19 and 45 < cx[-1] < 50  # centre spans about pixels 16 .. 47


def test_square_quarter_turn_is_identical_and_heart_is_not() -> None:
    _, square = _render_rows(_rows(0, range(6), [0, 10, 20, 30], [0, 17], [3, 31]))
    square = square.reshape(6, 4, 4, 64, 64)
    for q in (1, 2, 3):
        assert np.array_equal(square[:, 0], square[:, q])
    _, square_off = _render_rows(_rows(0, 5, 5, 17, 3))
    assert not np.array_equal(square_off[0], square[5, 0, 1])  # 45° differs from 0°
    _, heart = _render_rows(_rows(2, 5, [0, 10], 15, 15))
    ys, xs = np.nonzero(heart[0])
    upright = heart[0][:, 15:48]  # the mask's columns
    assert np.array_equal(upright, np.fliplr(upright))  # mirror-symmetric
    assert (ys < ys.mean()).sum() > (ys > ys.mean()).sum()  # lobes on top, tip down
    ys, xs = np.nonzero(heart[1])
    assert (xs < xs.mean()).sum() > (xs > xs.mean()).sum()  # turned counter-clockwise: tip right


def test_generate_subset_is_seeded_and_sorted() -> None:
    a = dsprites.generate_dsprites(40, seed=3, progress=False)
    b = dsprites.generate_dsprites(40, seed=3, progress=False)
    c = dsprites.generate_dsprites(40, seed=4, progress=False)
    assert a.images.shape == (40, 1, 64, 64) and a.images.dtype == np.uint8
    rows = np.ravel_multi_index(a.factor_classes.T, FACTOR_SIZES)
    assert (np.diff(rows) > 0).all()
    assert np.array_equal(a.images, b.images) and np.array_equal(a.factor_classes, b.factor_classes)
    assert not np.array_equal(a.factor_classes, c.factor_classes)
    assert a.factor_names == list(FACTOR_NAMES) and a.factor_sizes == list(FACTOR_SIZES)
    np.testing.assert_array_equal(a.factors, dsprites.factor_grid(rows)[1])


def write_fake_npz(path, rows: np.ndarray) -> None:
    """An npz in the original file's format (0/1 images, a leading colour latent)."""
    classes, factors = dsprites.factor_grid(rows)
    imgs = (dsprites.render(classes)[:, 0] // 255).astype(np.uint8)
    n = len(rows)
    values = np.concatenate([np.ones((n, 1)), factors.astype(np.float64)], axis=1)
    latent_classes = np.concatenate([np.zeros((n, 1), np.int64), classes], axis=1)
    np.savez_compressed(path, imgs=imgs, latents_values=values, latents_classes=latent_classes,
                        metadata=np.array("fake"))


def test_load_npz_matches_generated_format(tmp_path) -> None:
    rows = np.array([0, 5, 1000, 300_000, NUM_IMAGES - 1])
    write_fake_npz(tmp_path / "fake.npz", rows)
    loaded = dsprites.load_dsprites_npz(tmp_path / "fake.npz")
    classes, factors = dsprites.factor_grid(rows)
    assert loaded.images.dtype == np.uint8 and loaded.images.shape == (5, 1, 64, 64)
    assert np.array_equal(loaded.images, dsprites.render(classes))
    assert loaded.factor_classes.dtype == np.int64
    assert np.array_equal(loaded.factor_classes, classes)
    np.testing.assert_array_equal(loaded.factors, factors)
    assert loaded.factor_names == list(FACTOR_NAMES) and loaded.factor_sizes == list(FACTOR_SIZES)


def test_load_npz_errors_name_the_path_and_the_fix(tmp_path) -> None:
    missing = tmp_path / "nowhere.npz"
    with pytest.raises(FileNotFoundError, match="nowhere.npz.*dsprites_npz to null"):
        dsprites.load_dsprites_npz(missing)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 this is not really a zip archive" * 10)
    with pytest.raises(ValueError, match="corrupt.npz.*dsprites_npz to null"):
        dsprites.load_dsprites_npz(corrupt)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(ValueError, match="text.npz"):
        dsprites.load_dsprites_npz(text)
    partial = tmp_path / "partial.npz"
    np.savez(partial, imgs=np.zeros((2, 64, 64), np.uint8))
    expected = r"partial.npz lacks the arrays \['latents_values', 'latents_classes'\]"
    with pytest.raises(ValueError, match=expected):
        dsprites.load_dsprites_npz(partial)


def test_orientation_steps_are_small_and_consistent_across_quarter_turns() -> None:
    """Remainder angles and exact quarter turns rotate the same way: neighbours overlap."""
    _, hearts = _render_rows(_rows(2, 5, range(40), 15, 15))
    on = hearts > 0
    nxt = np.roll(on, -1, axis=0)  # orientation k+1 (39 -> 0 wraps around the circle)
    iou = (on & nxt).sum(axis=(1, 2)) / (on | nxt).sum(axis=(1, 2))
    assert iou.min() > 0.8, iou
    opposite = (on & np.roll(on, -20, axis=0)).sum(axis=(1, 2)) / on.sum(axis=(1, 2))
    assert opposite.max() < 0.8  # a half turn really turns the heart over
