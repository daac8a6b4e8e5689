"""Shapes3D and MPI3D: the prepare step on miniature files in the published layouts
(tests/benchmark_fixture.py), and the refusal of wrong and truncated ones."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from benchmark_fixture import (
    MPI3D_SMALL_SIZES, SHAPES3D_SIZES, make_mpi3d, make_shapes3d, mpi3d_image, truncate_file,
)
from multibeta.data import mpi3d, shapes3d
from multibeta.data.h5io import ImageDataset, read_metadata
from multibeta.data.prepare import has_factors, prepare_dataset
from multibeta.workflow.config import section_defaults


def shapes3d_section(path: Path, **data) -> dict:
    return section_defaults("data", {"name": "shapes3d", "shapes3d": {"path": str(path)}, **data})


def mpi3d_section(path: Path, **data) -> dict:
    return section_defaults("data", {"name": "mpi3d", "mpi3d": {"path": str(path)}, **data})


@pytest.fixture()
def small_mpi3d(monkeypatch: pytest.MonkeyPatch) -> tuple[int, ...]:
    """Shrink the published factor sizes to the miniature file's (the layout stays the same)."""
    monkeypatch.setattr(mpi3d, "FACTOR_SIZES", MPI3D_SMALL_SIZES)
    return MPI3D_SMALL_SIZES


def assert_nothing_written(results: Path) -> None:
    left = [p.name for p in results.rglob("*") if p.is_file()] if results.exists() else []
    assert left == [], left


# --- Shapes3D ---------------------------------------------------------------------------------


def test_shapes3d_factors_and_images_follow_the_file(tmp_path: Path) -> None:
    source = make_shapes3d(tmp_path / "3dshapes.h5", n=300, seed=1)
    out = tmp_path / "results" / "datasets" / "s" / "dataset.h5"
    summary = prepare_dataset(shapes3d_section(source, size=200, seed=3), out)
    assert summary["n"] == 200 and summary["n_file"] == 300 and summary["channels"] == 3
    meta = read_metadata(out)
    assert meta["factor_names"] == list(shapes3d.FACTOR_NAMES) and meta["factor_sizes"] == list(SHAPES3D_SIZES)
    assert meta["image_size"] == 64 and meta["attrs"]["dataset"] == "shapes3d"
    with h5py.File(source, "r") as h5, h5py.File(out, "r") as got:
        labels, images = h5["labels"][...], h5["images"][...]
        factors, classes = got["factors"][...], got["factor_classes"][...]
        written = got["images"][...]
    # the subset is the dSprites draw: seeded, without replacement, in file order
    from multibeta.data.subsets import draw_rows

    rows = draw_rows(300, 200, 3)
    np.testing.assert_array_equal(written, images[rows].transpose(0, 3, 1, 2))
    np.testing.assert_allclose(factors, labels[rows], atol=1e-6)
    grid_rows = np.ravel_multi_index(tuple(classes.T), SHAPES3D_SIZES)  # classes index the grid back
    expected = np.sort(np.random.default_rng(1).choice(int(np.prod(SHAPES3D_SIZES)), 300, replace=False))[rows]
    np.testing.assert_array_equal(grid_rows, expected)
    data = ImageDataset(out, split="train")
    assert data.factor_classes().shape == (len(data), 6) and has_factors(shapes3d_section(source))


def test_shapes3d_at_another_image_size_is_resized(tmp_path: Path) -> None:
    source = make_shapes3d(tmp_path / "3dshapes.h5", n=40)
    out = tmp_path / "d.h5"
    prepare_dataset(shapes3d_section(source, image_size=32), out)
    assert read_metadata(out)["image_size"] == 32
    with h5py.File(out, "r") as h5:
        assert h5["images"].shape == (40, 3, 32, 32)


@pytest.mark.parametrize("damage", ["fewer_image_rows", "cut_bytes", "wrong_layout", "off_grid", "missing"])
def test_a_wrong_or_truncated_shapes3d_file_is_refused_naming_the_expected_shape(tmp_path: Path, damage: str) -> None:
    source = tmp_path / "3dshapes.h5"
    if damage == "fewer_image_rows":
        make_shapes3d(source, n=50, image_rows=30)
        expected = r"images holds 30 rows but labels 50.*truncated.*images \[50, 64, 64, 3\] uint8"
    elif damage == "cut_bytes":
        truncate_file(make_shapes3d(source, n=50), keep=0.5)
        expected = r"damaged or not an HDF5 file.*images \[N, 64, 64, 3\] uint8 and labels \[N, 6\]"
    elif damage == "wrong_layout":
        with h5py.File(source, "w") as h5:
            h5["images"] = np.zeros((5, 3, 64, 64), np.uint8)  # channels first: not the published file
            h5["labels"] = np.zeros((5, 6))
        expected = r"images is uint8 \[5, 3, 64, 64\]; expected images \[5, 64, 64, 3\] uint8"
    elif damage == "off_grid":
        make_shapes3d(source, n=20)
        with h5py.File(source, "r+") as h5:
            h5["labels"][7, 3] = 0.5  # scale below the published 0.75 .. 1.25
        expected = r"labels\[7, 3\] \(scale\) is 0.5, not one of the published values"
    else:
        expected = r"Shapes3D file not found: .*3dshapes.h5\. Download 3dshapes.h5"
    results = tmp_path / "results"
    with pytest.raises((shapes3d.Shapes3DFileError, FileNotFoundError), match=expected):
        prepare_dataset(shapes3d_section(source), results / "datasets" / "x" / "dataset.h5")
    assert_nothing_written(results)


# --- MPI3D ------------------------------------------------------------------------------------


@pytest.mark.parametrize("compressed", [False, True], ids=["savez", "savez_compressed"])
def test_mpi3d_factors_come_from_the_position(tmp_path: Path, small_mpi3d: tuple[int, ...], compressed: bool) -> None:
    source = make_mpi3d(tmp_path / "mpi3d_toy.npz", small_mpi3d, compressed=compressed)
    out = tmp_path / "d.h5"
    summary = prepare_dataset(mpi3d_section(source, size=120, seed=2), out)
    assert summary["n"] == 120 and summary["n_file"] == int(np.prod(small_mpi3d))
    meta = read_metadata(out)
    assert meta["factor_names"] == list(mpi3d.FACTOR_NAMES) and meta["factor_sizes"] == list(small_mpi3d)
    with h5py.File(out, "r") as h5:
        classes, factors, images = h5["factor_classes"][...], h5["factors"][...], h5["images"][...]
        assert json.loads(h5.attrs["factor_names"]) == list(mpi3d.FACTOR_NAMES)
    np.testing.assert_array_equal(factors, classes.astype(np.float32))
    for k in (0, 57, 119):  # each image is the one its factors draw
        np.testing.assert_array_equal(images[k], mpi3d_image(classes[k]).transpose(2, 0, 1))
    assert np.all(np.diff(np.ravel_multi_index(tuple(classes.T), small_mpi3d)) > 0)  # file order


def test_the_published_mpi3d_sizes_are_the_documented_constant() -> None:
    assert mpi3d.FACTOR_SIZES == (6, 6, 2, 3, 3, 40, 40) and mpi3d.NUM_IMAGES == 1_036_800
    assert shapes3d.NUM_IMAGES == 480_000


@pytest.mark.parametrize("damage", ["short_array", "cut_bytes", "published_sizes", "no_images_key", "pickled"])
def test_a_wrong_or_truncated_mpi3d_file_is_refused_naming_the_expected_shape(
    tmp_path: Path, small_mpi3d: tuple[int, ...], damage: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = tmp_path / "mpi3d_toy.npz"
    n = int(np.prod(small_mpi3d))
    if damage == "short_array":
        make_mpi3d(source, small_mpi3d, drop_rows=10)
        expected = rf"has shape \[{n - 10}, 64, 64, 3\], 10 rows short: a truncated file. Expected .*\[{n}, 64, 64, 3\] uint8"
    elif damage == "cut_bytes":
        truncate_file(make_mpi3d(source, small_mpi3d), keep=0.6)
        expected = rf"not a readable .npz archive.*Expected .*\[{n}, 64, 64, 3\] uint8"
    elif damage == "published_sizes":  # a miniature file is no published one
        make_mpi3d(source, small_mpi3d)
        monkeypatch.setattr(mpi3d, "FACTOR_SIZES", (6, 6, 2, 3, 3, 40, 40))
        expected = r"Expected the published MPI3D layout: one array 'images' of shape \[1036800, 64, 64, 3\] uint8"
    elif damage == "no_images_key":
        with open(source, "wb") as fh:
            np.savez(fh, imgs=np.zeros((n, 64, 64, 3), np.uint8))
        expected = r"has no array 'images' \(it holds \['imgs'\]\)"
    else:
        with open(source, "wb") as fh:
            np.savez(fh, images=np.array([{"a": 1}] * 3, dtype=object))
        expected = r"images.npy is object, not a C-ordered uint8 array"
    results = tmp_path / "results"
    with pytest.raises(mpi3d.MPI3DFileError, match=expected):
        prepare_dataset(mpi3d_section(source), results / "datasets" / "x" / "dataset.h5")
    assert_nothing_written(results)


def test_prepare_fills_the_later_keys_as_the_schema_does() -> None:
    """Rule prepare_data passes the data section without the keys added later at their defaults."""
    from multibeta.data.prepare import LATER_KEYS, _with_defaults
    from multibeta.workflow.experiments import LATER_DATA_KEYS, data_identity

    assert LATER_KEYS == LATER_DATA_KEYS

    full = section_defaults("data")
    assert set(full) - set(data_identity(full)) == {"image_size", "folder", "shapes3d", "mpi3d"}
    assert _with_defaults(data_identity(full)) == full
    edited = section_defaults("data", {"name": "shapes3d", "shapes3d": {"path": "x.h5"}})
    assert "shapes3d" in data_identity(edited) and _with_defaults(data_identity(edited)) == edited
