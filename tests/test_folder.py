"""The image-folder source (data.name: folder) on small folders with a labels CSV
(tests/folder_fixture.py): content, labels, bad files, malformed CSVs and paths out of the root."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from folder_fixture import ATTRIBUTES, FACTORS, make_image_folder
from multibeta.data import folder
from multibeta.data.h5io import read_metadata
from multibeta.data.prepare import has_factors, prepare_dataset
from multibeta.workflow.config import section_defaults


def folder_section(files, **options) -> dict:
    data = {k: options.pop(k) for k in ("image_size", "size", "seed", "val_fraction") if k in options}
    return section_defaults("data", {"name": "folder", **data, "folder": {
        "root": str(files.root), "labels": None if files.labels is None else str(files.labels), **options}})


def assert_no_files(results: Path) -> None:
    left = [p.relative_to(results).as_posix() for p in results.rglob("*") if p.is_file()] if results.exists() else []
    assert left == [], left


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory):
    return make_image_folder(tmp_path_factory.mktemp("damaged"), n=24, side=64, corrupt=1, odd_size=1,
                             missing_row=1, extra_row=1)


def test_images_and_labels_follow_the_folder_and_bad_files_are_skipped_by_name(damaged, tmp_path: Path) -> None:
    out = tmp_path / "results" / "datasets" / "f" / "dataset.h5"
    summary = prepare_dataset(folder_section(damaged, image_size=64, on_bad_file="skip"), out, workers=1)
    assert summary["n_bad"] == 4 and len(summary["bad_files"]) == 4
    for name, reason in damaged.bad.items():  # every bad file is named with its reason
        assert reason in summary["bad_files"][name], (name, summary["bad_files"][name])
    with h5py.File(out, "r") as h5:
        names = [n.decode() for n in h5["filenames"][...]]
        images, classes, attributes = h5["images"][...], h5["factor_classes"][...], h5["attributes"][...]
        factors = h5["factors"][...]
        pre = json.loads(h5.attrs["preprocessing"])
    assert names == sorted(damaged.rows) and images.shape == (len(names), 3, 64, 64)
    rows = np.array([damaged.rows[n] for n in names])
    np.testing.assert_array_equal(factors, rows[:, :2])  # factor values: the CSV's integers
    for k in range(2):  # classes: the index among the column's sorted distinct values
        np.testing.assert_array_equal(classes[:, k], np.unique(rows[:, k], return_inverse=True)[1])
    np.testing.assert_array_equal(attributes, rows[:, 2:])
    with Image.open(damaged.root / names[3]) as img:  # 64 x 80: the centre 64 x 64 square
        expected = np.asarray(img.convert("RGB"))[8:72].transpose(2, 0, 1)
    np.testing.assert_array_equal(images[3], expected)
    meta = read_metadata(out)
    assert meta["factor_names"] == list(FACTORS) and meta["attribute_names"] == list(ATTRIBUTES)
    assert meta["factor_sizes"] == [len(np.unique(rows[:, 0])), len(np.unique(rows[:, 1]))]
    assert pre["n_bad"] == 4 and sorted(pre["bad_files"]) == sorted(damaged.bad) and pre["fit"] == "center_crop"
    assert sorted(p.name for p in out.parent.iterdir()) == ["dataset.h5"]  # the scratch file is gone


def test_bad_files_are_fatal_by_default_and_each_is_named(damaged, tmp_path: Path) -> None:
    results = tmp_path / "results"
    with pytest.raises(folder.FolderBadFiles) as err:
        prepare_dataset(folder_section(damaged, image_size=64), results / "datasets" / "f" / "dataset.h5", workers=2)
    message = str(err.value)
    assert message.startswith("4 bad file(s)") and "data.folder.on_bad_file: skip" in message
    for name, reason in damaged.bad.items():
        assert f"{name}: " in message and reason in message, name
    assert_no_files(results)


def test_a_128_grayscale_folder_without_labels(tmp_path: Path) -> None:
    files = make_image_folder(tmp_path, n=12, side=128, grayscale=True)
    files.labels = None
    out = tmp_path / "d.h5"
    summary = prepare_dataset(folder_section(files, image_size=128, channels=1, fit="resize"), out, workers=1)
    meta = read_metadata(out)
    assert summary["n"] == 12 and meta["image_size"] == 128 and meta["channels"] == 1
    assert meta["factor_names"] is None and meta["attribute_names"] is None and meta["optional"] == ["filenames"]
    assert not has_factors(folder_section(files))


def test_exact_fit_refuses_other_sizes_by_name(tmp_path: Path) -> None:
    files = make_image_folder(tmp_path, n=6, side=32)  # 32 x 40
    with pytest.raises(folder.FolderBadFiles, match=r"is 32x40, not 32x32 \(data.folder.fit: exact\)"):
        prepare_dataset(folder_section(files, image_size=32, fit="exact"), tmp_path / "d.h5", workers=1)


def test_decoding_in_several_processes_gives_the_same_file_content(tmp_path: Path) -> None:
    files = make_image_folder(tmp_path, n=150, side=32, seed=2)
    one, two = tmp_path / "one.h5", tmp_path / "two.h5"
    prepare_dataset(folder_section(files, image_size=32, size=100), one, workers=1)
    prepare_dataset(folder_section(files, image_size=32, size=100), two, workers=2)
    with h5py.File(one, "r") as a, h5py.File(two, "r") as b:
        for key in ("images", "factor_classes", "attributes", "split", "filenames"):
            np.testing.assert_array_equal(a[key][...], b[key][...], err_msg=key)
        assert a["images"].shape == (100, 3, 32, 32)


def test_a_link_out_of_the_root_is_a_bad_file_and_never_read(tmp_path: Path) -> None:
    files = make_image_folder(tmp_path / "in", n=6, side=32)
    files.labels = None
    secret = tmp_path / "outside.png"
    Image.new("RGB", (32, 32), (255, 0, 0)).save(secret)
    os.symlink(secret, files.root / "a" / "link.png")
    os.symlink(tmp_path, files.root / "looped")  # a linked folder is not walked
    found, outside = folder.list_images(files.root)
    assert "a/link.png" in outside and "a/link.png" not in found and len(found) == 6
    summary = prepare_dataset(folder_section(files, image_size=32, on_bad_file="skip"), tmp_path / "d.h5", workers=1)
    assert summary["n"] == 6 and "outside data.folder.root" in summary["bad_files"]["a/link.png"]


@pytest.mark.parametrize(("text", "match"), [
    ("name,a\nx.png,1\n", r"line 1: the first column is 'name', not 'filename'"),
    ("filename,a,b\nx.png,1\n", r"line 2: 2 fields where the header has 3"),
    ("filename,a\nx.png,1\ny.png,yes\n", r"line 3: column 'a' holds 'yes', not an integer"),
    ("filename,a\nx.png,1\n\nx.png,0\n", r"line 4: x.png is listed twice \(first on line 2\)"),
    ("filename,a\n../secret.png,1\n", r"line 2: file name '../secret.png' is not a path inside data.folder.root"),
    ("filename,a,a\nx.png,1,1\n", r"line 1: column names must be unique"),
])
def test_a_malformed_csv_stops_naming_the_line(tmp_path: Path, text: str, match: str) -> None:
    files = make_image_folder(tmp_path, n=3, side=32)
    files.labels.write_text(text)
    results = tmp_path / "results"
    with pytest.raises(folder.FolderLabelsError, match=match):
        prepare_dataset(folder_section(files, image_size=32), results / "d.h5", workers=1)
    assert_no_files(results)
    assert not has_factors(folder_section(files))  # planning counts a broken CSV as no factors


def test_column_kinds() -> None:
    values = np.array([[0, -1, 3, 7], [1, 1, 5, 7], [1, -1, 4, 7]])
    kinds = folder.classify_columns(values)
    assert (kinds.attributes, kinds.negative_binary, kinds.factors, kinds.dropped) == ([0, 1], [1], [2], [3])
