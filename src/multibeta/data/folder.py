"""An image folder: every image under ``data.folder.root``, with optional labels from a CSV.

Input (``data.folder``, see ``workflow/schemas/folder.schema.yaml``):

- ``root``: png, jpg/jpeg and webp files (extension in any case), nested folders allowed. Files
  and folders whose names start with a dot are ignored; symbolic links to folders are not
  followed, and a linked file that resolves outside ``root`` is a bad file (never read).
  Images are ordered by their path relative to ``root`` (POSIX, sorted).
- ``labels`` (optional): a CSV ``filename,attr1,attr2,...`` with one row per image, the
  filename relative to ``root``. Every value is an integer. A column of 0/1 (or -1/1) values
  becomes a binary attribute (TAD, attribute directions); any other integer column becomes a
  factor whose classes are its sorted distinct values (MIG, DCI, FactorVAE, SAP, the factor
  classifier); a column with one value only is dropped (logged).

Each image is decoded with PIL (EXIF orientation applied), converted to ``channels`` (L or
RGB) and brought to ``data.image_size`` square by ``fit``: ``center_crop`` (the centred square
of the short side, resized), ``resize`` (the whole image, aspect distorted) or ``exact``
(already that size). With ``center_crop`` and ``resize`` an image smaller than the size on its
short side is a bad file (no upsampling).

Bad files: unreadable or truncated images, wrong sizes, CSV rows without an image and images
without a CSV row. Each is reported by name with its reason; ``on_bad_file: error`` (default)
stops after listing all of them, ``skip`` leaves them out (every name in the prepare_data log,
the count and the first names in the dataset file's attrs). A malformed CSV always stops the
run, naming the line. Nothing is written to the output unless the whole preparation succeeds.

Output: the image dataset HDF5 of :mod:`multibeta.data.h5io`: images uint8 [N, C, S, S],
``filenames`` (paths relative to root), ``factors``/``factor_classes`` and ``attributes`` from
the CSV, and a split drawn with ``data.seed`` from ``data.val_fraction``/``data.test_fraction``.
``data.size`` images are drawn (seeded, as dSprites) among the labelled images before decoding.
Decoded images go to a temporary memory-mapped file beside the output (removed afterwards), so a
large folder at 256x256 never has to fit in memory.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageFile, ImageOps

from multibeta.data.image_files import compact_rows, default_workers
from multibeta.data.imaging import center_square, resample_code, to_chw
from multibeta.data.subsets import draw_rows, make_split

logger = logging.getLogger(__name__)

GENERATOR_VERSION = "folder-1"
EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
FILENAME_COLUMN = "filename"
#: Bad files named one by one in an error message (the log lists every one).
MAX_LISTED = 50
_CHUNK = 64  # images per decoding task

# Errors that mean "this one image is unreadable" (as multibeta.data.celeba).
_IMAGE_ERRORS = (OSError, ValueError, EOFError, SyntaxError, Image.DecompressionBombError)


class FolderLabelsError(ValueError):
    """The labels CSV is malformed; the message names the file, the line and the fix."""


class FolderBadFiles(RuntimeError):
    """Bad images or unmatched CSV rows with ``on_bad_file: error`` (or nothing usable left)."""


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True, kw_only=True)
class FolderConfig:
    """Options of one folder preparation, from a validated ``data`` section."""

    root: Path
    labels: Path | None
    fit: Literal["center_crop", "resize", "exact"]
    channels: int
    resize_filter: str
    on_bad_file: Literal["error", "skip"]
    image_size: int
    size: int | None
    seed: int
    val_fraction: float
    test_fraction: float

    @classmethod
    def from_section(cls, data: dict[str, Any]) -> "FolderConfig":
        """Build from the validated, defaulted ``data`` section (``data.folder`` inside)."""
        f = data["folder"]
        return cls(root=Path(f["root"]).expanduser(), labels=None if f["labels"] is None else Path(f["labels"]).expanduser(),
                   fit=f["fit"], channels=int(f["channels"]), resize_filter=f["resize_filter"],
                   on_bad_file=f["on_bad_file"], image_size=int(data["image_size"]), size=data["size"],
                   seed=int(data["seed"]), val_fraction=data["val_fraction"], test_fraction=data["test_fraction"])


# ----------------------------------------------------------------------------- listing


def list_images(root: str | os.PathLike) -> tuple[list[str], dict[str, str]]:
    """The images under ``root``: (sorted relative POSIX paths, {path: reason} of linked files
    that resolve outside ``root``, which are never read).

    Raises:
        FileNotFoundError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: data.folder.root = {root}. Point it at the "
                                f"folder holding your images ({', '.join(EXTENSIONS)}).")
    real_root = root.resolve()
    found: list[str] = []
    outside: dict[str, str] = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith(".") or not name.lower().endswith(EXTENSIONS):
                continue
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink() and not path.resolve().is_relative_to(real_root):
                outside[rel] = "a symbolic link to a file outside data.folder.root (not followed)"
                continue
            found.append(rel)
    return sorted(found), outside


# ----------------------------------------------------------------------------- labels


@dataclass(frozen=True)
class LabelTable:
    """The labels CSV: ``filenames`` [N], column ``names`` [K], ``values`` int64 [N, K] and the
    file ``lines`` [N] each row was read from."""

    path: Path
    filenames: list[str]
    names: list[str]
    values: np.ndarray
    lines: list[int]


def _labels_error(path: Path, line: int | None, problem: str) -> FolderLabelsError:
    where = f"{path}" if line is None else f"{path}, line {line}"
    return FolderLabelsError(
        f"labels CSV {where}: {problem}. Expected a header 'filename,attr1,attr2,...' and one row per "
        "image: its path relative to data.folder.root, then one integer per column (0/1 for a binary "
        "attribute, class values for a factor). Fix the file (data.folder.labels)."
    )


def _safe_relative(name: str) -> bool:
    """Whether a CSV file name stays inside the root: relative, without '..' or backslashes."""
    pure = PurePosixPath(name)
    return bool(name) and "\\" not in name and not pure.is_absolute() and ".." not in pure.parts


def read_labels_csv(path: str | os.PathLike) -> LabelTable:
    """Parse the labels CSV (module docstring).

    Raises:
        FileNotFoundError: no such file.
        FolderLabelsError: no ``filename`` first column, duplicate or empty column names, a row
            with another number of fields, a value that is not an integer, a file named twice,
            or a file name that leaves the root; the message names the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels CSV not found: data.folder.labels = {path}. Fix the path, or set "
                                "data.folder.labels: null for a folder without labels.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise _labels_error(path, None, f"not UTF-8 text ({err})") from err
    rows = [(number, [cell.strip() for cell in row]) for number, row in
            enumerate(csv.reader(text.splitlines()), start=1) if any(cell.strip() for cell in row)]
    if not rows:
        raise _labels_error(path, None, "the file is empty")
    header_line, header = rows[0]
    if header[0] != FILENAME_COLUMN:
        raise _labels_error(path, header_line, f"the first column is {header[0]!r}, not {FILENAME_COLUMN!r}")
    names = header[1:]
    if any(not n for n in names) or len(set(names)) != len(names) or FILENAME_COLUMN in names:
        raise _labels_error(path, header_line, f"column names must be unique and non-empty, got {names}")
    filenames: list[str] = []
    lines: list[int] = []
    values = np.zeros((len(rows) - 1, len(names)), dtype=np.int64)
    seen: dict[str, int] = {}
    for i, (number, cells) in enumerate(rows[1:]):
        if len(cells) != len(header):
            raise _labels_error(path, number, f"{len(cells)} fields where the header has {len(header)}")
        name = cells[0]
        if not _safe_relative(name):
            raise _labels_error(path, number, f"file name {name!r} is not a path inside data.folder.root "
                                              "(absolute, '..' or backslashes)")
        name = PurePosixPath(name).as_posix()
        if name in seen:
            raise _labels_error(path, number, f"{name} is listed twice (first on line {seen[name]})")
        seen[name] = number
        for k, cell in enumerate(cells[1:]):
            try:
                values[i, k] = int(cell)
            except ValueError:
                raise _labels_error(path, number, f"column {names[k]!r} holds {cell!r}, not an integer") from None
        filenames.append(name)
        lines.append(number)
    return LabelTable(path, filenames, names, values, lines)


@dataclass(frozen=True)
class ColumnKinds:
    """What each CSV column becomes: indices of ``factors``, ``attributes`` and ``dropped``
    (constant) columns; ``negative_binary``: attribute columns holding -1/1 (mapped to 0/1)."""

    factors: list[int]
    attributes: list[int]
    dropped: list[int]
    negative_binary: list[int]


def classify_columns(values: np.ndarray) -> ColumnKinds:
    """Sort the columns of ``values`` int [N, K] into factors, binary attributes and constants."""
    kinds = ColumnKinds([], [], [], [])
    for k in range(values.shape[1]):
        distinct = set(np.unique(values[:, k]).tolist())
        if len(distinct) < 2:
            kinds.dropped.append(k)
        elif distinct <= {0, 1}:
            kinds.attributes.append(k)
        elif distinct <= {-1, 1}:
            kinds.attributes.append(k)
            kinds.negative_binary.append(k)
        else:
            kinds.factors.append(k)
    return kinds


def label_columns(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(factor column names, attribute column names) of a labels CSV over all its rows.

    Raises:
        FileNotFoundError, FolderLabelsError: see :func:`read_labels_csv`.
    """
    table = read_labels_csv(path)
    kinds = classify_columns(table.values)
    return [table.names[k] for k in kinds.factors], [table.names[k] for k in kinds.attributes]


# ----------------------------------------------------------------------------- decoding


class BadImage(ValueError):
    """One image is unusable (wrong size); the message is the reason."""


def decode_image(path: Path, *, image_size: int, fit: str, channels: int, resize_filter: str) -> np.ndarray:
    """One image file as uint8 ``[channels, image_size, image_size]`` (module docstring).

    Raises:
        BadImage: wrong size for ``fit``.
        OSError, ValueError, ...: unreadable or truncated (PIL's errors).
    """
    with Image.open(path) as img:
        img.load()  # raises on truncated data
        img = ImageOps.exif_transpose(img)
        w, h = img.size
        if fit == "exact" and (w, h) != (image_size, image_size):
            raise BadImage(f"is {w}x{h}, not {image_size}x{image_size} (data.folder.fit: exact)")
        if fit != "exact" and min(w, h) < image_size:
            raise BadImage(f"is {w}x{h}, smaller than data.image_size {image_size} on its short side "
                           "(images are not upsampled)")
        img = img.convert("L" if channels == 1 else "RGB")
        if fit == "center_crop":
            img = center_square(img)
        if img.size != (image_size, image_size):
            img = img.resize((image_size, image_size), resample_code(resize_filter))
        return to_chw(img)


@dataclass(frozen=True)
class _Job:
    """What a decoding process needs: where the images are and the memory-mapped output."""

    root: Path
    out: Path
    n: int
    image_size: int
    fit: str
    channels: int
    resize_filter: str


def _decode_chunk(job: _Job, start: int, names: list[str]) -> list[tuple[str, str]]:
    """Decode ``names`` into rows ``start ..`` of the memory-mapped output; return the bad ones."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # truncated files must raise (also under spawn)
    out = np.memmap(job.out, dtype=np.uint8, mode="r+", shape=(job.n, job.channels, job.image_size, job.image_size))
    bad = []
    for i, name in enumerate(names):
        try:
            out[start + i] = decode_image(job.root / name, image_size=job.image_size, fit=job.fit,
                                          channels=job.channels, resize_filter=job.resize_filter)
        except _IMAGE_ERRORS as err:
            reason = str(err) if isinstance(err, BadImage) else f"unreadable ({type(err).__name__}: {err})"
            bad.append((name, reason))
    out.flush()
    del out
    return bad


def decode_all(job: _Job, names: list[str], workers: int) -> dict[str, str]:
    """Decode every image of ``names`` into ``job.out`` (row i = names[i]); {name: reason} of the bad."""
    chunks = [(s, names[s:s + _CHUNK]) for s in range(0, len(names), _CHUNK)]
    truncated_ok = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    bad: dict[str, str] = {}
    try:
        if workers <= 1 or len(chunks) <= 1:
            results = [_decode_chunk(job, s, part) for s, part in chunks]
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(_decode_chunk, [job] * len(chunks), *zip(*chunks)))
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated_ok
    for result in results:
        bad.update(result)
    return bad


# ----------------------------------------------------------------------------- prepare


def describe_bad(bad: dict[str, str], limit: int | None = MAX_LISTED) -> str:
    """One ``  name: reason`` line per bad file (sorted), at most ``limit`` (None: all)."""
    items = sorted(bad.items())
    shown = items if limit is None else items[:limit]
    more = [f"  ... and {len(items) - len(shown)} more (every one is listed in the prepare_data log)"] \
        if len(shown) < len(items) else []
    return "\n".join([f"  {name}: {reason}" for name, reason in shown] + more)


def _match_labels(found: list[str], table: LabelTable | None) -> tuple[list[str], np.ndarray | None, dict[str, str]]:
    """(candidate images, their label rows [M, K], {name: reason} of unmatched images and rows)."""
    if table is None:
        return found, None, {}
    row_of = {name: i for i, name in enumerate(table.filenames)}
    present = set(found)
    bad = {name: f"no row in the labels CSV {table.path.name}" for name in found if name not in row_of}
    bad.update({name: f"listed in the labels CSV {table.path.name} (line {table.lines[i]}) but no such image under root"
                for name, i in row_of.items() if name not in present})
    candidates = [name for name in found if name in row_of]
    return candidates, table.values[[row_of[n] for n in candidates]].reshape(len(candidates), -1), bad


def prepare_folder(data_section: dict[str, Any], out_path: str | os.PathLike, *, workers: int | None = None
                   ) -> dict[str, Any]:
    """Read the user's image folder (and labels CSV) and write the dataset file at ``out_path``.

    Args:
        data_section: the validated, defaulted ``data`` section (``data.folder`` inside).
        out_path: the dataset file, written atomically.
        workers: decoding processes (the rule's threads); None uses every core. Never changes
            the result.

    Returns:
        Summary: ``dataset``, ``n`` images written, ``channels``, ``image_size``,
        ``split_counts``, ``generator_version``, ``n_found`` images under root, ``n_selected``
        (after matching and ``data.size``), ``n_bad`` and ``bad_files`` {name: reason},
        ``factor_names``, ``attribute_names``, ``dropped_columns``, ``workers``, ``seconds``.

    Raises:
        FileNotFoundError: no root folder or no labels CSV at the configured path.
        FolderLabelsError: a malformed CSV.
        FolderBadFiles: bad files with ``on_bad_file: error`` (all named), or no usable image.
        ValueError: ``data.size`` exceeds the labelled images.
    """
    from multibeta.data.h5io import write_image_dataset
    from multibeta.utils.io import file_sha256
    from multibeta.utils.versions import collect_versions

    start = time.perf_counter()
    cfg = FolderConfig.from_section(data_section)
    workers = default_workers() if workers is None else max(1, int(workers))
    found, outside = list_images(cfg.root)
    table = read_labels_csv(cfg.labels) if cfg.labels is not None else None
    candidates, label_rows, bad = _match_labels(found, table)
    bad.update(outside)
    drawn = draw_rows(len(candidates), cfg.size, cfg.seed)
    if drawn is not None:
        candidates = [candidates[i] for i in drawn]
        label_rows = None if label_rows is None else label_rows[drawn]
    logger.info("image folder %s: %d images found, %d selected (labels %s, size %s), fit %s to %dx%d, "
                "%d channel(s), %d worker(s)", cfg.root, len(found), len(candidates), cfg.labels, cfg.size,
                cfg.fit, cfg.image_size, cfg.image_size, cfg.channels, workers)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    scratch = out_path.with_name(f".{out_path.stem}.decoded{os.getpid()}.u8")
    n = len(candidates)
    shape = (n, cfg.channels, cfg.image_size, cfg.image_size)
    try:
        if n:
            np.memmap(scratch, dtype=np.uint8, mode="w+", shape=shape).flush()
            job = _Job(cfg.root, scratch, n, cfg.image_size, cfg.fit, cfg.channels, cfg.resize_filter)
            bad.update(decode_all(job, candidates, workers))
        ok = np.array([name not in bad for name in candidates], dtype=bool)
        if bad:
            message = f"{len(bad)} bad file(s) in the image folder {cfg.root}:\n"
            logger.warning("%s%s", message, describe_bad(bad, limit=None))
            if cfg.on_bad_file == "error" or not ok.any():
                hint = ("Fix or remove them (or add/remove their CSV rows), or set data.folder.on_bad_file: "
                        "skip to leave them out." if ok.any() else "No usable image is left.")
                raise FolderBadFiles(f"{message}{describe_bad(bad)}\n{hint}")
            logger.warning("skipped %d bad file(s) (data.folder.on_bad_file: skip)", len(bad))
        elif not n:
            raise FolderBadFiles(f"no images ({', '.join(EXTENSIONS)}) found under data.folder.root = {cfg.root}")
        keep = [name for name, good in zip(candidates, ok) if good]
        images = compact_rows(np.memmap(scratch, dtype=np.uint8, mode="r+", shape=shape), ok)
        labels = _label_arrays(table, None if label_rows is None else label_rows[ok])
        split = make_split(len(keep), cfg.val_fraction, cfg.test_fraction, cfg.seed)
        preprocessing = {
            "root": str(cfg.root), "labels": None if cfg.labels is None else str(cfg.labels), "fit": cfg.fit,
            "channels": cfg.channels, "resize_filter": cfg.resize_filter, "n_found": len(found),
            "n_selected": n, "n_bad": len(bad), "bad_files": sorted(bad)[:100],
            "dropped_columns": labels["dropped"],
            "labels_sha256": None if cfg.labels is None else file_sha256(cfg.labels),
        }
        write_image_dataset(
            out_path, images=images, split=split, filenames=keep,
            factors=labels["factors"], factor_classes=labels["factor_classes"],
            factor_names=labels["factor_names"], factor_sizes=labels["factor_sizes"],
            attributes=labels["attributes"], attribute_names=labels["attribute_names"],
            attrs={"dataset": "folder", "generator_version": GENERATOR_VERSION, "seed": cfg.seed,
                   "size": -1 if cfg.size is None else int(cfg.size), "created_with": collect_versions(),
                   "preprocessing": preprocessing},
        )
        del images
    finally:
        with contextlib.suppress(FileNotFoundError):
            scratch.unlink()
    counts = np.bincount(split, minlength=3)
    summary = {
        "dataset": "folder", "n": len(keep), "channels": cfg.channels, "image_size": cfg.image_size,
        "split_counts": {"train": int(counts[0]), "val": int(counts[1]), "test": int(counts[2])},
        "generator_version": GENERATOR_VERSION, "n_found": len(found), "n_selected": n, "n_bad": len(bad),
        "bad_files": dict(sorted(bad.items())), "factor_names": labels["factor_names"],
        "attribute_names": labels["attribute_names"], "dropped_columns": labels["dropped"],
        "workers": workers, "seconds": round(time.perf_counter() - start, 2),
    }
    logger.info("image folder dataset written to %s: %d images %s, %d bad file(s) skipped, factors %s, "
                "attributes %s, %.1f s", out_path, summary["n"], summary["split_counts"], len(bad),
                summary["factor_names"], summary["attribute_names"], summary["seconds"])
    return summary


def _label_arrays(table: LabelTable | None, values: np.ndarray | None) -> dict[str, Any]:
    """The dataset's label arrays from the kept rows' CSV values [N, K] (None without a CSV)."""
    out: dict[str, Any] = {"factors": None, "factor_classes": None, "factor_names": None, "factor_sizes": None,
                           "attributes": None, "attribute_names": None, "dropped": []}
    if table is None or values is None:
        return out
    kinds = classify_columns(values)
    out["dropped"] = [table.names[k] for k in kinds.dropped]
    if out["dropped"]:
        logger.warning("labels CSV %s: column(s) %s hold one value only and are dropped", table.path, out["dropped"])
    if kinds.factors:
        raw = values[:, kinds.factors]
        classes = np.empty_like(raw)
        sizes = []
        for j in range(raw.shape[1]):
            distinct, classes[:, j] = np.unique(raw[:, j], return_inverse=True)
            sizes.append(len(distinct))
        out.update(factors=raw.astype(np.float32), factor_classes=classes.astype(np.int64),
                   factor_names=[table.names[k] for k in kinds.factors], factor_sizes=sizes)
    if kinds.attributes:
        attrs = values[:, kinds.attributes]
        attrs = np.where(attrs > 0, 1, 0).astype(np.int8)  # 0/1 kept, -1/1 mapped to 0/1
        out.update(attributes=attrs, attribute_names=[table.names[k] for k in kinds.attributes])
    return out
