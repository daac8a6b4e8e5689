"""A tiny data set in the official CelebA release format, for tests and smoke runs.

``make_fake_celeba(root)`` writes what a user of the real CelebA has (see
``multibeta.data.celeba``): ``img_align_celeba/`` with 178x218 JPEGs, the official
``img_align_celeba.zip`` (members ``img_align_celeba/000001.jpg`` ...),
``list_attr_celeba.txt`` and ``list_eval_partition.txt``, in the official text formats.

The images are cartoon faces whose look follows a few of the 40 attributes (hair colour,
Bald, Bangs, Eyeglasses, Smiling, Mouth_Slightly_Open, Wearing_Lipstick, Male, Pale_Skin,
Wearing_Hat, Goatee, Mustache, Narrow_Eyes, Chubby), so attribute-based metrics such as TAD
see real signal; the other attributes are random. The face is centred near (x=89, y=121),
like the aligned CelebA faces, so every crop preset keeps it in view.

This module is deliberately independent of ``multibeta.data.celeba`` (its own copy of the
attribute names), so tests check the reader against the format, not against itself.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from multibeta.data.celeba import ATTRIBUTE_NAMES

WIDTH, HEIGHT = 178, 218  # size of the aligned CelebA images

_A = {name: i for i, name in enumerate(ATTRIBUTE_NAMES)}

_HAIR = {  # hair colour attribute -> RGB; "none of them" is a dark auburn
    "Black_Hair": (25, 20, 18), "Blond_Hair": (225, 195, 115),
    "Brown_Hair": (115, 72, 40), "Gray_Hair": (165, 165, 168),
}
_OTHER_HAIR = (90, 45, 35)
_SKIN = ((224, 172, 140), (198, 134, 96), (150, 100, 70))
_PALE_SKIN = (246, 226, 212)


def filename(index: int) -> str:
    """Official file name of the 0-based image ``index`` (``000001.jpg`` for 0)."""
    return f"{index + 1:06d}.jpg"


def fake_attributes(n_images: int, rng: np.random.Generator) -> np.ndarray:
    """Plausible attributes: int8 [N, 40] in {-1, 1}, with CelebA's logical constraints."""
    attrs = rng.random((n_images, len(ATTRIBUTE_NAMES))) < rng.uniform(0.1, 0.5, len(ATTRIBUTE_NAMES))
    for name in ("Male", "Smiling", "Eyeglasses", "Mouth_Slightly_Open", "Pale_Skin", "Bangs"):
        attrs[:, _A[name]] = rng.random(n_images) < 0.45
    hair = rng.choice(len(_HAIR) + 2, size=n_images, p=[0.25, 0.2, 0.2, 0.1, 0.15, 0.1])
    for k, name in enumerate(_HAIR):
        attrs[:, _A[name]] = hair == k
    bald = hair == len(_HAIR) + 1
    attrs[:, _A["Bald"]] = bald
    attrs[bald, _A["Bangs"]] = False
    male = attrs[:, _A["Male"]]
    for name in ("Heavy_Makeup", "Wearing_Lipstick"):
        attrs[:, _A[name]] &= ~male
    for name in ("Goatee", "Mustache", "Sideburns", "5_o_Clock_Shadow"):
        attrs[:, _A[name]] &= male
    attrs[:, _A["No_Beard"]] = ~(attrs[:, _A["Goatee"]] | attrs[:, _A["Mustache"]])
    attrs[:, _A["Young"]] &= hair != 3  # grey hair is not young
    return np.where(attrs, 1, -1).astype(np.int8)


def draw_face(attrs: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A 178x218 RGB cartoon face for one row of {-1, 1} attributes."""
    has = {name: attrs[i] > 0 for name, i in _A.items()}
    background = tuple(int(c) for c in rng.integers(60, 200, 3))
    img = Image.new("RGB", (WIDTH, HEIGHT), background)
    draw = ImageDraw.Draw(img)
    # Aligned CelebA: eyes near y=112, x=69 and 109; mouth near y=152; face about 90 px wide.
    cx, cy = 89 + int(rng.integers(-4, 5)), 121 + int(rng.integers(-4, 5))
    half_w = 42 + 5 * has["Male"] + 6 * has["Chubby"]
    half_h = 56
    hair = next((rgb for name, rgb in _HAIR.items() if has[name]), _OTHER_HAIR)
    if not has["Bald"]:
        draw.ellipse((cx - half_w - 12, cy - half_h - 20, cx + half_w + 12, cy + 36), fill=hair)
    skin = _PALE_SKIN if has["Pale_Skin"] else _SKIN[int(rng.integers(len(_SKIN)))]
    draw.ellipse((cx - half_w, cy - half_h, cx + half_w, cy + half_h), fill=skin)
    if has["Bangs"]:
        draw.chord((cx - half_w, cy - half_h - 4, cx + half_w, cy - 14), 180, 360, fill=hair)
    if has["Wearing_Hat"]:
        draw.rectangle((cx - half_w - 16, cy - half_h - 26, cx + half_w + 16, cy - half_h + 10), fill=(150, 20, 30))
    eye_h = 2 if has["Narrow_Eyes"] else 6
    for side in (-1, 1):
        ex = cx + side * 20
        draw.ellipse((ex - 7, cy - 9 - eye_h, ex + 7, cy - 9 + eye_h), fill=(40, 30, 30))
        if has["Eyeglasses"]:
            draw.rectangle((ex - 13, cy - 20, ex + 13, cy + 2), outline=(10, 10, 10), width=3)
    if has["Eyeglasses"]:
        draw.line((cx - 7, cy - 9, cx + 7, cy - 9), fill=(10, 10, 10), width=3)
    lips = (190, 20, 40) if has["Wearing_Lipstick"] else (150, 70, 70)
    if has["Mouth_Slightly_Open"]:
        draw.ellipse((cx - 14, cy + 24, cx + 14, cy + 38), fill=(60, 10, 20), outline=lips, width=3)
    elif has["Smiling"]:
        draw.arc((cx - 20, cy + 12, cx + 20, cy + 38), 20, 160, fill=lips, width=4)
    else:
        draw.line((cx - 14, cy + 31, cx + 14, cy + 31), fill=lips, width=4)
    if has["Mustache"]:
        draw.rectangle((cx - 17, cy + 16, cx + 17, cy + 22), fill=(50, 35, 25))
    if has["Goatee"]:
        draw.ellipse((cx - 12, cy + 40, cx + 12, cy + 54), fill=(50, 35, 25))
    pixels = np.asarray(img, dtype=np.int16) + rng.integers(-6, 7, (HEIGHT, WIDTH, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def jpeg_bytes(img: Image.Image, quality: int = 90) -> bytes:
    """The image encoded as JPEG (as in img_align_celeba)."""
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def truncate(data: bytes, keep: float = 0.4) -> bytes:
    """The first ``keep`` fraction of a file: a truncated (corrupt) JPEG."""
    return data[: max(16, int(len(data) * keep))]


def split_of(n_images: int) -> np.ndarray:
    """Official-style contiguous partition: about 80 % train, 10 % valid, 10 % test."""
    n_test = max(1, n_images // 10)
    n_valid = max(1, n_images // 10)
    n_train = n_images - n_valid - n_test
    return np.repeat(np.array([0, 1, 2], dtype=np.int8), [n_train, n_valid, n_test])


def attribute_text(filenames: list[str], attrs: np.ndarray) -> str:
    """``list_attr_celeba.txt``: count, the attribute names, then ``name -1  1 ...`` rows."""
    lines = [str(len(filenames)), " ".join(ATTRIBUTE_NAMES) + " "]
    lines += [f"{name} " + " ".join(f"{int(v):2d}" for v in row) for name, row in zip(filenames, attrs)]
    return "\n".join(lines) + "\n"


def partition_text(filenames: list[str], split: np.ndarray) -> str:
    """``list_eval_partition.txt``: ``name 0|1|2`` rows."""
    return "".join(f"{name} {int(s)}\n" for name, s in zip(filenames, split))


def make_fake_celeba(
    root: Path,
    n_images: int = 48,
    seed: int = 0,
    zip_only: bool = False,
    *,
    corrupt: Iterable[int] = (),
    torchvision_layout: bool = False,
) -> Path:
    """Write a CelebA-format data set of ``n_images`` faces under ``root``.

    Args:
        root: folder to write into (created).
        n_images: number of images (at least 3, one per split).
        seed: seed of attributes and drawings; the same seed gives the same files.
        zip_only: write only ``img_align_celeba.zip``, not the extracted folder.
        corrupt: 0-based indices of images written truncated (in the folder and the zip).
        torchvision_layout: put the files in ``root/celeba/`` as torchvision does.

    Returns:
        ``root``: the value for ``data.celeba.root``.
    """
    if n_images < 3:
        raise ValueError("n_images must be at least 3 (one image per split)")
    root = Path(root)
    base = root / "celeba" if torchvision_layout else root
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [filename(i) for i in range(n_images)]
    attrs = fake_attributes(n_images, rng)
    bad = set(corrupt)
    blobs = []
    for i in range(n_images):
        data = jpeg_bytes(draw_face(attrs[i], rng))
        blobs.append(truncate(data) if i in bad else data)
    if not zip_only:
        folder = base / "img_align_celeba"
        folder.mkdir(exist_ok=True)
        for name, data in zip(names, blobs):
            (folder / name).write_bytes(data)
    with zipfile.ZipFile(base / "img_align_celeba.zip", "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("img_align_celeba/", b"")
        for name, data in zip(names, blobs):
            zf.writestr(f"img_align_celeba/{name}", data)
    (base / "list_attr_celeba.txt").write_text(attribute_text(names, attrs))
    (base / "list_eval_partition.txt").write_text(partition_text(names, split_of(n_images)))
    return root
