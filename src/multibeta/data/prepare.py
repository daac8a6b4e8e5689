"""Rule prepare_data: build the image dataset file of a config's ``data`` section.

dSprites is generated procedurally (or read from the original npz when
``data.dsprites_npz`` is set), subset and split with ``data.seed``; CelebA is delegated to
:func:`multibeta.data.celeba.prepare_celeba`. The same section gives a byte-identical file.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np

from multibeta.data import dsprites
from multibeta.data.h5io import DatasetArrays, write_image_dataset
from multibeta.utils.io import file_sha256
from multibeta.utils.versions import collect_versions

logger = logging.getLogger(__name__)


def make_split(n: int, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """Seeded random split: int8 [n] with ``round(n * fraction)`` val (1) and test (2) rows.

    Raises:
        ValueError: when the fractions leave no training images.
    """
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    if n_val + n_test >= n:
        raise ValueError(f"data.val_fraction + data.test_fraction leave no training images of "
                         f"{n}; lower them")
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
    perm = rng.permutation(n)
    split = np.zeros(n, dtype=np.int8)
    split[perm[:n_val]] = 1
    split[perm[n_val : n_val + n_test]] = 2
    return split


def _dsprites_arrays(section: dict[str, Any]) -> tuple[DatasetArrays, dict[str, Any]]:
    npz = section.get("dsprites_npz")
    if npz:
        arrays = dsprites.subset(dsprites.load_dsprites_npz(npz), section["size"], section["seed"])
        provenance = {"generator_version": dsprites.NPZ_GENERATOR_VERSION,
                      "source_sha256": file_sha256(npz)}
    else:
        arrays = dsprites.generate_dsprites(section["size"], section["seed"])
        provenance = {"generator_version": dsprites.GENERATOR_VERSION}
    return arrays, provenance


def prepare_dataset(
    data_section: dict[str, Any], out_path: str | os.PathLike, *, workers: int | None = None
) -> dict[str, Any]:
    """Write the dataset file of a validated ``data`` config section to ``out_path``.

    Args:
        data_section: the validated ``data`` section (``section_defaults("data", ...)``).
        out_path: target ``dataset.h5``.
        workers: decoding processes for image files (CelebA); None uses every core.

    Returns:
        Summary for the log: ``dataset``, ``n``, ``channels``, ``split_counts``,
        ``generator_version``, ``on_fraction`` (fraction of non-zero pixels) and ``seconds``.
    """
    name = data_section["name"]
    start = time.perf_counter()
    if name == "celeba":
        from multibeta.data.celeba import prepare_celeba

        return prepare_celeba(data_section, out_path, workers=workers)
    if name != "dsprites":
        raise ValueError(f"unknown data.name {name!r}; use 'dsprites' or 'celeba'")

    arrays, provenance = _dsprites_arrays(data_section)
    split = make_split(len(arrays), data_section["val_fraction"], data_section["test_fraction"],
                       data_section["seed"])
    size = data_section["size"]
    attrs = {"dataset": name, "seed": int(data_section["seed"]), "created_with": collect_versions(),
             "size": -1 if size is None else int(size), **provenance}
    write_image_dataset(
        out_path, images=arrays.images, split=split, factors=arrays.factors,
        factor_classes=arrays.factor_classes, factor_names=arrays.factor_names,
        factor_sizes=arrays.factor_sizes, attrs=attrs,
    )
    counts = np.bincount(split, minlength=3)
    summary = {
        "dataset": name,
        "n": len(arrays),
        "channels": int(arrays.images.shape[1]),
        "split_counts": {"train": int(counts[0]), "val": int(counts[1]), "test": int(counts[2])},
        "generator_version": provenance["generator_version"],
        "on_fraction": float(np.count_nonzero(arrays.images) / max(arrays.images.size, 1)),
        "seconds": round(time.perf_counter() - start, 2),
    }
    logger.info("prepared %s: %s", out_path, summary)
    return summary
