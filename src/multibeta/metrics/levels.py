"""Reconstruction and disentanglement of a VAE's codes at one or several levels t.

Two entry points share one per-level core (:func:`level_metrics`):

- :func:`evaluate_cache_levels`: the multi-β VAE at the cached levels; codes are the
  cache's μ_t for every image, reconstructions decode the cached μ_t of validation images.
- :func:`evaluate_vae_at`: any VAE (a fixed-β baseline, or the multi-β VAE at that β) at
  one t, encoding the images itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from multibeta.core.schedules import sigma_rms
from multibeta.data.h5io import read_images, read_labels, read_metadata
from multibeta.metrics.config import MetricsConfig, select_levels
from multibeta.metrics.dci import compute_dci
from multibeta.metrics.disentanglement import compute_disentanglement
from multibeta.metrics.factorvae import compute_factorvae
from multibeta.metrics.mig import compute_mig
from multibeta.metrics.render_consistency import not_applicable, score_images
from multibeta.metrics.reconstruction import compute_reconstruction, wants_lpips
from multibeta.models.lpips import load_lpips
from multibeta.sampling.edit import encode_images
from multibeta.sampling.samplers import decode_latents
from multibeta.utils.bases import (
    DEFAULT_ICA, Basis, IcaFit, IcaSettings, best_ica_basis, distinct_optima, fit_basis, fit_ica_restarts,
)
from multibeta.utils.device import Runtime

logger = logging.getLogger(__name__)


@dataclass
class Labels:
    """Ground truth of the rows being evaluated (dataset row order)."""

    factor_classes: np.ndarray | None
    factor_names: list[str] | None
    attributes: np.ndarray | None
    attribute_names: list[str] | None
    #: Why the dSprites render rulers do not apply to the data (None: dSprites, they do).
    render_not_applicable: str | None = None

    @classmethod
    def from_dataset(cls, dataset_path: str | os.PathLike, rows: np.ndarray) -> "Labels":
        meta = read_metadata(dataset_path)
        labels = read_labels(dataset_path, rows)
        return cls(labels["factor_classes"], meta["factor_names"], labels["attributes"],
                   meta["attribute_names"], not_applicable(meta))


def maybe_lpips(cfg: MetricsConfig, channels: int, device: torch.device) -> torch.nn.Module | None:
    """The LPIPS model when ``metrics.reconstruction.lpips`` asks for it for these images."""
    if not wants_lpips(cfg.reconstruction.lpips, channels):
        return None
    return load_lpips(cfg.lpips_weights, device, timeout_s=cfg.download_timeout_s)


def level_metrics(
    codes: np.ndarray, labels: Labels, originals: np.ndarray, reconstructions: torch.Tensor,
    cfg: MetricsConfig, *, lpips_model: torch.nn.Module | None, runtime: Runtime,
    classifier: torch.nn.Module | None = None, recon_labels: np.ndarray | None = None,
    disentangle: bool = True,
) -> dict[str, Any]:
    """Disentanglement of ``codes`` [N, d] (unless ``disentangle`` is False) and reconstruction
    error of ``reconstructions`` [M, C, H, W].

    With the factor ``classifier`` (and ``recon_labels`` [M, F], the factors of the
    reconstructed originals), the reconstructions are also scored by the classifier's accuracy on
    them (``recon_accuracy``, ``recon_accuracy.<factor>``, ``recon_within_one.<factor>``); on
    dSprites by every ruler of :func:`multibeta.metrics.render_consistency.score_images` (IoU to
    the input, render consistency; keys prefixed ``recon_``). Elsewhere those rulers do not
    apply (``labels.render_not_applicable`` says why) and are left out.
    """
    out: dict[str, Any] = {}
    out.update(compute_reconstruction(
        originals, reconstructions, lpips_model=lpips_model,
        batch_size=cfg.reconstruction.batch_size, runtime=runtime,
    ))
    if classifier is not None and labels.render_not_applicable is None:
        ruler = score_images(classifier, reconstructions, device=runtime.device, labels=recon_labels,
                             originals=originals)
        out.update({f"recon_{key}": value for key, value in ruler.items()
                    if key not in ("n_images", "valid_iou")})
    elif classifier is not None and recon_labels is not None:
        out.update({f"recon_{key}": value for key, value in
                    classifier_accuracy(classifier, reconstructions, recon_labels, labels.factor_names,
                                        runtime.device).items()})
    if not disentangle or (labels.factor_classes is None and labels.attributes is None):
        return out
    for rotation in cfg.rotations:
        basis = level_basis(codes, rotation, cfg)
        scores = compute_disentanglement(
            basis.transform(codes), cfg, factor_classes=labels.factor_classes,
            factor_names=labels.factor_names, attributes=labels.attributes,
            attribute_names=labels.attribute_names,
        )
        prefix = basis_prefix(rotation)
        out.update({f"{prefix}{key}": value for key, value in scores.items()})
        if rotation == "ica":  # how the basis was fitted: did the chosen start converge
            out.update({f"ica_fit_{key}": value for key, value in basis.fit.items()})
            if not basis.fit["converged"]:
                logger.warning("ICA did not converge within metrics.ica.max_iter=%d iterations in any of "
                               "%d starts; the ica_ scores of this level come from an unconverged basis",
                               cfg.ica.max_iter, cfg.ica.restarts)
    return out


def classifier_accuracy(classifier: torch.nn.Module, images: torch.Tensor, labels: np.ndarray,
                        names: list[str] | None, device: torch.device) -> dict[str, float]:
    """The factor classifier's accuracy on ``images`` [M, C, H, W] against the factors ``labels``
    [M, F] of their originals: ``accuracy`` (mean), ``accuracy.<factor>``, ``within_one.<factor>``."""
    from multibeta.metrics.factor_classifier import factor_accuracy, predict_probabilities

    probs = predict_probabilities(classifier, images, device)
    predicted = np.stack([p.argmax(1).numpy() for p in probs], axis=1)
    names = names or [f"factor_{k}" for k in range(labels.shape[1])]
    return factor_accuracy(predicted, labels, names, None)


def rotate(codes: np.ndarray, rotation: str, seed: int = 0, ica: IcaSettings = DEFAULT_ICA) -> np.ndarray:
    """``codes`` [N, d] in the basis ``rotation`` (:mod:`multibeta.utils.bases`): ``identity``,
    ``pca`` (centred, projected onto the principal axes in order of decreasing variance; no
    rescaling) or ``ica`` (independent components, unit variance; the best of ``ica``'s
    restarts). No labels are used."""
    if rotation == "identity":
        return codes
    return fit_basis(codes, rotation, seed=seed, ica=ica).transform(codes)


#: FastICA starts of the codes scored last (digest of codes and settings -> fits), so that the
#: optima at the best level reuse the starts its ica_ scores came from instead of refitting.
_ICA_FITS: dict[str, list[IcaFit]] = {}
_ICA_FITS_KEPT = 32


def ica_fits(codes: np.ndarray, cfg: MetricsConfig) -> list[IcaFit]:
    """:func:`multibeta.utils.bases.fit_ica_restarts` of ``codes`` [N, d] with ``metrics.ica`` and
    ``metrics.seed``, in as many processes as torch has threads; remembered per codes."""
    array = np.ascontiguousarray(codes)
    key = hashlib.sha256(array.tobytes() + repr((array.shape, array.dtype.str, cfg.seed, cfg.ica)).encode()).hexdigest()
    if key not in _ICA_FITS:
        if len(_ICA_FITS) >= _ICA_FITS_KEPT:
            _ICA_FITS.pop(next(iter(_ICA_FITS)))
        _ICA_FITS[key] = fit_ica_restarts(array, seed=cfg.seed, settings=cfg.ica, n_jobs=torch.get_num_threads())
    return _ICA_FITS[key]


def level_basis(codes: np.ndarray, rotation: str, cfg: MetricsConfig) -> Basis:
    """The basis ``rotation`` of ``codes`` [N, d] as the level metrics score it: ``ica`` from the
    remembered starts of :func:`ica_fits` (so a level's basis is fitted once), the others by
    :func:`multibeta.utils.bases.fit_basis`."""
    if rotation == "ica":
        return best_ica_basis(ica_fits(codes, cfg))
    return fit_basis(codes, rotation, seed=cfg.seed)


#: Scores listed per ICA optimum in :func:`ica_optima_scores` (the report's headline pair).
SPREAD_SCORES = ("factorvae_score", "mig")


def ica_optima_scores(codes: np.ndarray, labels: Labels, cfg: MetricsConfig) -> dict[str, Any]:
    """The distinct optima that ``metrics.ica.restarts`` FastICA starts reach on ``codes`` [N, d],
    best objective first, each with the number of starts that reached it and its scores
    (:data:`SPREAD_SCORES`), and the range of each score over them: how much the ica_ scores
    would move if another optimum were chosen."""
    fits = ica_fits(codes, cfg)
    optima = []
    for fit, count in distinct_optima(fits):
        sources = fit.basis.transform(codes)
        optima.append({
            "objective": fit.objective, "starts": count, "seed": fit.seed,
            "factorvae_score": compute_factorvae(sources, labels.factor_classes, cfg.factorvae,
                                                 seed=cfg.seed)["factorvae_score"],
            "mig": compute_mig(sources, labels.factor_classes, cfg.mig, seed=cfg.seed)["mig"],
        })
    spread = {key: [min(o[key] for o in optima), max(o[key] for o in optima)]
              for key in SPREAD_SCORES if optima}
    return {"restarts": len(fits), "converged": sum(f.converged for f in fits), "optima": optima,
            "range": spread}


def evaluate_cache_levels(
    cache: Any, vae: torch.nn.Module, dataset_path: str | os.PathLike, cfg: MetricsConfig, runtime: Runtime,
    *, classifier: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Reconstruction metrics of the multi-β VAE at every cached level, disentanglement at the
    levels ``metrics.levels`` selects (``classifier``: see :func:`level_metrics`).

    Returns:
        ``{"levels": [{"t", "beta", "sigma", <metrics>}, ...]}`` in ascending t.
    """
    dataset_rows = np.asarray(cache.index)
    labels = Labels.from_dataset(dataset_path, dataset_rows)
    validation = cache.rows("validation")
    # a seeded random subset: the cache keeps the dataset's (factor-grid) order
    rng = np.random.default_rng(cfg.seed)
    recon_cache_rows = np.sort(rng.permutation(validation)[: cfg.reconstruction.n_images])
    originals = read_images(dataset_path, dataset_rows[recon_cache_rows])
    lpips_model = maybe_lpips(cfg, originals.shape[1], runtime.device)
    recon_labels = None if labels.factor_classes is None else labels.factor_classes[recon_cache_rows]
    levels = []
    selected = set(select_levels(np.asarray(cache.t), cfg.levels).tolist())
    for k in range(len(cache.t)):
        t = float(cache.t[k])
        codes = cache.level(int(k))
        recon = decode_latents(vae.decode_image, torch.as_tensor(codes[recon_cache_rows]), t=t,
                               batch_size=cfg.reconstruction.batch_size, device=runtime, progress=False)
        entry = {"t": t, "beta": float(cache.beta[k]), "sigma": float(sigma_rms(cache.sigma[k]))}
        entry.update(level_metrics(codes, labels, originals, recon, cfg, lpips_model=lpips_model,
                                   runtime=runtime, classifier=classifier, recon_labels=recon_labels,
                                   disentangle=k in selected))
        logger.info("level t=%.3f (beta %.3g): %s", t, entry["beta"], entry)
        levels.append(entry)
    out: dict[str, Any] = {"levels": levels}
    if labels.factor_classes is not None and cfg.dci.best_level_estimator is not None:
        out["best_level_dci"] = best_level_dci(cache, levels, labels, cfg)
    if labels.factor_classes is not None and "ica" in cfg.rotations and selected:
        best = max(range(len(levels)), key=lambda i: levels[i].get("ica_factorvae_score", float("-inf")))
        k = int(np.argmin(np.abs(np.asarray(cache.t) - levels[best]["t"])))
        out["ica_optima"] = {"t": levels[best]["t"], "beta": levels[best]["beta"],
                             **ica_optima_scores(cache.level(k), labels, cfg)}
        logger.info("ICA optima at the best level t=%.3f: %s", levels[best]["t"], out["ica_optima"])
    return out


def basis_prefix(basis: str) -> str:
    """Key prefix of the disentanglement scores in ``basis`` (``""`` for the latent axes)."""
    return "" if basis == "identity" else f"{basis}_"


def best_level_dci(cache: Any, levels: list[dict[str, Any]], labels: Labels, cfg: MetricsConfig) -> dict[str, Any]:
    """DCI with ``metrics.dci.best_level_estimator`` (the published estimator, gbt) at the level
    where the primary basis' FactorVAE score is highest, in the primary basis and on the axes."""
    key = f"{basis_prefix(cfg.primary_basis)}factorvae_score"
    best = max(range(len(levels)), key=lambda i: levels[i].get(key, float("-inf")))  # first on ties
    t = levels[best]["t"]
    k = int(np.argmin(np.abs(np.asarray(cache.t) - t)))
    codes = cache.level(k)
    dci_cfg = dataclasses.replace(cfg.dci, estimator=cfg.dci.best_level_estimator)
    out: dict[str, Any] = {"t": float(t), "beta": levels[best]["beta"], "selected_by": key,
                           "estimator": cfg.dci.best_level_estimator}
    for basis in dict.fromkeys((cfg.primary_basis, "identity")):
        result = compute_dci(level_basis(codes, basis, cfg).transform(codes), labels.factor_classes, dci_cfg,
                             seed=cfg.seed, factor_names=labels.factor_names)
        out[basis] = result
        logger.info("best level t=%.3f, %s basis, DCI (%s): %s", t, basis, dci_cfg.estimator, result)
    return out


def evaluate_vae_at(
    vae: torch.nn.Module, t: float, dataset_path: str | os.PathLike, cfg: MetricsConfig, runtime: Runtime,
    *, n_codes: int, seed: int, classifier: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Metrics of ``vae`` at level ``t``: codes of a seeded subset of ``n_codes`` images (dataset
    order); ``classifier``: see :func:`level_metrics`."""
    meta = read_metadata(dataset_path)
    rng = np.random.default_rng(seed)
    n = meta["n"]
    rows = np.sort(rng.choice(n, size=min(n_codes, n), replace=False))
    labels = Labels.from_dataset(dataset_path, rows)
    images = read_images(dataset_path, rows)
    codes = encode_images(vae.encode, torch.as_tensor(images).float() / 255.0, t,
                          batch_size=cfg.reconstruction.batch_size, device=runtime).numpy()
    m = min(cfg.reconstruction.n_images, len(rows))
    recon = decode_latents(vae.decode_image, torch.as_tensor(codes[:m]), t=t,
                           batch_size=cfg.reconstruction.batch_size, device=runtime, progress=False)
    lpips_model = maybe_lpips(cfg, images.shape[1], runtime.device)
    recon_labels = None if labels.factor_classes is None else labels.factor_classes[:m]
    return level_metrics(codes, labels, images[:m], recon, cfg, lpips_model=lpips_model, runtime=runtime,
                         classifier=classifier, recon_labels=recon_labels)
