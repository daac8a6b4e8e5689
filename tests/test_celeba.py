"""CelebA preparation on a tiny data set in the official release format (tests/celeba_fixture.py)."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image, ImageFile

from celeba_fixture import ATTRIBUTE_NAMES, attribute_text, fake_attributes, make_fake_celeba, split_of
from multibeta.data import celeba
from multibeta.workflow.config import ConfigError, load_schema, resolve_config, section_defaults

N = 48


def data_section(root: Path, **celeba_options) -> dict:
    size = celeba_options.pop("size", None)
    return section_defaults("data", {"name": "celeba", "size": size,
                                     "celeba": {"root": str(root), **celeba_options}})


def read_h5(path: Path) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    with h5py.File(path, "r") as h5:
        arrays = {key: h5[key][...] for key in h5}
        attrs = {key: h5.attrs[key] for key in h5.attrs}
    return arrays, attrs


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fake_celeba(tmp_path_factory.mktemp("celeba"), N, seed=0)


@pytest.fixture(scope="module")
def damaged_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fake_celeba(tmp_path_factory.mktemp("damaged"), 12, seed=1, corrupt=[3])


def test_folder_and_zip_give_identical_datasets(release: Path, tmp_path: Path) -> None:
    from_folder = celeba.prepare_celeba(data_section(release, image_source="folder"),
                                        tmp_path / "folder.h5", workers=1)
    from_zip = celeba.prepare_celeba(data_section(release, image_source="zip"),
                                     tmp_path / "zip.h5", workers=2)
    assert (from_folder["image_kind"], from_zip["image_kind"]) == ("folder", "zip")
    arrays_f, attrs_f = read_h5(tmp_path / "folder.h5")
    arrays_z, attrs_z = read_h5(tmp_path / "zip.h5")
    assert sorted(arrays_f) == sorted(arrays_z) == ["attributes", "filenames", "images", "split"]
    for key in arrays_f:
        np.testing.assert_array_equal(arrays_f[key], arrays_z[key], err_msg=key)
    assert attrs_f == attrs_z
    assert from_folder["n"] == N and from_folder["n_corrupt"] == 0


def test_dataset_content_follows_the_release(release: Path, tmp_path: Path) -> None:
    summary = celeba.prepare_celeba(data_section(release, crop="d2c"), tmp_path / "d.h5", workers=1)
    arrays, attrs = read_h5(tmp_path / "d.h5")
    assert arrays["images"].shape == (N, 3, 64, 64) and arrays["images"].dtype == np.uint8
    expected = (fake_attributes(N, np.random.default_rng(0)) + 1) // 2
    np.testing.assert_array_equal(arrays["attributes"], expected)
    np.testing.assert_array_equal(arrays["split"], split_of(N))
    assert [f.decode() for f in arrays["filenames"]] == [f"{i:06d}.jpg" for i in range(1, N + 1)]
    assert json.loads(attrs["attribute_names"]) == list(ATTRIBUTE_NAMES)
    assert attrs["dataset"] == "celeba" and attrs["generator_version"] == celeba.GENERATOR_VERSION
    assert json.loads(attrs["preprocessing"])["crop"] == "d2c"
    with Image.open(release / "img_align_celeba" / "000005.jpg") as img:
        np.testing.assert_array_equal(arrays["images"][4], celeba.crop_and_resize(img, "d2c"))
    assert summary["split_counts"] == {"train": 40, "val": 4, "test": 4}
    from multibeta.data.h5io import ImageDataset, read_metadata

    meta = read_metadata(tmp_path / "d.h5")
    assert meta["split_counts"] == summary["split_counts"] and meta["attribute_names"] == list(ATTRIBUTE_NAMES)
    assert meta["attrs"]["created_with"]["numpy"] == np.__version__
    assert len(ImageDataset(tmp_path / "d.h5", split="val")) == 4


def test_subset_keeps_ascending_file_order(release: Path, tmp_path: Path) -> None:
    celeba.prepare_celeba(data_section(release, size=20, splits=["train"], subset="first"),
                          tmp_path / "first.h5", workers=1)
    celeba.prepare_celeba(data_section(release, size=20), tmp_path / "random.h5", workers=1)
    first, _ = read_h5(tmp_path / "first.h5")
    random, _ = read_h5(tmp_path / "random.h5")
    assert [f.decode() for f in first["filenames"]] == [f"{i:06d}.jpg" for i in range(1, 21)]
    names = [f.decode() for f in random["filenames"]]
    assert len(names) == 20 and names == sorted(names) and len(set(names)) == 20


def test_select_rows() -> None:
    split = np.array([0] * 80 + [1] * 10 + [2] * 10, dtype=np.int8)
    a = celeba.select_rows(split, splits=["train", "val", "test"], size=30, seed=3, subset="random")
    b = celeba.select_rows(split, splits=["train", "val", "test"], size=30, seed=3, subset="random")
    c = celeba.select_rows(split, splits=["train", "val", "test"], size=30, seed=4, subset="random")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and (np.diff(a) > 0).all()
    np.testing.assert_array_equal(
        celeba.select_rows(split, splits=["val", "test"], size=5, seed=0, subset="first"), np.arange(80, 85))
    assert len(celeba.select_rows(split, splits=["test"], size=None, seed=0, subset="random")) == 10
    with pytest.raises(ValueError, match="data.size = 11 exceeds the 10"):
        celeba.select_rows(split, splits=["test"], size=11, seed=0, subset="random")


def test_crop_presets_match_reference_torchvision_transforms(release: Path) -> None:
    import torchvision.transforms as T
    import torchvision.transforms.functional as TF

    references = {
        "infodiffusion": T.Compose([T.Resize(64), T.CenterCrop(64)]),
        "d2c": T.Compose([T.Lambda(lambda im: TF.crop(im, 57, 25, 128, 128)), T.Resize(64)]),
        "nashae": T.Compose([T.Resize(96), T.CenterCrop(64)]),
        "center148": T.Compose([T.CenterCrop(148), T.Resize(64)]),
        "center140": T.Compose([T.CenterCrop(140), T.Resize(64)]),
        "center108": T.Compose([T.CenterCrop(108), T.Resize(64)]),
        "squash": T.Resize((64, 64)),
    }
    with Image.open(release / "img_align_celeba" / "000002.jpg") as img:
        img.load()
    assert img.size == celeba.SOURCE_SIZE
    for name, transform in references.items():
        expected = np.asarray(transform(img)).transpose(2, 0, 1)
        np.testing.assert_array_equal(celeba.crop_and_resize(img, name), expected, err_msg=name)
    assert set(celeba.CROPS) == set(references) | {"pad"}
    assert celeba.crop_and_resize(img, "pad", "lanczos").shape == (3, 64, 64)


def test_torchvision_layout_with_zip_only(tmp_path: Path) -> None:
    root = make_fake_celeba(tmp_path, 6, zip_only=True, torchvision_layout=True)
    files = celeba.locate_celeba(root)
    assert files.image_kind == "zip" and files.images == root / "celeba" / "img_align_celeba.zip"
    assert files.attributes == root / "celeba" / "list_attr_celeba.txt"
    with pytest.raises(celeba.CelebAFilesMissing, match="img_align_celeba/ "):
        celeba.locate_celeba(root, image_source="folder")


def test_auto_prefers_the_extracted_folder(release: Path) -> None:
    assert celeba.locate_celeba(release).image_kind == "folder"
    assert celeba.locate_celeba(release, "zip").images == release / "img_align_celeba.zip"


@pytest.mark.parametrize("removed", ["images", "list_attr_celeba.txt", "list_eval_partition.txt"])
def test_missing_files_are_listed_with_where_to_put_them(release: Path, tmp_path: Path, removed: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    for name in ("list_attr_celeba.txt", "list_eval_partition.txt"):
        if name != removed:
            shutil.copy(release / name, root / name)
    if removed != "images":
        shutil.copy(release / "img_align_celeba.zip", root / "img_align_celeba.zip")
    with pytest.raises(celeba.CelebAFilesMissing) as info:
        celeba.prepare_celeba(data_section(root), tmp_path / "out.h5", workers=1)
    message = str(info.value)
    listed = [line for line in message.splitlines() if line.startswith("  - ")]
    assert len(listed) == 1
    if removed == "images":
        assert f"{root / 'img_align_celeba'}/" in listed[0] and str(root / "img_align_celeba.zip") in listed[0]
    else:
        assert listed[0] == f"  - {root / removed}"
    assert "data.celeba.download: true" in message and "celeba/" in message
    assert not (tmp_path / "out.h5").exists()


def test_download_fetches_missing_files_or_explains(release: Path, tmp_path: Path) -> None:
    calls = []

    def fake_download(root: Path) -> None:
        calls.append(root)
        shutil.copytree(release, root / "celeba")

    files = celeba.ensure_celeba_files(tmp_path / "a", download=True, downloader=fake_download)
    assert calls == [tmp_path / "a"] and files.images == tmp_path / "a" / "celeba" / "img_align_celeba"

    def offline(root: Path) -> None:
        raise OSError("Name or service not known")

    with pytest.raises(celeba.CelebAFilesMissing, match="(?s)list_attr_celeba.txt.*download.*failed.*service"):
        celeba.ensure_celeba_files(tmp_path / "b", download=True, downloader=offline)
    with pytest.raises(celeba.CelebAFilesMissing):
        celeba.ensure_celeba_files(tmp_path / "c", download=False, downloader=fake_download)
    assert len(calls) == 1


def _attr_lines() -> list[str]:
    names = [f"{i:06d}.jpg" for i in range(1, 5)]
    return attribute_text(names, fake_attributes(4, np.random.default_rng(0))).splitlines()


def _edit(lines: list[str], index: int, text: str) -> list[str]:
    return lines[:index] + [text] + lines[index + 1:]


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda ls: _edit(ls, 0, "5"), "line 1: the header says 5 images but 4 rows"),
        (lambda ls: ["image_id," + ",".join(ATTRIBUTE_NAMES)] + ls[2:], "line 1: comma-separated"),
        (lambda ls: _edit(ls, 1, " ".join(ATTRIBUTE_NAMES[:39])), "line 2: found 39 names"),
        (lambda ls: _edit(ls, 3, ls[3].rsplit(" ", 1)[0]), "line 4: 39 values after the file name"),
        (lambda ls: _edit(ls, 4, ls[4][:11] + " 0" + ls[4][13:]), "line 5: value '0' for 5_o_Clock_Shadow"),
        (lambda ls: _edit(ls, 5, ls[2]), "000001.jpg appears more than once"),
        (lambda ls: ls[2:], "line 1: '000001.jpg"),
    ],
)
def test_wrong_attribute_format_is_a_clear_error(tmp_path: Path, edit, match: str) -> None:
    path = tmp_path / "list_attr_celeba.txt"
    path.write_text("\n".join(edit(_attr_lines())) + "\n")
    with pytest.raises(celeba.CelebAFormatError, match=match) as info:
        celeba.read_attributes(path)
    assert str(path) in str(info.value) and "official CelebA format" in str(info.value)


def test_attribute_file_parses_to_zero_one(tmp_path: Path) -> None:
    path = tmp_path / "list_attr_celeba.txt"
    path.write_text("\n".join(_attr_lines()) + "\n")
    names, attribute_names, attrs = celeba.read_attributes(path)
    assert names == ["000001.jpg", "000002.jpg", "000003.jpg", "000004.jpg"]
    assert attribute_names == list(ATTRIBUTE_NAMES) == list(celeba.ATTRIBUTE_NAMES)
    np.testing.assert_array_equal(attrs, (fake_attributes(4, np.random.default_rng(0)) + 1) // 2)


def test_missing_and_malformed_partitions(tmp_path: Path) -> None:
    names = [f"{i:06d}.jpg" for i in range(1, 5)]
    path = tmp_path / "list_eval_partition.txt"
    path.write_text("000001.jpg 0\n000002.jpg 0\n000004.jpg 2\n")
    with pytest.raises(celeba.CelebAFormatError, match="no partition for 1 of the 4 images .*: 000003.jpg"):
        celeba.read_partition(path, names)
    path.write_text("000001.jpg 0\n000002.jpg 3\n")
    with pytest.raises(celeba.CelebAFormatError, match="line 2: '000002.jpg 3'"):
        celeba.read_partition(path, names)
    path.write_text("000001.jpg 0\n000002.jpg 1\n000003.jpg 2\n000004.jpg 0\n000099.jpg 1\n")
    np.testing.assert_array_equal(celeba.read_partition(path, names), [0, 1, 2, 0])


@pytest.mark.parametrize("source", ["folder", "zip"])
def test_corrupt_image_fails_by_default_naming_the_file(damaged_release: Path, tmp_path: Path, source: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # set by some other library
    with pytest.raises(celeba.CelebACorruptImages, match="(?s)1 of 12 .*000004.jpg: OSError.*truncated.*on_corrupt: skip"):
        celeba.prepare_celeba(data_section(damaged_release, image_source=source), tmp_path / "o.h5", workers=1)
    assert not (tmp_path / "o.h5").exists()
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


@pytest.mark.parametrize("source", ["folder", "zip"])
def test_corrupt_image_skipped_and_reported(damaged_release: Path, tmp_path: Path, source: str,
                                            caplog: pytest.LogCaptureFixture) -> None:
    summary = celeba.prepare_celeba(data_section(damaged_release, image_source=source, on_corrupt="skip"),
                                    tmp_path / "o.h5", workers=1)
    assert summary["n"] == 11 and summary["n_corrupt"] == 1 and list(summary["corrupt_files"]) == ["000004.jpg"]
    assert "000004.jpg" in caplog.text and "skipped" in caplog.text
    arrays, attrs = read_h5(tmp_path / "o.h5")
    names = [f.decode() for f in arrays["filenames"]]
    assert "000004.jpg" not in names and len(names) == len(arrays["images"]) == len(arrays["attributes"]) == 11
    expected = (fake_attributes(12, np.random.default_rng(1)) + 1) // 2
    np.testing.assert_array_equal(arrays["attributes"], np.delete(expected, 3, axis=0))
    preprocessing = json.loads(attrs["preprocessing"])
    assert preprocessing["n_skipped"] == 1 and preprocessing["skipped_files"] == ["000004.jpg"]


def test_image_missing_from_the_zip_is_reported(release: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    for name in ("list_attr_celeba.txt", "list_eval_partition.txt"):
        shutil.copy(release / name, root / name)
    with zipfile.ZipFile(release / "img_align_celeba.zip") as src, \
            zipfile.ZipFile(root / "img_align_celeba.zip", "w") as dst:
        for item in src.infolist():
            if not item.filename.endswith("000007.jpg"):
                dst.writestr(item, src.read(item))
    with pytest.raises(celeba.CelebACorruptImages, match="000007.jpg: missing from .*img_align_celeba.zip"):
        celeba.prepare_celeba(data_section(root), tmp_path / "o.h5", workers=1)


def test_celeba_schema_defaults_and_errors() -> None:
    section = resolve_config({"data": {"name": "celeba"}})["data"]["celeba"]
    assert section["crop"] == "infodiffusion" and section["on_corrupt"] == "fail"
    assert section["splits"] == ["train", "val", "test"]
    with pytest.raises(ConfigError, match="data.celeba.crop"):
        resolve_config({"data": {"celeba": {"crop": "center64"}}})
    with pytest.raises(ConfigError, match="data.celeba"):
        resolve_config({"data": {"celeba": {"workers": 4}}})
    schema = load_schema("celeba.schema.yaml")["properties"]
    assert schema["crop"]["enum"] == list(celeba.CROPS)
    assert schema["resize_filter"]["enum"] == list(celeba.RESIZE_FILTERS)
    assert schema["splits"]["items"]["enum"] == list(celeba.SPLIT_CODES)
