"""Rule prepare_data: build the image dataset file of a config's ``data`` section.

dSprites is generated procedurally (or read from the original npz when
``data.dsprites_npz`` is set), subset and split with ``data.seed``; the other sources
(:data:`SOURCES`) are delegated to their modules: CelebA
(:func:`multibeta.data.celeba.prepare_celeba`), an image folder
(:func:`multibeta.data.folder.prepare_folder`), Shapes3D
(:func:`multibeta.data.shapes3d.prepare_shapes3d`) and MPI3D
(:func:`multibeta.data.mpi3d.prepare_mpi3d`). The same section gives a byte-identical file.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from multibeta.data import dsprites
from multibeta.data.h5io import DatasetArrays, write_image_dataset
from multibeta.data.subsets import make_split
from multibeta.utils.io import file_sha256
from multibeta.utils.versions import collect_versions

logger = logging.getLogger(__name__)

#: Every ``data.name`` and what it reads.
SOURCES: dict[str, str] = {
    "dsprites": "generated procedurally (or the original npz, data.dsprites_npz)",
    "celeba": "the user's CelebA release (data.celeba)",
    "folder": "a folder of the user's images with optional CSV labels (data.folder)",
    "shapes3d": "the user's 3dshapes.h5 (data.shapes3d)",
    "mpi3d": "the user's MPI3D .npz (data.mpi3d)",
}
#: Sources with ground-truth factors whatever the user's files (the image folder has them when
#: its CSV has integer columns).
FACTOR_SOURCES: tuple[str, ...] = ("dsprites", "shapes3d", "mpi3d")


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


#: Keys of the data section added after datasets were first prepared; rule prepare_data
#: receives the section without those that hold their defaults
#: (``multibeta.workflow.experiments.data_identity``), and :func:`prepare_dataset` fills them in.
LATER_KEYS: tuple[str, ...] = ("image_size", "folder", "shapes3d", "mpi3d")


def _with_defaults(data_section: dict[str, Any]) -> dict[str, Any]:
    """``data_section`` with the :data:`LATER_KEYS` it lacks set to their schema defaults."""
    missing = [k for k in LATER_KEYS if k not in data_section]
    if not missing:
        return data_section
    defaults = _later_defaults()
    return {**data_section, **{k: copy.deepcopy(defaults[k]) for k in missing}}


@lru_cache(maxsize=1)
def _later_defaults() -> dict[str, Any]:
    """The defaults of :data:`LATER_KEYS`, read from ``workflow/schemas/`` (the one definition;
    the data layer does not import the workflow layer's validator)."""
    import yaml

    schemas = Path(__file__).resolve().parents[3] / "workflow" / "schemas"
    props = yaml.safe_load((schemas / "data.schema.yaml").read_text())["properties"]
    folder = yaml.safe_load((schemas / "folder.schema.yaml").read_text())["properties"]

    def fill(properties: dict[str, Any]) -> dict[str, Any]:
        return {k: v["default"] for k, v in properties.items() if "default" in v}

    return {"image_size": props["image_size"]["default"], "folder": fill(folder),
            "shapes3d": fill(props["shapes3d"]["properties"]), "mpi3d": fill(props["mpi3d"]["properties"])}


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
        ``generator_version`` and ``seconds``; dSprites adds ``on_fraction`` (fraction of
        non-zero pixels), the other sources what their own ``prepare_*`` returns.
    """
    data_section = _with_defaults(data_section)
    name = data_section["name"]
    start = time.perf_counter()
    if name == "celeba":
        from multibeta.data.celeba import prepare_celeba

        return prepare_celeba(data_section, out_path, workers=workers)
    if name == "folder":
        from multibeta.data.folder import prepare_folder

        return prepare_folder(data_section, out_path, workers=workers)
    if name == "shapes3d":
        from multibeta.data.shapes3d import prepare_shapes3d

        return prepare_shapes3d(data_section, out_path)
    if name == "mpi3d":
        from multibeta.data.mpi3d import prepare_mpi3d

        return prepare_mpi3d(data_section, out_path)
    if name != "dsprites":
        raise ValueError(f"unknown data.name {name!r}; use one of {list(SOURCES)}")
    if data_section.get("image_size", dsprites.IMAGE_SIZE) != dsprites.IMAGE_SIZE:
        raise ValueError(f"dSprites is defined at {dsprites.IMAGE_SIZE}x{dsprites.IMAGE_SIZE}; data.image_size "
                         f"{data_section['image_size']} does not apply to it (set it to 64 or leave it out)")

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


def has_factors(data_section: dict[str, Any]) -> bool:
    """Whether the dataset of ``data_section`` will hold ground-truth factors (the factor
    classifier, edit directions and per-factor metrics then run).

    The :data:`FACTOR_SOURCES` always do, CelebA never; an image folder does when its labels CSV
    (``data.folder.labels``) has a factor column (an integer column that is not 0/1). That CSV is
    read here, when the workflow is planned; a missing or malformed one counts as none (rule
    prepare_data then stops with the message that names the problem).
    """
    name = data_section["name"]
    if name in FACTOR_SOURCES:
        return True
    if name != "folder" or not data_section["folder"]["labels"]:
        return False
    from multibeta.data.folder import FolderLabelsError, label_columns

    try:
        factors, _ = label_columns(data_section["folder"]["labels"])
    except (OSError, FolderLabelsError):
        return False
    return bool(factors)
