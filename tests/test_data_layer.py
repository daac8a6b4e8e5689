"""The data layer's HDF5 access (multibeta.data.hdf5) and the one image-source protocol."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from multibeta.data.hdf5 import H5FileKind, PerProcessFile, create_h5, open_h5, read_dataset
from multibeta.data.sources import ImageSource, quantise, uint8_batch


class ThingError(RuntimeError):
    pass


THING = H5FileKind("odd thing", made_by="The rule make_thing writes it.",
                   fix="Delete it and rerun make_thing.", error=ThingError)


def test_create_h5_appears_only_when_complete(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "x.h5"
    with create_h5(path, track_order=True) as h5:
        h5.create_dataset("a", data=np.arange(3))
    with pytest.raises(RuntimeError, match="boom"), create_h5(path) as h5:
        h5.create_dataset("b", data=np.arange(5))
        raise RuntimeError("boom")
    with h5py.File(path, "r") as h5:  # the first file is untouched, no temporary is left
        assert list(h5) == ["a"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.h5"]


def test_open_h5_errors_name_the_file_and_the_rule(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"odd thing not found: .*none\.h5\. The rule make_thing"):
        open_h5(tmp_path / "none.h5", THING)
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(ThingError, match=r"odd thing .*text\.h5 is damaged or not an HDF5 file .*rerun make_thing"):
        open_h5(tmp_path / "text.h5", THING)
    with create_h5(tmp_path / "x.h5") as h5:
        h5.create_dataset("a", data=np.arange(3))
    with pytest.raises(ThingError, match=r"x\.h5 is not an odd thing file \(it lacks \['b'\]\)\. Delete"):
        open_h5(tmp_path / "x.h5", THING, required=("a", "b"))
    with open_h5(tmp_path / "x.h5", THING, required=("a",)) as h5:
        assert read_dataset(h5["a"], slice(1, 3), kind=THING).tolist() == [1, 2]


def test_read_dataset_turns_a_damaged_chunk_into_the_kinds_error(tmp_path: Path) -> None:
    path = tmp_path / "x.h5"
    with create_h5(path) as h5:
        h5.create_dataset("a", data=np.random.default_rng(0).integers(0, 255, (64, 256), dtype=np.uint8),
                          chunks=(16, 256), compression="gzip")
    with h5py.File(path, "r") as h5:
        info = h5["a"].id.get_chunk_info(0)
    with open(path, "r+b") as f:
        f.seek(info.byte_offset + 8)
        f.write(b"\xff" * (info.size - 8))
    with open_h5(path, THING) as h5, pytest.raises(ThingError) as err:
        read_dataset(h5["a"], slice(0, 16), kind=THING)
    assert f"odd thing {path}: cannot read /a" in str(err.value) and "damaged" in str(err.value)
    assert "rerun make_thing" in str(err.value)


def test_per_process_file_reopens_in_a_new_process_and_drops_the_handle_on_pickling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "x.h5"
    with create_h5(path) as h5:
        h5.create_dataset("a", data=np.arange(4))
    handle = PerProcessFile(path, THING, required=("a",))
    parent = handle.get()
    assert handle.get() is parent
    clone = pickle.loads(pickle.dumps(handle))
    assert clone._h5 is None and clone.get()["a"][2] == 2
    real_pid = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: real_pid + 1)  # as in a forked DataLoader worker
    child = handle.get()
    assert child is not parent and child["a"][3] == 3
    monkeypatch.setattr(os, "getpid", lambda: real_pid + 2)
    handle.close()  # another process's handle is forgotten, not closed
    assert child.id.valid and parent.id.valid
    monkeypatch.undo()
    for f in (parent, child, clone.get()):
        f.close()
    with pytest.raises(ThingError, match="lacks"):
        PerProcessFile(path, THING, required=("b",)).get()


def test_every_image_source_satisfies_the_one_protocol(tmp_path: Path) -> None:
    from multibeta.data.h5io import ImageDataset, write_image_dataset
    from multibeta.metrics.images import ArrayImages, SubsetImages, as_image_source
    from multibeta.vae.trainer import H5Source, TensorSource

    images = np.random.default_rng(0).integers(0, 256, (6, 1, 64, 64), dtype=np.uint8)
    path = tmp_path / "d.h5"
    write_image_dataset(path, images=images, split=np.zeros(6, np.int8), progress=False,
                        attrs={"dataset": "t", "generator_version": 1, "seed": 0, "created_with": {}})
    floats = torch.from_numpy(images).float() / 255
    sources = [ImageDataset(path), ArrayImages(images), SubsetImages(ArrayImages(images), np.arange(6)),
               TensorSource(floats), TensorSource(torch.from_numpy(images)), H5Source(path)]
    pos = np.array([4, 0, 4])
    for source in sources:
        assert isinstance(source, ImageSource) and source.channels == 1 and len(source) == 6
        assert torch.equal(source.batch(pos), floats[pos]), type(source).__name__
        assert np.array_equal(uint8_batch(source, pos), images[pos]), type(source).__name__
        assert np.array_equal(as_image_source(source).uint8_batch(pos), images[pos])
    assert quantise(np.array([0.0, 0.5 / 255, 1.0, 1.2])).tolist() == [0, 0, 255, 255]
