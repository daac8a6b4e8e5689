"""The samples file of a sampling run: round trip, and errors that name the file and the rule."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from multibeta.data.h5io import read_labels, write_image_dataset
from multibeta.sampling.store import SampleFileError, read_samples, write_samples


def test_round_trip_and_bad_files(tmp_path: Path) -> None:
    latents = np.arange(12, dtype=np.float32).reshape(3, 4)
    images = np.zeros((3, 1, 64, 64), np.uint8)
    path = tmp_path / "samples.h5"
    write_samples(path, latents=latents, images=images, run={"name": "r"})
    out = read_samples(path)
    assert np.array_equal(out["latents"], latents) and out["run"] == {"name": "r"}
    with pytest.raises(SampleFileError, match="not found.*rule sample"):
        read_samples(tmp_path / "missing.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(SampleFileError, match=r"junk\.h5 is damaged.*rerun the rule sample"):
        read_samples(tmp_path / "junk.h5")
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5.create_dataset("latents", data=latents)
    with pytest.raises(SampleFileError, match=r"other\.h5 is damaged or not a samples file"):
        read_samples(tmp_path / "other.h5")


def test_read_labels_returns_the_rows_and_none_for_absent_labels(tmp_path: Path) -> None:
    n = 6
    path = tmp_path / "dataset.h5"
    write_image_dataset(path, images=np.zeros((n, 1, 64, 64), np.uint8), split=np.zeros(n, np.int8),
                        attributes=np.eye(n, 2, dtype=np.int8), attribute_names=["a", "b"],
                        attrs={"dataset": "synthetic", "generator_version": "t", "seed": 0, "created_with": {}})
    labels = read_labels(path, np.array([1, 0]))
    assert labels["factor_classes"] is None
    assert labels["attributes"].tolist() == [[0, 1], [1, 0]]
