"""The files of a bundle (format version 2): names, kinds and size bounds.

A bundle holds no code. Tensors are in safetensors files whose header carries the rest of the
record as JSON (:mod:`multibeta.utils.tensorfile`); the config is YAML (read with
``yaml.safe_load``), the model card Markdown, metrics and the manifest JSON, training records
CSV and PNG. Only the names below may appear in a bundle, and each kind of file has a fixed,
generous size bound that is checked before a file is hashed or read.

| file | holds | bound |
|---|---|---|
| ``vae.safetensors`` | the VAE's EMA weights; arch, config, versions, training summary | 8 GiB |
| ``denoisers/<variant>.safetensors`` | a denoiser's EMA state_dict (every key); arch, variant, normalisation, levels, config | 8 GiB |
| ``latent_space.safetensors`` | σ_t table, cached levels, the fitted start distribution | 1 GiB |
| ``directions.safetensors`` | edit directions by family (vectors, stds; names, labels, t_b) | 1 GiB |
| ``config.yaml`` / ``MODEL_CARD.md`` / ``metrics.json`` | the resolved config / model card / report numbers | 16 / 16 / 256 MiB |
| ``training/<name>.csv`` / ``.png`` | training logs and loss curves | 1 GiB / 256 MiB |
| ``manifest.json`` | format version, variants, versions, SHA-256 and size of every other file | 64 MiB |
"""

from __future__ import annotations

import re

#: Version of the bundle layout; version 1 (pickled ``.pt`` checkpoints) is refused with the
#: command that converts it, any other with its number.
FORMAT_VERSION = 2
#: The last version that held pickled checkpoints (``multibeta convert-bundle`` reads it).
PICKLE_FORMAT_VERSION = 1

MANIFEST = "manifest.json"
VAE_FILE = "vae.safetensors"
DENOISER_DIR = "denoisers"
LATENT_SPACE_FILE = "latent_space.safetensors"
DIRECTIONS_FILE = "directions.safetensors"
CONFIG_FILE = "config.yaml"
CARD_FILE = "MODEL_CARD.md"
METRICS_FILE = "metrics.json"
TRAINING_DIR = "training"

#: A denoiser variant or a training record's stem: letters, digits, ``_ . -``, no path parts.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_STEM = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}"

MiB = 1 << 20
GiB = 1 << 30
#: The manifest's own bound (checked before it is parsed).
MANIFEST_MAX_BYTES = 64 * MiB

#: ``(kind, full-match pattern of the relative path, bound in bytes)`` of every file a bundle may hold.
FILE_KINDS: tuple[tuple[str, re.Pattern[str], int], ...] = tuple(
    (kind, re.compile(pattern), bound) for kind, pattern, bound in (
        ("VAE weights", re.escape(VAE_FILE), 8 * GiB),
        ("denoiser weights", rf"{DENOISER_DIR}/{_STEM}\.safetensors", 8 * GiB),
        ("latent space", re.escape(LATENT_SPACE_FILE), 1 * GiB),
        ("edit directions", re.escape(DIRECTIONS_FILE), 1 * GiB),
        ("config", re.escape(CONFIG_FILE), 16 * MiB),
        ("model card", re.escape(CARD_FILE), 16 * MiB),
        ("metrics", re.escape(METRICS_FILE), 256 * MiB),
        ("training log", rf"{TRAINING_DIR}/{_STEM}\.csv", 1 * GiB),
        ("training figure", rf"{TRAINING_DIR}/{_STEM}\.png", 256 * MiB),
    )
)


def denoiser_file(variant: str) -> str:
    """The bundle-relative path of the denoiser of ``variant``."""
    return f"{DENOISER_DIR}/{variant}.safetensors"


def file_kind(rel: str) -> tuple[str, int] | None:
    """``(kind, size bound)`` of the bundle-relative path ``rel``, or None: not a bundle file."""
    for kind, pattern, bound in FILE_KINDS:
        if pattern.fullmatch(rel):
            return kind, bound
    return None


def required_files(variants: list[str]) -> list[str]:
    """The files every bundle of ``variants`` holds."""
    return [VAE_FILE, LATENT_SPACE_FILE, CONFIG_FILE, *(denoiser_file(v) for v in variants)]
