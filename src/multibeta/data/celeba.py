"""CelebA: the user's copy of the aligned CelebA release, cropped and resized to 64x64
(or ``data.image_size``).

Input: the official release (https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html) as users
have it, under ``data.celeba.root``:

- ``img_align_celeba/`` (202,599 JPEGs of 178x218, ``000001.jpg`` ...) or the official
  ``img_align_celeba.zip``, read in place (no extraction);
- ``list_attr_celeba.txt``: the image count, the 40 attribute names, then one
  ``000001.jpg -1  1 ...`` row per image;
- ``list_eval_partition.txt``: ``000001.jpg 0`` rows (0 train, 1 valid, 2 test).

Each file is looked up in ``root/`` and ``root/celeba/`` (torchvision's layout), and also in
the release's own ``Img/``, ``Anno/`` and ``Eval/`` subfolders. With
``data.celeba.download: true`` and a network, ``torchvision.datasets.CelebA`` fetches the
missing files into ``root/celeba/``; otherwise a missing file stops the run with a message
listing exactly what to place where.

Output (:func:`prepare_celeba`): the image dataset HDF5 of ``multibeta.data.h5io``: images
uint8 [N, 3, S, S] (S = ``data.image_size``, 64 by default; the crops below scale with S), the 40 attributes mapped from {-1, 1} to {0, 1} with their names, the
official partition as ``split`` and the source file names. Rows keep the release's file
order.

Crops (``data.celeba.crop``), in pixel coordinates of the 178x218 aligned image; every
preset reproduces the reference pipeline's torchvision transforms exactly (same rounding):

============== ==================================================== =========================
preset         geometry                                             used by
============== ==================================================== =========================
infodiffusion  resize the short side to 64, centre-crop 64x64       InfoDiffusion's CelebA
               (the centre 178x178 square, rows 20..198)            loader, whose TAD/FID
                                                                    table also holds the
                                                                    β-VAE, InfoVAE, Diff-AE
                                                                    numbers we compare with
d2c            the 128x128 box centred at (x=89, y=121), i.e.       D2C, Diff-AE
               columns 25..153, rows 57..185, resized to 64         (``celeba64d2c``), DisDiff
nashae         resize the short side to 96, centre-crop 64x64       NashAE, where TAD was
               (about the centre 119x119 square)                    introduced
center148      centre 148x148 crop, resized to 64                   DCGAN-style VAE code
center140      centre 140x140 crop, resized to 64                   WAE and many VAE papers
center108      centre 108x108 crop, resized to 64                   DCGAN-tensorflow, GANs
squash         the whole image resized to 64x64 (aspect distorted)
pad            padded with black to 218x218, resized to 64
============== ==================================================== =========================

Subset: ``data.size`` images are drawn from the kept splits, either seeded without
replacement (``subset: random``, the draw used for dSprites) or the first ``size`` in file
order (``subset: first``: InfoDiffusion's TAD protocol uses the first 10,000 training
images). Both keep ascending file order.

Corrupt, truncated or missing images are reported by file name; ``on_corrupt: skip`` drops
them (logged, counted in the returned summary and in the HDF5 attrs), ``fail`` stops after
listing every bad file. A data set is never silently partial.
"""

from __future__ import annotations

import io
import logging
import os
import time
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageFile
from tqdm.auto import tqdm

from multibeta.data.image_files import compact_rows, default_workers
from multibeta.data.imaging import RESIZE_FILTERS as IMAGING_FILTERS

logger = logging.getLogger(__name__)

GENERATOR_VERSION = "celeba-release-1"
IMAGE_SIZE = 64  # the default data.image_size (the crops' reference size)
NUM_IMAGES = 202_599  # images in the full release
SOURCE_SIZE = (178, 218)  # (width, height) of the aligned images

ATTRIBUTE_NAMES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)
SPLIT_CODES: dict[str, int] = {"train": 0, "val": 1, "test": 2}  # as multibeta.data.h5io

IMAGE_DIR = "img_align_celeba"
IMAGE_ZIP = "img_align_celeba.zip"
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
# Where each file may sit below root/ and root/celeba/: directly, or in the release's folders.
_RELEASE_FOLDER = {IMAGE_DIR: "Img", IMAGE_ZIP: "Img", ATTR_FILE: "Anno", PARTITION_FILE: "Eval"}
_RELEASE_URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
_MAX_LISTED = 20  # bad files named one by one in messages and logs

ImageKind = Literal["folder", "zip"]


class CelebAFilesMissing(FileNotFoundError):
    """CelebA input files are missing; the message lists what to place where."""


class CelebAFormatError(ValueError):
    """An annotation file is not in the official format; the message names file and line."""


class CelebACorruptImages(RuntimeError):
    """Images could not be read and ``on_corrupt`` is ``fail`` (or none could be read)."""


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True, kw_only=True)
class CelebAConfig:
    """Options of one CelebA preparation, from a validated ``data`` section."""

    root: Path
    download: bool
    image_source: Literal["auto", "folder", "zip"]
    crop: str
    resize_filter: str
    on_corrupt: Literal["skip", "fail"]
    splits: tuple[str, ...]
    subset: Literal["random", "first"]
    size: int | None
    seed: int
    image_size: int = IMAGE_SIZE

    @classmethod
    def from_section(cls, data: dict[str, Any]) -> CelebAConfig:
        """Build from the validated, defaulted ``data`` section (``data.celeba`` inside)."""
        c = data["celeba"]
        return cls(
            root=Path(c["root"]), download=c["download"], image_source=c["image_source"],
            crop=c["crop"], resize_filter=c["resize_filter"], on_corrupt=c["on_corrupt"],
            splits=tuple(c["splits"]), subset=c["subset"], size=data["size"], seed=data["seed"],
            image_size=int(data.get("image_size", IMAGE_SIZE)),
        )


# ----------------------------------------------------------------------------- files


@dataclass(frozen=True)
class CelebAFiles:
    """Located input files: ``images`` is the folder or the zip, per ``image_kind``."""

    images: Path
    image_kind: ImageKind
    attributes: Path
    partition: Path


def _candidates(root: Path, name: str) -> list[Path]:
    """Places where the release file ``name`` may be, in order of preference."""
    return [root / base / sub / name for base in ("", "celeba") for sub in ("", _RELEASE_FOLDER[name])]


def _jpeg_folder(path: Path) -> Path | None:
    """``path`` if it is a folder holding JPEGs (or Kaggle's nested copy of it), else None."""
    for folder in (path, path / IMAGE_DIR):
        if folder.is_dir():
            with os.scandir(folder) as entries:
                if any(e.name.lower().endswith(".jpg") for e in entries):
                    return folder
    return None


def _find(root: Path, name: str) -> Path | None:
    for path in _candidates(root, name):
        if name == IMAGE_DIR:
            folder = _jpeg_folder(path)
            if folder is not None:
                return folder
        elif path.is_file():
            return path
    return None


def _missing_message(root: Path, missing: list[str], image_source: str) -> str:
    lines = [f"CelebA input files not found under data.celeba.root = {root}. Place:"]
    for name in missing:
        if name == "images":
            folder = f"the folder {root / IMAGE_DIR}/ ({NUM_IMAGES:,} JPEGs 000001.jpg ... {NUM_IMAGES:06d}.jpg)"
            archive = f"the official zip {root / IMAGE_ZIP} (read in place, no need to extract)"
            lines.append("  - " + {"folder": folder, "zip": archive}.get(image_source, f"{folder} or {archive}"))
        else:
            lines.append(f"  - {root / name}")
    lines.append(
        f"Each may also sit in {root / 'celeba'}/ (torchvision's layout) or in the release's Img/, "
        f"Anno/ and Eval/ subfolders. They are in the CelebA release at {_RELEASE_URL}: "
        f"Img/{IMAGE_ZIP}, Anno/{ATTR_FILE}, Eval/{PARTITION_FILE}. On a machine with network "
        f"access, data.celeba.download: true lets torchvision fetch them into {root / 'celeba'}/."
    )
    return "\n".join(lines)


def locate_celeba(root: str | os.PathLike, image_source: str = "auto") -> CelebAFiles:
    """Find the release files under ``root`` (see the module docstring for the layouts).

    Args:
        root: the folder given as ``data.celeba.root``.
        image_source: ``auto`` (the folder when present, else the zip), ``folder`` or ``zip``.

    Raises:
        CelebAFilesMissing: listing every missing file and where to place it.
    """
    root = Path(root).expanduser().absolute()
    folder = _find(root, IMAGE_DIR) if image_source in ("auto", "folder") else None
    archive = _find(root, IMAGE_ZIP) if image_source in ("auto", "zip") and folder is None else None
    attributes, partition = _find(root, ATTR_FILE), _find(root, PARTITION_FILE)
    missing = [label for label, path in
               (("images", folder or archive), (ATTR_FILE, attributes), (PARTITION_FILE, partition))
               if path is None]
    if missing:
        raise CelebAFilesMissing(_missing_message(root, missing, image_source))
    if folder is not None:
        return CelebAFiles(folder, "folder", attributes, partition)
    return CelebAFiles(archive, "zip", attributes, partition)


def download_celeba(root: str | os.PathLike) -> None:
    """Let ``torchvision.datasets.CelebA`` download the release into ``root/celeba/``.

    Needs network access and the ``gdown`` package (the files are on Google Drive).
    """
    from torchvision.datasets import CelebA

    logger.info("downloading CelebA with torchvision into %s", Path(root) / "celeba")
    CelebA(root=os.fspath(root), split="all", target_type=[], download=True)


def ensure_celeba_files(
    root: str | os.PathLike, *, image_source: str = "auto", download: bool = False,
    downloader: Callable[[Path], None] | None = None,
) -> CelebAFiles:
    """:func:`locate_celeba`, downloading first when files are missing and ``download``.

    ``downloader(root)`` fetches the release (default :func:`download_celeba`).

    Raises:
        CelebAFilesMissing: files are missing and download is off, or the download failed
            (the message then also gives the download error).
    """
    try:
        return locate_celeba(root, image_source)
    except CelebAFilesMissing as missing:
        if not download:
            raise
        try:
            (downloader or download_celeba)(Path(root).expanduser().absolute())
        except Exception as err:  # network, quota, missing gdown: all end in the same advice
            raise CelebAFilesMissing(
                f"{missing}\nThe download (data.celeba.download: true) failed: "
                f"{type(err).__name__}: {err}"
            ) from err
    return locate_celeba(root, image_source)


# ----------------------------------------------------------------------------- annotations


def _format_error(path: Path, line: int | None, problem: str, expected: str) -> CelebAFormatError:
    where = f"{path}" if line is None else f"{path}, line {line}"
    return CelebAFormatError(
        f"{where}: {problem}. Expected the official CelebA format: {expected}. "
        f"Use the unmodified file from the CelebA release ({_RELEASE_URL})."
    )


_ATTR_EXPECTED = ("line 1 the number of images, line 2 the 40 attribute names separated by "
                  "spaces, then one row per image: the file name and 40 values -1 or 1")
_ATTR_VALUES = frozenset(("-1", "1"))
_PARTITION_EXPECTED = "one row per image: the file name and 0 (train), 1 (valid) or 2 (test)"


def _read_lines(path: Path, expected: str) -> list[str]:
    try:
        return path.read_text(encoding="ascii").splitlines()
    except UnicodeDecodeError as err:
        raise _format_error(path, None, f"not a plain text file ({err})", expected) from err


def read_attributes(path: str | os.PathLike) -> tuple[list[str], list[str], np.ndarray]:
    """Parse ``list_attr_celeba.txt``.

    Returns:
        (file names [N], attribute names [40], attributes int8 [N, 40] in {0, 1}), rows in
        file order (-1 -> 0, 1 -> 1).

    Raises:
        CelebAFormatError: naming the file, the line and what the official format expects.
    """
    path = Path(path)
    lines = _read_lines(path, _ATTR_EXPECTED)
    if len(lines) < 3:
        raise _format_error(path, None, f"only {len(lines)} lines", _ATTR_EXPECTED)
    header = lines[0].strip()
    if "," in lines[0] or "," in lines[1]:
        raise _format_error(path, 1, "comma-separated values (a CSV such as Kaggle's "
                                     "list_attr_celeba.csv?)", _ATTR_EXPECTED)
    if not header.isdigit():
        raise _format_error(path, 1, f"{header[:40]!r} is not the number of images", _ATTR_EXPECTED)
    names = lines[1].split()
    if tuple(names) != ATTRIBUTE_NAMES:
        raise _format_error(path, 2, f"found {len(names)} names ({' '.join(names[:3])} ...) instead of "
                                     f"the 40 CelebA attributes {ATTRIBUTE_NAMES[0]} ... "
                                     f"{ATTRIBUTE_NAMES[-1]} in release order", _ATTR_EXPECTED)
    filenames: list[str] = []
    values: list[list[bool]] = []  # bools, not strings: 8M short strings would take ~0.5 GB
    for number, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1:
            raise _format_error(path, number, f"{len(parts) - 1} values after the file name instead of "
                                              f"{len(names)}", _ATTR_EXPECTED)
        if not _ATTR_VALUES.issuperset(parts[1:]):
            col = next(j for j, v in enumerate(parts[1:]) if v not in _ATTR_VALUES)
            raise _format_error(path, number, f"value {parts[col + 1]!r} for {names[col]} (only -1 "
                                              f"and 1 are allowed)", _ATTR_EXPECTED)
        filenames.append(parts[0])
        values.append([v == "1" for v in parts[1:]])
    if int(header) != len(filenames):
        raise _format_error(path, 1, f"the header says {int(header)} images but {len(filenames)} rows "
                                     f"follow (a truncated or edited file?)", _ATTR_EXPECTED)
    _check_unique(path, filenames, _ATTR_EXPECTED)
    return filenames, names, np.array(values, dtype=np.int8)


def _check_unique(path: Path, filenames: list[str], expected: str) -> None:
    if len(set(filenames)) != len(filenames):
        seen: set[str] = set()
        duplicate = next(f for f in filenames if f in seen or seen.add(f))
        raise _format_error(path, None, f"file name {duplicate} appears more than once", expected)


def read_partition(path: str | os.PathLike, filenames: Sequence[str]) -> np.ndarray:
    """Parse ``list_eval_partition.txt`` and return the split of each of ``filenames``.

    Returns:
        int8 [N]: 0 train, 1 validation, 2 test, in the order of ``filenames``.

    Raises:
        CelebAFormatError: a malformed row, or images of the attribute file that have no
            partition (the message gives their count and the first names).
    """
    path = Path(path)
    lines = _read_lines(path, _PARTITION_EXPECTED)
    partition: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise _format_error(path, number, f"{line.strip()[:60]!r}", _PARTITION_EXPECTED)
        if parts[0] in partition:
            raise _format_error(path, number, f"file name {parts[0]} appears more than once",
                                _PARTITION_EXPECTED)
        partition[parts[0]] = int(parts[1])
    missing = [f for f in filenames if f not in partition]
    if missing:
        shown = ", ".join(missing[:_MAX_LISTED]) + (" ..." if len(missing) > _MAX_LISTED else "")
        raise CelebAFormatError(
            f"{path} has no partition for {len(missing)} of the {len(filenames)} images listed in "
            f"{ATTR_FILE}: {shown}. Both files must come unmodified from the same CelebA release "
            f"({_RELEASE_URL})."
        )
    extra = len(partition) - len(filenames)
    if extra > 0:
        logger.warning("%s lists %d images that %s does not; they are ignored", path, extra, ATTR_FILE)
    return np.array([partition[f] for f in filenames], dtype=np.int8)


# ----------------------------------------------------------------------------- subset


def select_rows(
    split: np.ndarray, *, splits: Sequence[str], size: int | None, seed: int,
    subset: Literal["random", "first"],
) -> np.ndarray:
    """Rows to prepare: those of the kept ``splits``, then ``size`` of them, ascending.

    ``subset="random"`` draws without replacement with the same seeded generator as the
    dSprites subset; ``"first"`` takes the first ``size`` in file order.

    Returns:
        int64 [M], ascending row indices into the release's file order.

    Raises:
        ValueError: ``size`` exceeds the images in the kept splits.
    """
    pool = np.flatnonzero(np.isin(split, [SPLIT_CODES[s] for s in splits])).astype(np.int64)
    if size is None:
        return pool
    if size > len(pool):
        raise ValueError(f"data.size = {size} exceeds the {len(pool)} CelebA images in the splits "
                         f"{list(splits)} (data.celeba.splits); lower it or use null for all")
    if subset == "first":
        return pool[:size]
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    return pool[np.sort(rng.choice(len(pool), size=size, replace=False))]


# ----------------------------------------------------------------------------- crops


def _resize_short_side(img: Image.Image, size: int, resample: int) -> Image.Image:
    """torchvision ``Resize(size)`` on a PIL image: the short side becomes ``size``."""
    w, h = img.size
    if w <= h:
        return img.resize((size, int(size * h / w)), resample)
    return img.resize((int(size * w / h), size), resample)


def _center_crop(img: Image.Image, size: int) -> Image.Image:
    """torchvision ``CenterCrop(size)`` on a PIL image at least ``size`` on each side."""
    w, h = img.size
    if w < size or h < size:
        raise ValueError(f"image of {w}x{h} is smaller than the {size}x{size} crop")
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def _to_size(img: Image.Image, resample: int, size: int) -> Image.Image:
    return img.resize((size, size), resample)


def _crop_d2c(img: Image.Image, resample: int, size: int) -> Image.Image:
    cx, cy, half = 89, 121, 64
    w, h = img.size
    if w < cx + half or h < cy + half:
        raise ValueError(f"image of {w}x{h} does not hold the d2c box (needs the aligned 178x218 images)")
    return _to_size(img.crop((cx - half, cy - half, cx + half, cy + half)), resample, size)


def _crop_pad(img: Image.Image, resample: int, size: int) -> Image.Image:
    w, h = img.size
    side = max(w, h)
    canvas = Image.new("RGB", (side, side))
    canvas.paste(img, ((side - w) // 2, (side - h) // 2))
    return _to_size(canvas, resample, size)


#: Crop presets ``(image, PIL filter, output side S) -> S x S image``; at S = 64 each is its
#: reference pipeline's transform; at other sizes the geometry scales with S (the resize of
#: infodiffusion and nashae targets S and 1.5 S, the fixed boxes are resized to S).
CROPS: dict[str, Callable[[Image.Image, int, int], Image.Image]] = {
    "infodiffusion": lambda img, r, s: _center_crop(_resize_short_side(img, s, r), s),
    "d2c": _crop_d2c,
    "nashae": lambda img, r, s: _center_crop(_resize_short_side(img, s * 3 // 2, r), s),
    "center148": lambda img, r, s: _to_size(_center_crop(img, 148), r, s),
    "center140": lambda img, r, s: _to_size(_center_crop(img, 140), r, s),
    "center108": lambda img, r, s: _to_size(_center_crop(img, 108), r, s),
    "squash": _to_size,
    "pad": _crop_pad,
}
RESIZE_FILTERS: dict[str, int] = IMAGING_FILTERS  # the shared filters (multibeta.data.imaging)


def crop_and_resize(img: Image.Image, crop: str, resize_filter: str = "bilinear", size: int = IMAGE_SIZE) -> np.ndarray:
    """Apply a crop preset (module docstring) to one image.

    Args:
        img: a PIL image of any mode (converted to RGB).
        crop: a key of :data:`CROPS`.
        resize_filter: a key of :data:`RESIZE_FILTERS`.
        size: the output side S (``data.image_size``).

    Returns:
        uint8 [3, size, size].

    Raises:
        KeyError: unknown preset or filter.
        ValueError: the image is too small for the preset.
    """
    if crop not in CROPS:
        raise KeyError(f"unknown CelebA crop {crop!r}; choose one of {sorted(CROPS)}")
    if resize_filter not in RESIZE_FILTERS:
        raise KeyError(f"unknown resize filter {resize_filter!r}; choose one of {sorted(RESIZE_FILTERS)}")
    out = CROPS[crop](img.convert("RGB"), RESIZE_FILTERS[resize_filter], int(size))
    return np.asarray(out, dtype=np.uint8).transpose(2, 0, 1).copy()


# ----------------------------------------------------------------------------- decoding

# Errors that mean "this one image is unreadable" (PIL raises OSError for truncated data,
# UnidentifiedImageError/SyntaxError for broken headers; zipfile raises BadZipFile on a bad CRC).
_IMAGE_ERRORS = (OSError, ValueError, EOFError, SyntaxError, KeyError, zipfile.BadZipFile,
                 Image.DecompressionBombError)


@dataclass
class _Decoder:
    """Reads images by file name from the folder or zip and applies the crop (one per process)."""

    files: CelebAFiles
    members: dict[str, str] | None  # file name -> zip member name
    crop: str
    resize_filter: str
    size: int = IMAGE_SIZE
    _zip: zipfile.ZipFile | None = None

    def read(self, name: str) -> bytes:
        if self.files.image_kind == "folder":
            return (self.files.images / name).read_bytes()
        if self._zip is None:  # opened lazily, so each worker process has its own handle
            self._zip = zipfile.ZipFile(self.files.images)
        return self._zip.read(self.members[name])

    def decode(self, name: str) -> np.ndarray:
        with Image.open(io.BytesIO(self.read(name))) as img:
            img.load()  # raises on truncated data
            return crop_and_resize(img, self.crop, self.resize_filter, self.size)

    def decode_chunk(self, rows: np.ndarray, names: list[str]) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
        """Decode ``names``; returns (rows, images uint8 [k, 3, S, S], [(name, error)])."""
        out = np.zeros((len(names), 3, self.size, self.size), dtype=np.uint8)
        errors = []
        for i, name in enumerate(names):
            try:
                out[i] = self.decode(name)
            except _IMAGE_ERRORS as err:
                errors.append((name, f"{type(err).__name__}: {err}"))
        return rows, out, errors

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_zip": None}


_WORKER_DECODER: _Decoder | None = None


def _init_worker(decoder: _Decoder) -> None:
    global _WORKER_DECODER
    _WORKER_DECODER = decoder
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # also under spawn/forkserver


def _decode_in_worker(rows: np.ndarray, names: list[str]) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    assert _WORKER_DECODER is not None
    return _WORKER_DECODER.decode_chunk(rows, names)


def _available(files: CelebAFiles, names: Sequence[str]) -> tuple[dict[str, str] | None, list[str]]:
    """(zip member of each file name or None for a folder, names not present at all)."""
    if files.image_kind == "folder":
        with os.scandir(files.images) as entries:
            present = {e.name for e in entries}
        return None, [n for n in names if n not in present]
    try:
        with zipfile.ZipFile(files.images) as zf:
            members: dict[str, str] = {}
            for member in zf.namelist():  # the first member of each file name wins
                if not member.endswith("/"):
                    members.setdefault(member.rsplit("/", 1)[-1], member)
    except (zipfile.BadZipFile, OSError) as err:
        raise CelebACorruptImages(f"{files.images} is not a readable zip archive ({err}); re-download "
                                  f"{IMAGE_ZIP} or extract it to {files.images.parent / IMAGE_DIR}/") from err
    return members, [n for n in names if n not in members]


def decode_images(
    files: CelebAFiles, names: Sequence[str], *, crop: str, resize_filter: str,
    workers: int = 1, chunk_size: int = 512, size: int = IMAGE_SIZE,
) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """Decode, crop and resize the images ``names``, in parallel.

    Args:
        files: the located release files.
        names: file names to decode.
        crop, resize_filter: see :func:`crop_and_resize`.
        workers: processes; 1 decodes in this process. The result does not depend on it.
        chunk_size: images per task.
        size: the output side S (``data.image_size``).

    Returns:
        (images uint8 [N, 3, S, S] in the order of ``names`` (zeros where unreadable),
        ok bool [N], {file name: reason} of the unreadable or missing images).
    """
    n = len(names)
    members, absent = _available(files, names)
    bad: dict[str, str] = {name: f"missing from {files.images}" for name in absent}
    images = np.zeros((n, 3, size, size), dtype=np.uint8)
    todo = np.array([i for i, name in enumerate(names) if name not in bad], dtype=np.int64)
    decoder = _Decoder(files, members, crop, resize_filter, size)
    step = max(1, min(chunk_size, -(-len(todo) // max(1, 4 * workers))))
    chunks = [todo[i:i + step] for i in range(0, len(todo), step)]
    logger.info("decoding %d CelebA images from %s (%s) with %d worker(s), crop %s, %s resize",
                len(todo), files.images, files.image_kind, workers, crop, resize_filter)

    def collect(result: tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]) -> None:
        rows, out, errors = result
        images[rows] = out
        for name, reason in errors:
            bad[name] = reason
        progress.update(len(rows))

    truncated_ok = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # truncated files must raise (workers inherit this)
    try:
        with tqdm(total=len(todo), desc="CelebA", unit="img", disable=None) as progress:
            if workers <= 1 or len(chunks) <= 1:
                for rows in chunks:
                    collect(decoder.decode_chunk(rows, [names[i] for i in rows]))
            else:
                with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker,
                                         initargs=(decoder,)) as pool:
                    pending = {pool.submit(_decode_in_worker, rows, [names[i] for i in rows]) for rows in chunks}
                    while pending:  # finished futures are dropped, so results are not held twice
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for future in done:
                            collect(future.result())
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated_ok
        if decoder._zip is not None:
            decoder._zip.close()
    ok = np.array([name not in bad for name in names], dtype=bool)
    return images, ok, bad


# ----------------------------------------------------------------------------- prepare


def _describe_bad(bad: dict[str, str]) -> str:
    listed = [f"  {name}: {reason}" for name, reason in sorted(bad.items())[:_MAX_LISTED]]
    more = [f"  ... and {len(bad) - _MAX_LISTED} more"] if len(bad) > _MAX_LISTED else []
    return "\n".join(listed + more)


def prepare_celeba(
    data_section: dict[str, Any], out_path: str | os.PathLike, *, workers: int | None = None,
) -> dict[str, Any]:
    """Read the user's CelebA release and write the image dataset HDF5 (S x S) at ``out_path``.

    Args:
        data_section: the validated, defaulted ``data`` section (``data.celeba``, ``size``,
            ``seed`` are read; the official partition replaces val/test fractions).
        out_path: the HDF5 file, written atomically.
        workers: decoding processes (the rule's threads); None uses every available core.
            Never changes the result, so it is an argument, not part of the hashed section.

    Returns:
        Summary (the keys of the dSprites summary plus CelebA's): ``dataset``, ``n`` images
        written, ``channels``, ``split_counts`` {train, val, test}, ``generator_version``,
        ``n_listed`` in the release, ``n_selected`` before skipping, ``n_corrupt`` and
        ``corrupt_files`` {name: reason}, ``images`` (path) and ``image_kind``, ``crop``,
        ``resize_filter``, ``subset``, ``splits``, ``workers``, ``seconds``.

    Raises:
        CelebAFilesMissing, CelebAFormatError: see :func:`ensure_celeba_files`,
            :func:`read_attributes`, :func:`read_partition`.
        CelebACorruptImages: unreadable images with ``on_corrupt: fail``, or none readable.
        ValueError: ``data.size`` larger than the kept splits.
    """
    from multibeta.data.h5io import write_image_dataset
    from multibeta.utils.io import file_sha256
    from multibeta.utils.versions import collect_versions

    start = time.perf_counter()
    cfg = CelebAConfig.from_section(data_section)
    workers = default_workers() if workers is None else max(1, int(workers))
    files = ensure_celeba_files(cfg.root, image_source=cfg.image_source, download=cfg.download)
    filenames, attribute_names, attributes = read_attributes(files.attributes)
    split = read_partition(files.partition, filenames)
    rows = select_rows(split, splits=cfg.splits, size=cfg.size, seed=cfg.seed, subset=cfg.subset)
    logger.info("CelebA: %d images listed, %d selected (splits %s, size %s, subset %s); "
                "official partition used, data.val_fraction/test_fraction do not apply",
                len(filenames), len(rows), list(cfg.splits), cfg.size, cfg.subset)
    names = [filenames[i] for i in rows]
    images, ok, bad = decode_images(files, names, crop=cfg.crop, resize_filter=cfg.resize_filter, size=cfg.image_size,
                                    workers=workers)
    if bad:
        message = f"{len(bad)} of {len(names)} CelebA images could not be read:\n{_describe_bad(bad)}"
        if cfg.on_corrupt == "fail" or len(bad) == len(names):
            hint = ("Replace these files from the release, or set data.celeba.on_corrupt: skip to "
                    "leave them out." if len(bad) < len(names) else "No image could be read.")
            raise CelebACorruptImages(f"{message}\n{hint}")
        logger.warning("%s\nskipped (data.celeba.on_corrupt: skip)", message)
    keep = rows[ok]
    images = compact_rows(images, ok) if bad else images
    preprocessing = {
        "crop": cfg.crop, "resize_filter": cfg.resize_filter, "splits": list(cfg.splits),
        "subset": cfg.subset, "size": cfg.size, "n_listed": len(filenames),
        "n_selected": len(names), "n_skipped": len(bad),
        "skipped_files": sorted(bad)[:100],  # the full list is in the returned summary
        "attributes_sha256": file_sha256(files.attributes),
        "partition_sha256": file_sha256(files.partition),
    }
    write_image_dataset(
        out_path, images=images, split=split[keep], attributes=attributes[keep],
        attribute_names=list(attribute_names), filenames=[filenames[i] for i in keep],
        attrs={"dataset": "celeba", "generator_version": GENERATOR_VERSION, "seed": cfg.seed,
               "created_with": collect_versions(), "preprocessing": preprocessing},
    )
    counts = np.bincount(split[keep], minlength=3)
    summary = {
        "dataset": "celeba", "n": int(len(keep)), "channels": 3, "image_size": cfg.image_size,
        "split_counts": dict(zip(SPLIT_CODES, map(int, counts))),
        "generator_version": GENERATOR_VERSION, "n_listed": len(filenames),
        "n_selected": len(names), "n_corrupt": len(bad), "corrupt_files": dict(sorted(bad.items())),
        "images": str(files.images), "image_kind": files.image_kind, "crop": cfg.crop,
        "resize_filter": cfg.resize_filter, "subset": cfg.subset, "splits": list(cfg.splits),
        "workers": workers, "seconds": round(time.perf_counter() - start, 2),
    }
    logger.info("CelebA dataset written to %s: %d images %s, %d skipped, %.1f s", out_path,
                summary["n"], summary["split_counts"], len(bad), summary["seconds"])
    return summary
