"""Convert a bundle of format version 1 (pickled ``.pt`` checkpoints) to the current format.

This is the one place that reads a bundle's pickle files, and only when the caller says it
trusts their source (``trust_pickle=True``; the CLI's ``--trust-pickle``). Even then they are
read with torch's weights-only unpickler (tensors, numbers, strings, containers, and numpy
arrays of numeric dtypes), never with a full unpickler. The old bundle is checked first like a
current one: names inside its folder, no symlinks, every file with its recorded SHA-256.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any

import yaml

from multibeta.bundle.export import write_bundle
from multibeta.bundle.layout import MANIFEST, METRICS_FILE, PICKLE_FORMAT_VERSION, TRAINING_DIR
from multibeta.bundle.manifest import BundleError, load_manifest, verify_files
from multibeta.models.loading import check_denoiser_vae
from multibeta.utils.checkpoint import CheckpointError, load_checkpoint, load_weights_only, unpickler_reason
from multibeta.utils.io import file_sha256
from multibeta.utils.versions import collect_versions

logger = logging.getLogger(__name__)

#: The files of a format-1 bundle that hold pickles.
OLD_VAE, OLD_LATENT_SPACE, OLD_DIRECTIONS = "vae.pt", "latent_space.pt", "directions.pt"


def _old_denoiser(variant: str) -> str:
    return f"denoisers/{variant}.pt"


def convert_bundle(old: str | os.PathLike, new: str | os.PathLike, *, trust_pickle: bool = False) -> Path:
    """Write the format-1 bundle ``old`` as a current bundle at ``new``; return ``new``.

    The models, tables and records are carried over unchanged (same tensors, same config,
    metrics and training records), so the new bundle samples exactly as the old one did.

    Raises:
        BundleError: ``trust_pickle`` not given, ``old`` is not a format-1 bundle, fails its
            checks, or a file cannot be read weights-only (each named).
    """
    old, new = Path(old), Path(new)
    if not trust_pickle:
        raise BundleError(
            f"converting {old} reads its pickled checkpoints ({OLD_VAE}, denoisers/*.pt, "
            f"{OLD_LATENT_SPACE}); do that only for a bundle from a source you trust, and say so "
            "with --trust-pickle (trust_pickle=True in Python). They are read weights-only even then."
        )
    manifest = load_manifest(old)
    version = manifest.get("format_version")
    if version != PICKLE_FORMAT_VERSION:
        raise BundleError(f"bundle {old}: format version {version!r}; only version "
                          f"{PICKLE_FORMAT_VERSION} bundles are converted (a current one loads as it is).")
    if new.resolve() == old.resolve():
        raise BundleError(f"convert-bundle: the new bundle must be another folder than {old}")
    verify_files(old, manifest, known_names=False)
    files = manifest["files"]

    def read(rel: str, kind: str | None) -> dict[str, Any]:
        path = old / rel
        try:
            if kind is not None:
                return load_checkpoint(path, kind=kind)
            state = load_weights_only(path)
        except CheckpointError as exc:
            raise BundleError(f"bundle {old}: {rel} is refused: {exc}") from exc
        except pickle.UnpicklingError as exc:
            raise BundleError(f"bundle {old}: {rel} is refused: a weights-only load fails "
                              f"({unpickler_reason(exc)})") from exc
        if not isinstance(state, dict):
            raise BundleError(f"bundle {old}: {rel} is refused: not a dict of tensors and numbers")
        return state

    for rel in (OLD_VAE, OLD_LATENT_SPACE, "config.yaml",
                *(_old_denoiser(v) for v in manifest.get("variants", []))):
        if rel not in files:
            raise BundleError(f"bundle {old}: {rel} is not listed; it is not a complete format-1 bundle")
    vae_state = read(OLD_VAE, "vae")
    denoisers = {}
    for variant in manifest.get("variants", []):
        denoisers[variant] = read(_old_denoiser(variant), "diffusion")
        try:
            check_denoiser_vae(denoisers[variant], files[OLD_VAE]["sha256"])
        except CheckpointError as exc:
            raise BundleError(f"bundle {old}: {_old_denoiser(variant)} does not belong to its {OLD_VAE}: {exc}") from exc
    space = {"kind": "latent_space", **read(OLD_LATENT_SPACE, None)}
    directions = read(OLD_DIRECTIONS, None) if OLD_DIRECTIONS in files else None
    try:
        config = yaml.safe_load((old / "config.yaml").read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise BundleError(f"bundle {old}: config.yaml is refused: {exc}") from exc
    training = {rel.removeprefix(f"{TRAINING_DIR}/"): old / rel for rel in files
                if rel.startswith(f"{TRAINING_DIR}/")}
    out = write_bundle(
        new, experiment=str(manifest.get("experiment")), vae_state=vae_state, denoiser_states=denoisers,
        latent_space=space, directions=directions, config=config,
        latent_dim=int(manifest.get("latent_dim") or space["prior_mean"].numel()),
        metrics_path=old / METRICS_FILE if METRICS_FILE in files else None, training_files=training,
        versions=manifest.get("versions"),
        extra={"converted_from": {"format_version": version, "bundle": str(old),
                                  "manifest_sha256": file_sha256(old / MANIFEST), "by": collect_versions()}},
    )
    logger.info("converted bundle %s (format %s) to %s", old, version, out)
    return out

