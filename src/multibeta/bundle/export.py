"""Write a bundle: the trained models and the latent space's tables as tensor files, hashed.

Every model and table is written as a :mod:`multibeta.utils.tensorfile` (safetensors + JSON,
no pickle; the files are listed in :mod:`.layout`). The bundle is assembled in a temporary
sibling folder and renamed into place only when it is complete, so an interrupted export never
leaves a folder that looks like a bundle.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from multibeta.bundle.card import model_card
from multibeta.bundle.layout import (
    CARD_FILE, CONFIG_FILE, DENOISER_DIR, DIRECTIONS_FILE, FORMAT_VERSION, LATENT_SPACE_FILE, MANIFEST,
    METRICS_FILE, NAME, TRAINING_DIR, VAE_FILE, denoiser_file, file_kind,
)
from multibeta.bundle.manifest import file_entries
from multibeta.cache.latent_cache import LatentCache
from multibeta.core.schedules import sigma_rms
from multibeta.models.loading import check_denoiser_vae
from multibeta.sampling.directions import attribute_directions
from multibeta.sampling.edit import Directions, basis_directions
from multibeta.sampling.samplers import GaussianPrior
from multibeta.utils.bases import DEFAULT_ICA, IcaSettings
from multibeta.utils.checkpoint import load_checkpoint
from multibeta.utils.io import file_sha256
from multibeta.utils.tensorfile import write_tensor_file
from multibeta.utils.versions import collect_versions

logger = logging.getLogger(__name__)

#: What a VAE record keeps of its checkpoint besides the weights (``ema``).
VAE_KEYS = ("kind", "arch", "config", "versions", "summary", "complete")
#: Keys of a denoiser checkpoint that only resuming training needs (not stored in a bundle).
DENOISER_TRAINING_ONLY = frozenset({"model", "optimizer", "scaler", "generator", "rng", "acc", "log"})


def vae_record(state: dict[str, Any]) -> dict[str, Any]:
    """What a bundle stores of a VAE checkpoint: :data:`VAE_KEYS` and the weights that
    :func:`multibeta.models.vae.load_vae` uses (EMA when present) as ``ema``."""
    weights = state.get("ema") if state.get("ema") is not None else state["model"]
    return {**{k: state[k] for k in VAE_KEYS if k in state}, "ema": dict(weights)}


def denoiser_record(state: dict[str, Any], vae_sha256: str) -> dict[str, Any]:
    """What a bundle stores of a denoiser checkpoint: every key but
    :data:`DENOISER_TRAINING_ONLY` (the EMA ``state_dict`` whole, whatever buffers it holds),
    with ``vae_sha256`` the SHA-256 of the bundle's VAE file and the original kept as
    ``trained_on_vae_sha256``."""
    record = {k: v for k, v in state.items() if k not in DENOISER_TRAINING_ONLY}
    record["trained_on_vae_sha256"] = state.get("trained_on_vae_sha256", state.get("vae_sha256"))
    record["vae_sha256"] = vae_sha256
    return record


def latent_space(cache: LatentCache) -> dict[str, Any]:
    """What a user of the models needs to know of the latent space, from the latent cache.

    Returns:
        ``kind`` (``"latent_space"``), ``schedule_t`` / ``schedule_sigma`` ``[M]`` (float64: σ_t on a dense grid), ``level_t``
        / ``level_sigma`` / ``level_beta`` ``[K]`` (the cached levels; the two σ tables are
        ``[M, d]`` / ``[K, d]`` for a per-dimension schedule), and the fitted start
        distribution of z_1 (``prior_mean`` ``[d]``, ``prior_scale_tril`` ``[d, d]``, float32,
        fitted on the training rows exactly as the sample rule fits it).
    """
    prior = GaussianPrior.from_cache(cache)
    return {
        "kind": "latent_space",
        "schedule_t": torch.as_tensor(cache.schedule_t),
        "schedule_sigma": torch.as_tensor(cache.schedule_sigma),
        "level_t": torch.as_tensor(cache.t),
        "level_sigma": torch.as_tensor(cache.sigma),
        "level_beta": torch.as_tensor(cache.beta),
        # σ at t = 1; its RMS over dimensions for a per-dimension schedule (the prior holds the rest)
        "sigma_1": float(sigma_rms(cache.sigma_1)),
        "prior_mean": prior.mean,
        "prior_scale_tril": prior.scale_tril,
        "vae_sha256": cache.vae_sha256,
    }


def edit_directions(
    cache: LatentCache, t_b: float, n: int, *, seed: int = 0, orientation: str = "normal",
    ica: IcaSettings = DEFAULT_ICA,
) -> dict[str, dict[str, Any]]:
    """Edit directions of the latents at level ``t_b`` (training rows), by family.

    ``attribute`` (data with labels: dSprites factors, CelebA attributes): one linear-probe
    direction per factor (:func:`multibeta.sampling.directions.attribute_directions`), named by
    the factor (``attribute:scale``). ``pca`` and ``ica``: the top ``n`` principal / independent
    directions (as the traversals; ``seed`` and ``ica``: the FastICA starts), named by index
    (``pca:0``). Each entry: ``names``, ``labels``, unit ``vectors [K, d]``, ``stds [K]`` (the
    latents' std along each, one edit unit) and ``t_b``.
    """
    rows = cache.rows("train")
    latents = cache.mu_at_level(rows, t_b)
    found: dict[str, Directions] = {}
    labels, names, sizes = _labels(cache)
    if labels is not None:
        found["attribute"] = attribute_directions(latents, labels[rows], names, sizes, seed=seed,
                                                  orientation=orientation).directions
    for family in ("pca", "ica"):
        found[family] = basis_directions(latents, family, n, seed=seed, ica=ica)
    out = {}
    for family, dirs in found.items():
        keys = list(names) if family == "attribute" else [str(k) for k in range(len(dirs.labels))]
        out[family] = {"names": keys, "labels": list(dirs.labels), "vectors": dirs.vectors.float(),
                       "stds": dirs.stds.float(), "t_b": float(t_b)}
    return out


def _labels(cache: LatentCache) -> tuple[Any, list[str], list[int]]:
    """Per-row classes ``[N, F]``, names and sizes of the cache's factors or attributes."""
    def attr(name: str) -> Any:
        value = cache.attrs.get(name)
        return json.loads(value) if isinstance(value, str) else value

    classes = cache.metadata("factor_classes")
    if classes is not None and attr("factor_names"):
        return (np.asarray(classes, dtype=np.int64), [str(n) for n in attr("factor_names")],
                [int(s) for s in attr("factor_sizes")])
    attributes = cache.metadata("attributes")
    if attributes is not None and attr("attribute_names"):
        names = [str(n) for n in attr("attribute_names")]
        return np.asarray(attributes, dtype=np.int64), names, [2] * len(names)
    return None, [], []


def export_bundle(
    out_dir: str | os.PathLike,
    *,
    experiment: str,
    vae_path: str | os.PathLike,
    denoiser_paths: dict[str, str | os.PathLike],
    cache_path: str | os.PathLike,
    config: dict[str, Any],
    metrics_path: str | os.PathLike | None = None,
    training_files: dict[str, str | os.PathLike] | None = None,
    directions_t_b: float | None = None,
    n_directions: int = 8,
    orientation: str = "normal",
) -> Path:
    """Write the bundle of one experiment to ``out_dir`` (replacing an older one atomically).

    Args:
        out_dir: the bundle folder to create.
        experiment: the experiment's name (recorded and shown in the model card).
        vae_path: the multi-β VAE checkpoint (``vae/model.pt``, or the ``vae.safetensors`` of
            the bundle the experiment started from).
        denoiser_paths: ``{variant: diffusion/<variant>/model.pt}`` (or a bundle's denoisers).
        cache_path: the latent cache the denoisers were trained on (``cache/latents.h5``).
        config: the experiment's resolved config.
        metrics_path: the report's ``metrics.json`` (its headline numbers go into the model
            card and the file itself into the bundle), or None.
        training_files: ``{name: path}`` of training records copied to ``training/<name>``
            (train logs, loss curves): an experiment started from the bundle plots them.
        directions_t_b: level of the edit directions stored with the bundle
            (:func:`edit_directions`, as ``sampling.directions.t_b``); None stores none.
        n_directions: PCA / ICA directions (``sampling.directions.n_components``).
        orientation: of the attribute directions (``sampling.directions.orientation``).

    Raises:
        VAEMismatchError: the cache was built from another VAE checkpoint.
        DenoiserVAEMismatchError: a denoiser was trained on the latents of another VAE.
    """
    cache = LatentCache(cache_path, in_memory=True)
    try:
        vae_sha = file_sha256(vae_path)
        cache.check_vae(vae_sha)
        vae_state = load_checkpoint(vae_path, kind="vae")
        denoisers = {}
        for variant, path in sorted(denoiser_paths.items()):
            denoisers[variant] = load_checkpoint(path, kind="diffusion")
            check_denoiser_vae(denoisers[variant], vae_sha)
        directions = None
        if directions_t_b is not None:
            metrics = config.get("metrics", {})
            directions = edit_directions(cache, directions_t_b, n_directions, orientation=orientation,
                                         seed=int(metrics.get("seed", 0)),
                                         ica=IcaSettings(**metrics.get("ica", {})))
        return write_bundle(
            out_dir, experiment=experiment, vae_state=vae_state, denoiser_states=denoisers,
            latent_space=latent_space(cache), directions=directions, config=config,
            latent_dim=int(cache.latent_dim), metrics_path=metrics_path, training_files=training_files,
        )
    finally:
        cache.close()


def write_bundle(
    out_dir: str | os.PathLike,
    *,
    experiment: str,
    vae_state: dict[str, Any],
    denoiser_states: dict[str, dict[str, Any]],
    latent_space: dict[str, Any],
    directions: dict[str, dict[str, Any]] | None,
    config: dict[str, Any],
    latent_dim: int,
    metrics_path: str | os.PathLike | None = None,
    training_files: dict[str, str | os.PathLike] | None = None,
    versions: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a bundle of format :data:`FORMAT_VERSION` from loaded checkpoints and tables.

    Args:
        vae_state, denoiser_states: checkpoint dicts (``kind`` ``vae`` / ``diffusion``); what
            is kept of them: :func:`vae_record`, :func:`denoiser_record`.
        latent_space: :func:`latent_space`; directions: :func:`edit_directions` or None.
        versions: recorded in the manifest (default: the running ones).
        extra: more top-level manifest entries (a conversion records its origin).

    Raises:
        ValueError: a variant or training-record name that is not a plain file name.
    """
    out_dir = Path(out_dir)
    bad = [v for v in denoiser_states if not NAME.fullmatch(v)]
    bad += [n for n in training_files or {} if file_kind(f"{TRAINING_DIR}/{n}") is None]
    if bad:
        raise ValueError(f"not names a bundle can hold: {bad} (variants: letters, digits, _ . -; "
                         "training records: such a name ending in .csv or .png)")
    tmp = out_dir.with_name(f".{out_dir.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / DENOISER_DIR).mkdir(parents=True)
        write_tensor_file(vae_record(vae_state), tmp / VAE_FILE)
        bundle_vae_sha = file_sha256(tmp / VAE_FILE)
        for variant, state in sorted(denoiser_states.items()):
            write_tensor_file(denoiser_record(state, bundle_vae_sha), tmp / denoiser_file(variant))
        write_tensor_file(latent_space, tmp / LATENT_SPACE_FILE)
        if directions is not None:
            write_tensor_file({"kind": "directions", "families": directions}, tmp / DIRECTIONS_FILE)
        for name, path in sorted((training_files or {}).items()):
            (tmp / TRAINING_DIR).mkdir(exist_ok=True)
            shutil.copyfile(path, tmp / TRAINING_DIR / name)
        (tmp / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
        metrics = None
        if metrics_path is not None:
            shutil.copyfile(metrics_path, tmp / METRICS_FILE)
            metrics = json.loads(Path(metrics_path).read_text())
        versions = collect_versions() if versions is None else versions
        (tmp / CARD_FILE).write_text(model_card(experiment, config, metrics, sorted(denoiser_states),
                                                versions, vae_state.get("versions")))
        manifest = {
            "format_version": FORMAT_VERSION,
            "experiment": experiment,
            "variants": sorted(denoiser_states),
            "latent_dim": int(latent_dim),
            "image_channels": int(vae_state["arch"]["image_channels"]),
            "image_size": int(vae_state["arch"].get("image_size", 64)),
            "versions": versions,
            **(extra or {}),
            "files": file_entries(tmp),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        old = out_dir.with_name(f".{out_dir.name}.old{os.getpid()}")
        if out_dir.exists():
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("bundle of %s written to %s (%d files)", experiment, out_dir, len(manifest["files"]))
    return out_dir
