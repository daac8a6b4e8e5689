"""Shared preparation of the disentanglement benchmark files (Shapes3D, MPI3D).

Each source module reads its file's layout and gives the rows to keep (a ``data.size`` subset
drawn with :func:`multibeta.data.subsets.draw_rows`, the dSprites draw), their factor classes
and values, and a :class:`multibeta.data.rows.RowReader` of its images; :func:`write_factor_dataset`
splits them with ``data.seed`` (as dSprites) and streams the images into the dataset file.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from multibeta.data.h5io import write_image_dataset
from multibeta.data.rows import LazyImages, RowReader
from multibeta.data.subsets import make_split

logger = logging.getLogger(__name__)

#: Side of the published benchmark images; other ``data.image_size`` values resize them.
NATIVE_SIZE = 64
#: Filter of that resize (PIL, antialiased when shrinking).
RESIZE_FILTER = "bilinear"


@dataclass(frozen=True)
class FactorSelection:
    """The rows of a benchmark file to prepare and their labels.

    Attributes:
        rows: int64 [N] ascending rows of the file.
        factor_classes: int64 [N, F] class index of each factor.
        factors: float32 [N, F] factor values (the file's, or the class index).
        factor_names, factor_sizes: F names and class counts.
    """

    rows: np.ndarray
    factor_classes: np.ndarray
    factors: np.ndarray
    factor_names: Sequence[str]
    factor_sizes: Sequence[int]


def write_factor_dataset(
    data_section: dict[str, Any], out_path: str | os.PathLike, *, reader: RowReader,
    selection: FactorSelection, provenance: dict[str, Any], start: float | None = None,
) -> dict[str, Any]:
    """Write the dataset file of a benchmark (images streamed from ``reader``) and summarise it.

    Args:
        data_section: the validated ``data`` section (``name``, ``seed``, ``size``,
            ``val_fraction``, ``test_fraction``, ``image_size``).
        out_path: the dataset file, written atomically.
        reader: the file's images ``[N_file, 64, 64, C]``.
        selection: rows and labels to write.
        provenance: file attrs naming the source (``generator_version``, ``source_file`` ...).
        start: ``time.perf_counter()`` at the start of the preparation (for ``seconds``).

    Returns:
        The summary of :func:`multibeta.data.prepare.prepare_dataset` (``dataset``, ``n``,
        ``channels``, ``image_size``, ``split_counts``, ``generator_version``, ``seconds``) plus
        ``n_file``, the images in the file.
    """
    from multibeta.utils.versions import collect_versions

    start = time.perf_counter() if start is None else start
    name = data_section["name"]
    n = len(selection.rows)
    split = make_split(n, data_section["val_fraction"], data_section["test_fraction"], data_section["seed"])
    image_size = int(data_section["image_size"])
    images = LazyImages(reader, selection.rows, image_size, RESIZE_FILTER)
    size = data_section["size"]
    attrs = {"dataset": name, "seed": int(data_section["seed"]), "created_with": collect_versions(),
             "size": -1 if size is None else int(size), **provenance}
    write_image_dataset(
        out_path, images=images, split=split, factors=selection.factors,
        factor_classes=selection.factor_classes, factor_names=list(selection.factor_names),
        factor_sizes=[int(k) for k in selection.factor_sizes], attrs=attrs,
    )
    counts = np.bincount(split, minlength=3)
    summary = {
        "dataset": name, "n": n, "channels": int(images.shape[1]), "image_size": image_size,
        "split_counts": {"train": int(counts[0]), "val": int(counts[1]), "test": int(counts[2])},
        "generator_version": provenance["generator_version"], "n_file": int(reader.shape[0]),
        "seconds": round(time.perf_counter() - start, 2),
    }
    logger.info("prepared %s: %s", out_path, summary)
    return summary
