"""Cross-key rules of a whole experiment config, checked before the DAG is built.

The JSON schemas check each key on its own (type, range, allowed values). The rules here tie
keys together (β_min < β_max, a run's solver and η, metric levels on the cache grid, ...), so a
bad combination stops ``snakemake`` before any job instead of failing minutes later inside one.
Each message names the key path, the value, what is allowed and how to fix it. Checks that
need files (CelebA images, pretrained weights) stay in their jobs.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from multibeta.core.config import from_section
from multibeta.core.image_size import check_levels, patch_gan_fits
from multibeta.sampling.config import SamplingConfig
from multibeta.workflow.config import ConfigError

#: Images of the full procedural dSprites grid.
DSPRITES_IMAGES = 737_280
#: Images of the published benchmark files (multibeta.data.shapes3d / mpi3d NUM_IMAGES).
PUBLISHED_IMAGES = {"shapes3d": 480_000, "mpi3d": 1_036_800}


def _fail(key: str, value: Any, allowed: str, fix: str) -> None:
    raise ConfigError(f"invalid config at '{key}': {value!r} — {allowed}. {fix}")


def _vae(cfg: dict[str, Any]) -> None:
    vae = cfg["vae"]
    lo, hi = vae["beta_min"], vae["beta_max"]
    if not lo < hi:
        _fail("vae.beta_max", hi, f"must be larger than vae.beta_min ({lo})",
              "Raise vae.beta_max or lower vae.beta_min.")
    for key, beta in [("vae.fixed_beta", vae["fixed_beta"])] + [
            (f"vae.baseline_betas[{i}]", b) for i, b in enumerate(vae["baseline_betas"])]:
        if beta is not None and not lo <= beta <= hi:
            _fail(key, beta, f"must lie in [vae.beta_min, vae.beta_max] = [{lo}, {hi}]",
                  "Pick a β inside the range, or widen the range.")
    if vae["sigma_schedule"] == "learned" and not vae["sigma_min"] < vae["sigma_max"]:
        _fail("vae.sigma_max", vae["sigma_max"], f"must be larger than vae.sigma_min ({vae['sigma_min']})",
              "Raise vae.sigma_max (below 1) or lower vae.sigma_min.")
    size = cfg["data"]["image_size"]
    channels = vae["arch"]["channels"]
    if channels is not None:
        try:
            check_levels(tuple(channels), size)
        except ValueError as exc:
            raise ConfigError(f"invalid config at 'vae.arch.channels': {channels!r} — {exc}") from None
    gan = vae["gan"]
    if vae["reconstruction"] == "l1_lpips" and gan["weight"] > 0 and not patch_gan_fits(size, gan["disc_layers"]):
        _fail("vae.gan.disc_layers", gan["disc_layers"],
              f"{size}x{size} images (data.image_size) leave no patches after {gan['disc_layers']} strided layers "
              "(data.image_size / 2^disc_layers must be at least 4)", "Use fewer discriminator layers.")


def _training_images(cfg: dict[str, Any]) -> int | None:
    """Training images of the dataset when the config alone tells (dSprites), else None."""
    data = cfg["data"]
    if data["name"] != "dsprites":
        return None
    n = DSPRITES_IMAGES if data["size"] is None else min(data["size"], DSPRITES_IMAGES)
    return n - int(round(data["val_fraction"] * n)) - int(round(data["test_fraction"] * n))


def _data(cfg: dict[str, Any]) -> None:
    data = cfg["data"]
    if data["name"] == "dsprites" and data["size"] is not None and data["size"] > DSPRITES_IMAGES:
        _fail("data.size", data["size"], f"dSprites has {DSPRITES_IMAGES:,} images",
              "Use a smaller size, or null for all of them.")
    for name, total in PUBLISHED_IMAGES.items():
        if data["name"] == name and data["size"] is not None and data["size"] > total:
            _fail("data.size", data["size"], f"the published {name} file has {total:,} images",
                  "Use a smaller size, or null for all of them.")
    if data["name"] == "dsprites" and data["image_size"] != 64:
        _fail("data.image_size", data["image_size"], "dSprites exists only at 64x64",
              "Set data.image_size to 64 (or leave it out) for dSprites.")
    if data["val_fraction"] + data["test_fraction"] >= 1.0:
        _fail("data.test_fraction", data["test_fraction"],
              f"data.val_fraction + data.test_fraction must stay below 1 (val is {data['val_fraction']})",
              "Lower one of them.")
    n_train = _training_images(cfg)
    if n_train is not None and cfg["vae"]["batch_size"] > n_train:
        _fail("vae.batch_size", cfg["vae"]["batch_size"],
              f"larger than the {n_train} training images of this data section",
              "Lower vae.batch_size or raise data.size.")


def _sampling(cfg: dict[str, Any]) -> None:
    # the typed section's own checks (unique run names)
    from_section(SamplingConfig, cfg["sampling"], "sampling")


def _levels(cfg: dict[str, Any]) -> None:
    from multibeta.core.levels import level_grid
    from multibeta.metrics.config import select_levels

    try:
        grid = level_grid(cfg["cache"]["levels"], cfg["cache"]["spacing"])
    except ValueError as exc:
        _fail("cache.levels", cfg["cache"]["levels"], str(exc),
              "Give a count of levels, or a list that starts at 0, ends at 1 and ascends.")
    levels = cfg["metrics"]["levels"]
    try:
        select_levels(grid, None if levels is None else tuple(levels))
    except ValueError:
        _fail("metrics.levels", levels, f"every time must be a level of the cache: {np.round(grid, 6).tolist()}",
              "Use cached times, or null for every level.")


def _metrics(cfg: dict[str, Any]) -> None:
    metrics = cfg["metrics"]
    if metrics["primary_basis"] not in metrics["rotations"]:
        _fail("metrics.primary_basis", metrics["primary_basis"],
              f"must be one of metrics.rotations {metrics['rotations']}",
              "Add it to metrics.rotations or choose one of them.")
    data = cfg["data"]
    no_factors = data["name"] == "celeba" or (data["name"] == "folder" and not data["folder"]["labels"])
    if no_factors and "factor_classifier" in metrics["generation"]["feature_spaces"]:
        what = "CelebA" if data["name"] == "celeba" else "an image folder without a labels CSV (data.folder.labels)"
        _fail("metrics.generation.feature_spaces", metrics["generation"]["feature_spaces"],
              f"factor_classifier needs data with ground-truth factors (dSprites, Shapes3D, MPI3D, or an "
              f"image folder whose CSV has factor columns), not {what}",
              f"Use [inception] for {what}.")


CHECKS: tuple[Callable[[dict[str, Any]], None], ...] = (_vae, _data, _sampling, _levels, _metrics)


def check_experiment(cfg: dict[str, Any]) -> None:
    """Apply every cross-key rule to a validated, defaulted experiment config.

    Raises:
        ConfigError: the first rule broken, naming the key, the value, what is allowed and the fix.
    """
    for check in CHECKS:
        check(cfg)
