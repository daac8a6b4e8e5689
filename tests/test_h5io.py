"""Image dataset file: deterministic preparation, reader modes, labels and errors."""

from __future__ import annotations

import pickle
import time

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from multibeta.data import dsprites, h5io
from multibeta.data.h5io import (
    DatasetFileError,
    ImageDataset,
    read_images,
    read_metadata,
    write_image_dataset,
)
from multibeta.data.prepare import make_split, prepare_dataset
from multibeta.utils.io import file_sha256
from multibeta.workflow.config import section_defaults

ATTRS = {
    "dataset": "synthetic", "generator_version": "test-1", "seed": 0,
    "created_with": {"numpy": "x"},
}


def _data_section(**overrides) -> dict:
    return section_defaults("data", overrides={"size": 64, "seed": 1, "val_fraction": 0.25,
                                               "test_fraction": 0.125, **overrides})


@pytest.fixture(scope="module")
def dsprites_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("ds") / "dataset.h5"
    prepare_dataset(_data_section(size=600), path)
    return str(path)


@pytest.fixture(scope="module")
def rgb_file(tmp_path_factory) -> tuple[str, dict]:
    """A small 3-channel dataset with attributes and file names (CelebA-like)."""
    rng = np.random.default_rng(0)
    n = 40
    arrays = {
        "images": rng.integers(0, 256, (n, 3, 64, 64), dtype=np.uint8),
        "split": np.array([0, 1, 2, 0] * 10, np.int8),
        "attributes": rng.integers(0, 2, (n, 3)).astype(np.int8),
        "filenames": [f"{i:06d}.jpg" for i in range(n)],
    }
    path = tmp_path_factory.mktemp("rgb") / "dataset.h5"
    write_image_dataset(path, **arrays, attribute_names=["Smiling", "Male", "Eyeglasses"],
                        attrs=ATTRS)
    return str(path), arrays


def test_same_seed_gives_byte_identical_files(tmp_path) -> None:
    section = _data_section()
    summary = prepare_dataset(section, tmp_path / "a.h5")
    time.sleep(1.1)  # HDF5 timestamps have one-second resolution
    prepare_dataset(_data_section(), tmp_path / "b.h5")
    prepare_dataset(_data_section(seed=2), tmp_path / "c.h5")
    assert file_sha256(tmp_path / "a.h5") == file_sha256(tmp_path / "b.h5")
    assert file_sha256(tmp_path / "a.h5") != file_sha256(tmp_path / "c.h5")
    assert summary["n"] == 64 and summary["split_counts"] == {"train": 40, "val": 16, "test": 8}
    meta = read_metadata(tmp_path / "a.h5")
    assert meta["n"] == 64 and meta["channels"] == 1
    assert meta["split_counts"] == summary["split_counts"]
    assert meta["factor_names"] == ["shape", "scale", "orientation", "posX", "posY"]
    assert meta["factor_sizes"] == [3, 6, 40, 32, 32]
    assert meta["optional"] == ["factors", "factor_classes"] and meta["attribute_names"] is None
    assert meta["attrs"]["dataset"] == "dsprites" and meta["attrs"]["seed"] == 1
    assert meta["attrs"]["generator_version"] == dsprites.GENERATOR_VERSION
    assert "numpy" in meta["attrs"]["created_with"]
    with h5py.File(tmp_path / "a.h5") as h5:
        assert h5["images"].chunks == (64, 1, 64, 64) and h5["images"].compression == "gzip"
        rows = np.ravel_multi_index(h5["factor_classes"][...].T, dsprites.FACTOR_SIZES)
        assert np.array_equal(h5["images"][...], dsprites.render(dsprites.factor_grid(rows)[0]))


def test_prepare_from_npz(tmp_path) -> None:
    from test_dsprites import write_fake_npz

    write_fake_npz(tmp_path / "fake.npz", np.arange(0, dsprites.NUM_IMAGES, 20_000))
    section = _data_section(size=20, dsprites_npz=str(tmp_path / "fake.npz"))
    summary = prepare_dataset(section, tmp_path / "d.h5")
    meta = read_metadata(tmp_path / "d.h5")
    assert summary["n"] == meta["n"] == 20
    assert meta["attrs"]["generator_version"] == dsprites.NPZ_GENERATOR_VERSION
    classes = ImageDataset(tmp_path / "d.h5").factor_classes()
    rows = np.ravel_multi_index(classes.T, dsprites.FACTOR_SIZES)
    assert np.array_equal(read_images(tmp_path / "d.h5", np.arange(20)), dsprites.render(classes))
    assert set(rows) <= set(range(0, dsprites.NUM_IMAGES, 20_000))


def test_make_split_counts_and_errors() -> None:
    split = make_split(1000, 0.05, 0.1, seed=0)
    assert np.bincount(split).tolist() == [850, 50, 100]
    assert not np.array_equal(split, make_split(1000, 0.05, 0.1, seed=1))
    with pytest.raises(ValueError, match="no training images"):
        make_split(10, 0.5, 0.5, seed=0)


def _items(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    images, rows = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(images), torch.tensor(rows)


def test_in_memory_and_file_modes_agree(dsprites_file) -> None:
    mem = ImageDataset(dsprites_file, split="train")
    disk = ImageDataset(dsprites_file, split="train", max_memory_bytes=0)
    assert mem.in_memory and not disk.in_memory
    assert len(mem) == len(disk) == read_metadata(dsprites_file)["split_counts"]["train"]
    mem_images, mem_rows = _items(mem)
    disk_images, disk_rows = _items(disk)
    assert mem_images.dtype == torch.float32 and mem_images.shape[1:] == (1, 64, 64)
    assert torch.equal(mem_images, disk_images) and torch.equal(mem_rows, disk_rows)
    assert set(mem_images.unique().tolist()) == {0.0, 1.0}
    assert (mem.split_codes(mem_rows) == 0).all()
    positions = np.array([5, 0, 5, len(mem) - 1])
    assert torch.equal(mem.tensor_batch(positions), disk.tensor_batch(positions))
    assert torch.equal(mem.tensor_batch(torch.tensor(positions)), mem_images[positions])
    raw = read_images(dsprites_file, mem.rows[positions])
    assert torch.equal(torch.from_numpy(raw).float() / 255, mem_images[positions])


def test_dataloader_with_workers(dsprites_file) -> None:
    for limit in (2**31, 0):
        dataset = ImageDataset(dsprites_file, split="val", max_memory_bytes=limit)
        dataset[0]  # opens the file in this process; workers must reopen their own handle
        loader = DataLoader(dataset, batch_size=32, num_workers=2, shuffle=False)
        images, rows = (torch.cat(parts) for parts in zip(*loader))
        expected_images, expected_rows = _items(dataset)
        assert rows.dtype == torch.int64
        assert torch.equal(images, expected_images) and torch.equal(rows, expected_rows)
        clone = pickle.loads(pickle.dumps(dataset))
        assert torch.equal(clone[3][0], expected_images[3])
        dataset.close()


def test_indices_and_split_select_rows(dsprites_file) -> None:
    codes = ImageDataset(dsprites_file).split_codes()
    wanted = np.array([7, 3, 100, 99, 250])
    dataset = ImageDataset(dsprites_file, split="val", indices=wanted)
    assert np.array_equal(dataset.rows, wanted[codes[wanted] == 1])
    all_rows = ImageDataset(dsprites_file, indices=wanted)
    assert [all_rows[i][1] for i in range(5)] == wanted.tolist()
    classes = all_rows.factor_classes(wanted)
    with h5py.File(dsprites_file) as h5:
        assert np.array_equal(classes, h5["factor_classes"][...][wanted])
        np.testing.assert_array_equal(all_rows.factors(), h5["factors"][...][wanted])
    with pytest.raises(ValueError, match="unknown split"):
        ImageDataset(dsprites_file, split="training")
    with pytest.raises(KeyError, match="no 'attributes'"):
        all_rows.attributes([0])


def test_read_rows_across_chunks(tmp_path, monkeypatch) -> None:
    n = 1500
    images = np.zeros((n, 1, 64, 64), np.uint8)
    images[:, 0, 0, :2] = np.stack([np.arange(n) % 256, np.arange(n) // 256], axis=1)  # row id
    path = tmp_path / "ids.h5"
    write_image_dataset(path, images=images, split=np.zeros(n, np.int8), attrs=ATTRS)
    monkeypatch.setattr(h5io, "_READ_BLOCK_ROWS", 512)  # runs of 2 chunks: exercise run splitting
    rows = np.random.default_rng(0).integers(0, n, 300)
    rows = np.concatenate([rows, rows[:10], np.arange(200, 1300)])  # repeats and a long run
    assert np.array_equal(read_images(path, rows), images[rows])
    with pytest.raises(IndexError):
        read_images(path, [n])


def test_rgb_attributes_and_filenames(rgb_file) -> None:
    path, arrays = rgb_file
    meta = read_metadata(path)
    assert meta["channels"] == 3 and meta["optional"] == ["attributes", "filenames"]
    assert meta["attribute_names"] == ["Smiling", "Male", "Eyeglasses"]
    assert meta["factor_names"] is None
    assert meta["split_counts"] == {"train": 20, "val": 10, "test": 10}
    dataset = ImageDataset(path, split="test")
    rows = np.array([d[1] for d in dataset])
    assert np.array_equal(dataset.attributes(rows), arrays["attributes"][rows])
    expected = torch.from_numpy(arrays["images"][rows[:2]]).float() / 255
    assert torch.equal(dataset.tensor_batch([0, 1]), expected)
    with h5py.File(path) as h5:
        assert [s.decode() for s in h5["filenames"][...]] == arrays["filenames"]


def test_errors_name_the_file_and_the_rule(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.h5.*prepare_data"):
        ImageDataset(tmp_path / "missing.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(DatasetFileError, match="text.h5.*prepare_data"):
        read_metadata(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5["x"] = np.zeros(3)
    with pytest.raises(DatasetFileError, match="other.h5 is not an image dataset"):
        read_images(tmp_path / "other.h5", [0])


@pytest.mark.parametrize("change, message", [
    ({"images": np.zeros((4, 1, 64, 64), np.float32)}, "uint8"),
    ({"split": np.array([0, 1, 3, 0])}, "split values"),
    ({"attrs": {"dataset": "x"}}, "attrs lacks"),
    ({"factors": np.zeros((4, 2), np.float32)}, "go together"),
    ({"attributes": np.full((4, 1), 2), "attribute_names": ["a"]}, "0/1"),
    ({"filenames": ["a"]}, "filenames has 1 rows"),
])
def test_write_rejects_bad_input(tmp_path, change, message) -> None:
    kwargs = {"images": np.zeros((4, 1, 64, 64), np.uint8), "split": np.zeros(4, np.int8),
              "attrs": ATTRS}
    with pytest.raises(ValueError, match=message):
        write_image_dataset(tmp_path / "bad.h5", **{**kwargs, **change})
    assert not (tmp_path / "bad.h5").exists()


def test_a_corrupt_chunk_names_the_file_and_the_rule_that_rebuilds_it(dsprites_file: str, tmp_path) -> None:
    import shutil

    path = tmp_path / "dataset.h5"
    shutil.copy(dsprites_file, path)
    with h5py.File(path, "r") as h5:
        info = h5["images"].id.get_chunk_info(0)  # the first gzip-compressed chunk of images
    with open(path, "r+b") as f:
        f.seek(info.byte_offset + 16)
        f.write(b"\xff" * min(256, info.size - 16))
    with pytest.raises(DatasetFileError) as err:
        read_images(path, [0, 1])
    message = str(err.value)
    assert str(path) in message and "prepare_data" in message and "damaged" in message
    with pytest.raises(DatasetFileError, match="prepare_data"):
        ImageDataset(path, max_memory_bytes=10**9)
    assert read_images(dsprites_file, [0, 1]).shape == (2, 1, 64, 64)  # the original still reads
