"""A tiny image folder with a labels CSV, for tests and smoke runs of ``data.name: folder``.

``make_image_folder(root, n, side)`` writes ``n`` cartoon images (a coloured shape on a plain
background) into nested folders under ``root`` (png, jpg and webp), and ``labels.csv`` beside
them: ``filename,shape,hue,big,dark``, where ``shape`` (0, 1, 2) and ``hue`` (0..3) are factors
and ``big`` and ``dark`` binary attributes; every one of them changes the drawing. Images are
``side`` x ``side + side // 4`` (not square), so centre-cropping is exercised.

Damage on request, each returned by name in ``FolderFiles.bad``:

- ``corrupt``: that many images written truncated (unreadable);
- ``odd_size``: that many images written at 20 x 16 pixels (too small for any image size);
- ``missing_row``: that many images left out of the CSV;
- ``extra_row``: that many CSV rows naming images that do not exist.
"""

from __future__ import annotations

import colorsys
import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLUMNS = ("shape", "hue", "big", "dark")
FACTORS = ("shape", "hue")
ATTRIBUTES = ("big", "dark")


@dataclass
class FolderFiles:
    """What :func:`make_image_folder` wrote: the root, the CSV, every labelled image's row, the
    bad files by name (relative to root) and the kind of damage."""

    root: Path
    labels: Path
    rows: dict[str, tuple[int, ...]] = field(default_factory=dict)
    bad: dict[str, str] = field(default_factory=dict)


def draw(shape: int, hue: int, big: int, dark: int, width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """An RGB cartoon whose look follows the labels."""
    background = (40, 40, 48) if dark else (200, 200, 190)
    img = Image.new("RGB", (width, height), background)
    d = ImageDraw.Draw(img)
    colour = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue / 4, 0.85, 0.95))
    cx, cy = width / 2 + rng.uniform(-2, 2), height / 2 + rng.uniform(-2, 2)
    r = min(width, height) * (0.32 if big else 0.18)
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == 0:
        d.rectangle(box, fill=colour)
    elif shape == 1:
        d.ellipse(box, fill=colour)
    else:
        d.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=colour)
    return img


def _encode(img: Image.Image, suffix: str) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format={".png": "PNG", ".jpg": "JPEG", ".webp": "WEBP"}[suffix])
    return buffer.getvalue()


def make_image_folder(
    root: Path, n: int = 40, side: int = 128, seed: int = 0, *, corrupt: int = 0, odd_size: int = 0,
    missing_row: int = 0, extra_row: int = 0, grayscale: bool = False,
) -> FolderFiles:
    """Write ``n`` labelled images under ``root/images`` and ``root/labels.csv`` (module docstring)."""
    rng = np.random.default_rng(seed)
    images = root / "images"
    out = FolderFiles(images, root / "labels.csv")
    suffixes = (".png", ".jpg", ".webp")
    lines = []
    for i in range(n):
        labels = (int(rng.integers(3)), int(rng.integers(4)), int(rng.integers(2)), int(rng.integers(2)))
        rel = f"{'ab'[i % 2]}/{i // 10:02d}/img{i:04d}{suffixes[i % 3]}"
        path = images / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        img = draw(*labels, side, side + side // 4, rng)
        if grayscale:
            img = img.convert("L")
        data = _encode(img, path.suffix)
        if i < corrupt:
            data = data[: len(data) // 3]
            out.bad[rel] = "unreadable"
        elif i < corrupt + odd_size:
            data = _encode(img.resize((20, 16)), path.suffix)
            out.bad[rel] = "smaller than"
        path.write_bytes(data)
        if corrupt + odd_size <= i < corrupt + odd_size + missing_row:
            out.bad[rel] = "no row in the labels CSV"
            continue
        lines.append([rel, *labels])
        if rel not in out.bad:
            out.rows[rel] = labels
    for j in range(extra_row):
        rel = f"gone/missing{j}.png"
        lines.append([rel, 0, 0, 0, 0])
        out.bad[rel] = "but no such image under root"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["filename", *COLUMNS])
    writer.writerows(lines)
    out.labels.write_text(buffer.getvalue())
    return out
