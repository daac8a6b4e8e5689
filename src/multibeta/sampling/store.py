"""The samples file of one sampling run: latents, decoded images and the run's settings."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from multibeta.utils.io import atomic_path


class SampleFileError(ValueError):
    """A samples file that cannot be read (message names the file and the fix)."""


def write_samples(
    path: str | os.PathLike, *, latents: np.ndarray, images: np.ndarray, run: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write ``latents`` float32 [N, d] and ``images`` uint8 [N, C, H, W] with the settings, atomically."""
    latents = np.asarray(latents, dtype=np.float32)
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(latents):
        raise ValueError("images must be uint8 [N, C, H, W] aligned with latents [N, d]")
    with atomic_path(path) as tmp, h5py.File(tmp, "w", track_order=True) as h5:
        h5.create_dataset("latents", data=latents, track_times=False)
        h5.create_dataset(
            "images", data=images, chunks=(min(len(images), 256), *images.shape[1:]),
            compression="gzip", compression_opts=4, track_times=False,
        )
        h5.attrs["run"] = json.dumps(run, sort_keys=True)
        h5.attrs["extra"] = json.dumps(extra or {}, sort_keys=True)


def read_samples(path: str | os.PathLike) -> dict[str, Any]:
    """``{"latents": [N, d], "images": uint8 [N, C, H, W], "run": {...}, "extra": {...}}``.

    Raises:
        SampleFileError: the file is missing, damaged or not a samples file (the message names
            it and the rule that redraws it).
    """
    fix = "Delete it and rerun the rule sample (snakemake ... sample), which redraws it."
    if not Path(path).is_file():
        raise SampleFileError(f"samples file not found: {path}. It is written by the rule sample.")
    try:
        with h5py.File(path, "r") as h5:
            return {
                "latents": h5["latents"][...],
                "images": h5["images"][...],
                "run": json.loads(h5.attrs["run"]),
                "extra": json.loads(h5.attrs["extra"]),
            }
    except (OSError, KeyError, ValueError) as err:
        raise SampleFileError(f"{path} is damaged or not a samples file ({err}). {fix}") from err
