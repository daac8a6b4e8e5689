"""The samples file of one sampling run: latents, decoded images and the run's settings."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from multibeta.data.hdf5 import H5FileKind, create_h5, open_h5


class SampleFileError(ValueError):
    """A samples file that cannot be read (message names the file and the fix)."""


SAMPLES_FILE = H5FileKind(
    "samples file", made_by="It is written by the rule sample.", error=SampleFileError,
    missing_error=SampleFileError,
    fix="Delete it and rerun the rule sample (snakemake ... sample), which redraws it.",
)


def write_samples(
    path: str | os.PathLike, *, latents: np.ndarray, images: np.ndarray, run: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write ``latents`` float32 [N, d] and ``images`` uint8 [N, C, H, W] with the settings, atomically."""
    latents = np.asarray(latents, dtype=np.float32)
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(latents):
        raise ValueError("images must be uint8 [N, C, H, W] aligned with latents [N, d]")
    with create_h5(path, track_order=True) as h5:
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
    with open_h5(path, SAMPLES_FILE) as h5:
        try:
            return {
                "latents": h5["latents"][...],
                "images": h5["images"][...],
                "run": json.loads(h5.attrs["run"]),
                "extra": json.loads(h5.attrs["extra"]),
            }
        except (OSError, KeyError, ValueError) as err:
            raise SampleFileError(
                f"{path} is damaged or not a samples file ({err}). {SAMPLES_FILE.fix}"
            ) from err
