"""Generation quality: FID and KID of samples against the prepared training images.

- FID: Heusel, Ramsauer, Unterthiner, Nessler & Hochreiter, "GANs Trained by a Two
  Time-Scale Update Rule Converge to a Local Nash Equilibrium", NeurIPS 2017: the Fréchet
  distance between Gaussians fitted to the two feature sets.
- KID: Bińkowski, Sutherland, Arbel & Gretton, "Demystifying MMD GANs", ICLR 2018: the
  unbiased MMD^2 with the cubic polynomial kernel, averaged over ``kid_subsets`` random
  subsets of ``kid_subset_size``.

Both are computed by torch-fidelity (Obukhov et al.), in one of two feature spaces
(:class:`FeatureSpace`):

- ``inception``: torch-fidelity's ``inception-v3-compat`` (TF 2015-12-05 Inception-v3,
  2048-d pool features, images resized to 299 inside; 1-channel images repeated to 3).
  Weights from ``metrics.inception_weights`` or torch.hub's cache
  (:func:`multibeta.models.pretrained.resolve_weights`); missing offline -> one error naming
  the key and rule ``fetch_weights``.
- ``factor_classifier``: the penultimate layer of the pipeline's factor classifier
  (:mod:`multibeta.metrics.factor_classifier`), registered as a torch-fidelity extractor;
  no download; its held-out accuracy is reported with the distances.

The reference features (training images) are computed once per dataset and feature
space and stored in one file at a path the caller gives (:func:`build_reference_features`),
with the extractor, layer, weights SHA-256 and a caller-given reference id; loading checks
them (torch-fidelity's own cache is keyed by a name only, ignores the weights and lives in
a shared folder, so it is not used). With a cached reference, features of the samples are
extracted by torch-fidelity's ``create_feature_extractor`` / ``get_featuresdict_from_dataset``
and the metrics come from the same torch-fidelity functions that ``calculate_metrics``
calls (``fid_features_to_statistics``, ``fid_statistics_to_metric``,
``kid_features_to_metric``); without one, ``calculate_metrics`` is called directly. A test
checks both paths agree.
"""

from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from multibeta.metrics.config import GenerationConfig, MetricsConfig
from multibeta.models.pretrained import resolve_weights
from multibeta.metrics.images import ImageSource, SubsetImages, TorchFidelityImages, as_image_source
from multibeta.metrics.utils import Timer
from multibeta.utils.device import Runtime
from multibeta.utils.checkpoint import load_weights_only, unpickler_reason
from multibeta.utils.io import atomic_path, file_sha256

logger = logging.getLogger(__name__)

#: torch-fidelity's name and FID/KID layer of the Inception extractor (pool3, 2048-d).
INCEPTION_EXTRACTOR = "inception-v3-compat"
INCEPTION_LAYER = "2048"
#: Format version of the reference-features file.
REFERENCE_FORMAT = 1


class ReferenceMismatchError(RuntimeError):
    """A cached reference-features file was made with another extractor, weights or reference set."""


@dataclass(frozen=True)
class FeatureSpace:
    """A torch-fidelity feature extractor with its local weights.

    Attributes:
        label: ``inception`` or ``factor_classifier`` (config name).
        extractor: torch-fidelity registry name.
        weights_path: local weights / checkpoint file (torch-fidelity's
            ``feature_extractor_weights_path``).
        weights_sha256: SHA-256 of that file.
        layer: feature used for both FID and KID.
        channels: channels the extractor takes (1-channel images are repeated); None = as stored.
        extra: values reported with the metrics (e.g. the classifier's held-out accuracy).
    """

    label: str
    extractor: str
    weights_path: Path
    weights_sha256: str
    layer: str
    channels: int | None
    extra: dict[str, float] = field(default_factory=dict)


def inception_feature_space(
    weights_path: str | os.PathLike | None, *, timeout_s: float = 60.0, allow_download: bool = True,
) -> FeatureSpace:
    """torch-fidelity's Inception-v3 with weights from ``metrics.inception_weights``.

    Raises:
        multibeta.models.pretrained.WeightsError: no local file and no download possible; names
            ``metrics.inception_weights`` and rule ``fetch_weights``.
    """
    path = resolve_weights("inception", weights_path, timeout_s=timeout_s, allow_download=allow_download)
    return FeatureSpace(
        label="inception", extractor=INCEPTION_EXTRACTOR, weights_path=path, weights_sha256=file_sha256(path),
        layer=INCEPTION_LAYER, channels=3,
    )


def factor_classifier_feature_space(checkpoint_path: str | os.PathLike) -> FeatureSpace:
    """The factor classifier's penultimate layer (registers the extractor once per process)."""
    from multibeta.metrics.factor_classifier import (
        CHECKPOINT_KIND,
        FEATURE_LAYER,
        register_factor_classifier_extractor,
    )
    from multibeta.utils.checkpoint import load_checkpoint

    path = Path(checkpoint_path)
    state = load_checkpoint(path, kind=CHECKPOINT_KIND)
    accuracy = state.get("heldout_accuracy", {})
    extra = {f"classifier_{k}": float(v) for k, v in accuracy.items() if k.startswith("accuracy")}
    return FeatureSpace(
        label="factor_classifier", extractor=register_factor_classifier_extractor(), weights_path=path,
        weights_sha256=file_sha256(path), layer=FEATURE_LAYER, channels=None, extra=extra,
    )


def feature_space(
    name: str, cfg: MetricsConfig, *, factor_classifier_path: str | os.PathLike | None = None,
) -> FeatureSpace:
    """The feature space ``name`` (an entry of ``metrics.generation.feature_spaces``)."""
    if name == "inception":
        return inception_feature_space(cfg.inception_weights, timeout_s=cfg.download_timeout_s)
    if name == "factor_classifier":
        if factor_classifier_path is None:
            raise ValueError("the factor_classifier feature space needs the classifier checkpoint path")
        return factor_classifier_feature_space(factor_classifier_path)
    raise ValueError(f"unknown feature space {name!r}; use inception or factor_classifier")


def _fidelity_kwargs(space: FeatureSpace, runtime: Runtime, batch_size: int) -> dict[str, Any]:
    return {
        "feature_extractor": space.extractor,
        "feature_layer_fid": space.layer,
        "feature_layer_kid": space.layer,
        "feature_extractor_weights_path": str(space.weights_path),
        "cuda": runtime.is_cuda,
        "batch_size": batch_size,
        "save_cpu_ram": True,
        "verbose": False,
    }


def _first(images: ImageSource, n: int | None) -> ImageSource:
    return images if n is None or len(images) <= n else SubsetImages(images, np.arange(n))


@torch.no_grad()
def extract_features(
    images: ImageSource | np.ndarray | torch.Tensor, space: FeatureSpace, runtime: Runtime, *, batch_size: int = 64,
) -> torch.Tensor:
    """Features [N, F] (CPU) of images [N, C, H, W] (uint8 or [0, 1] floats) in ``space``."""
    from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

    kwargs = _fidelity_kwargs(space, runtime, batch_size)
    extractor = create_feature_extractor(space.extractor, [space.layer], **kwargs)
    dataset = TorchFidelityImages(as_image_source(images), space.channels)
    feats = get_featuresdict_from_dataset(dataset, extractor, batch_size, runtime.is_cuda, True, False)
    return feats[space.layer]


def _meta(space: FeatureSpace, n: int, reference_id: str | None) -> dict[str, Any]:
    import torch_fidelity

    return {
        "format": REFERENCE_FORMAT,
        "feature_space": space.label,
        "extractor": space.extractor,
        "layer": space.layer,
        "weights_sha256": space.weights_sha256,
        "n": int(n),
        "reference_id": reference_id,
        "torch_fidelity": torch_fidelity.__version__,
    }


def build_reference_features(
    reference: ImageSource | np.ndarray | torch.Tensor,
    space: FeatureSpace,
    runtime: Runtime,
    out_path: str | os.PathLike,
    *,
    batch_size: int = 64,
    reference_id: str | None = None,
) -> torch.Tensor:
    """Extract the reference images' features and store them (atomically) at ``out_path``.

    Args:
        reference: the reference images (see :func:`reference_images` for a dataset file).
        space: the feature space.
        runtime: device.
        out_path: the cache file (``torch.save`` of ``{"features", "meta"}``).
        batch_size: images per batch.
        reference_id: identifies the reference set (dataset, split, count, seed); checked on load.

    Returns:
        features [N, F].
    """
    features = extract_features(reference, space, runtime, batch_size=batch_size)
    with atomic_path(out_path) as tmp:
        torch.save({"features": features, "meta": _meta(space, len(features), reference_id)}, tmp)
    logger.info("reference features (%s, %d x %d) -> %s", space.label, *features.shape, out_path)
    return features


def load_reference_features(
    path: str | os.PathLike, space: FeatureSpace, *, reference_id: str | None = None,
) -> torch.Tensor:
    """Load cached reference features, checking they match ``space`` (and ``reference_id`` when given).

    Raises:
        FileNotFoundError: no such file.
        ReferenceMismatchError: made with another extractor, layer, weights or reference set.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference features file not found: {path}")
    try:
        blob = load_weights_only(path)  # tensors and plain data only: nothing is run
        if not isinstance(blob, dict) or not isinstance(blob.get("features"), torch.Tensor):
            raise ValueError("no 'features' tensor")
    except Exception as exc:  # refused by the weights-only unpickler, truncated, or foreign
        reason = unpickler_reason(exc) if isinstance(exc, pickle.UnpicklingError) else f"{type(exc).__name__}: {exc}"
        raise ReferenceMismatchError(
            f"{path} is not a reference-features file of this multibeta ({reason}); delete it and "
            "rerun the rule reference_features."
        ) from exc
    meta = blob.get("meta", {})
    want = _meta(space, len(blob["features"]), reference_id if reference_id is not None else meta.get("reference_id"))
    diffs = [f"{k}: file has {meta.get(k)!r}, expected {v!r}" for k, v in want.items()
             if k != "torch_fidelity" and meta.get(k) != v]
    if diffs:
        raise ReferenceMismatchError(
            f"{path} does not match the requested reference features:\n  - " + "\n  - ".join(diffs)
            + "\nDelete it (or rerun its rule) to recompute."
        )
    return blob["features"]


def fid_kid_from_features(
    sample_features: torch.Tensor,
    reference_features: torch.Tensor,
    *,
    kid_subset_size: int,
    kid_subsets: int,
    seed: int,
) -> dict[str, float]:
    """FID and KID between two feature sets [N1, F], [N2, F] with torch-fidelity's functions.

    ``kid_subset_size`` is clipped to the smaller set (recorded as ``kid_subset_size``).
    """
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    subset = _kid_subset(kid_subset_size, len(sample_features), len(reference_features))
    fid = fid_statistics_to_metric(
        fid_features_to_statistics(sample_features.cpu()), fid_features_to_statistics(reference_features.cpu()), False,
    )
    kid = kid_features_to_metric(
        sample_features.cpu(), reference_features.cpu(), kid_subsets=kid_subsets, kid_subset_size=subset,
        rng_seed=seed, verbose=False,
    )
    return {"fid": fid[KEY_METRIC_FID], "kid_mean": kid[KEY_METRIC_KID_MEAN], "kid_std": kid[KEY_METRIC_KID_STD],
            "kid_subset_size": subset}


def _kid_subset(requested: int, n1: int, n2: int) -> int:
    subset = min(requested, n1, n2)
    if subset < requested:
        logger.warning("KID subset size %d clipped to %d (samples: %d, reference: %d)", requested, subset, n1, n2)
    if subset < 2:
        raise ValueError(f"KID needs at least 2 images in each set (samples: {n1}, reference: {n2})")
    return subset


def compute_fidelity(
    samples: ImageSource | np.ndarray | torch.Tensor,
    reference: ImageSource | np.ndarray | torch.Tensor | None,
    space: FeatureSpace,
    runtime: Runtime,
    cfg: GenerationConfig,
    *,
    seed: int,
    reference_cache: str | os.PathLike | None = None,
    reference_id: str | None = None,
) -> dict[str, float]:
    """FID and KID of ``samples`` against ``reference`` in ``space``.

    Args:
        samples: generated images [N, C, H, W] (uint8, or floats in [0, 1]); the first
            ``cfg.max_samples`` are used.
        reference: reference images, or their features [N, F] (a float tensor of ndim 2,
            e.g. from :func:`load_reference_features`); may be None when ``reference_cache``
            exists.
        space: feature space (:func:`feature_space`).
        runtime: device; torch-fidelity gets ``cuda=runtime.is_cuda`` and ``save_cpu_ram=True``.
        cfg: ``metrics.generation`` options (batch size, KID subsets).
        seed: torch-fidelity ``rng_seed`` (KID subsets).
        reference_cache: file holding the reference features: loaded when it exists (and
            matches), else computed from ``reference`` images and written there. None and
            reference images: one ``torch_fidelity.calculate_metrics`` call, nothing cached.
        reference_id: identifies the reference set; stored in / checked against the cache.

    Returns:
        ``fid``, ``kid_mean``, ``kid_std``, ``kid_subset_size``, ``n_samples``,
        ``n_reference``, the space's extras (``classifier_accuracy``...),
        ``seed``, ``elapsed_s``.
    """
    timer = Timer()
    sample_source = _first(as_image_source(samples), cfg.max_samples)
    is_features = isinstance(reference, torch.Tensor) and reference.ndim == 2
    if reference is None and (reference_cache is None or not Path(reference_cache).is_file()):
        raise ValueError(f"no reference images given and no reference features file at {reference_cache}")
    if reference_cache is None and not is_features:
        out = _calculate_metrics(sample_source, as_image_source(reference), space, runtime, cfg, seed)
    else:
        if is_features:
            ref_feats = reference
        elif Path(reference_cache).is_file():
            ref_feats = load_reference_features(reference_cache, space, reference_id=reference_id)
        else:
            ref_feats = build_reference_features(reference, space, runtime, reference_cache,
                                                 batch_size=cfg.batch_size, reference_id=reference_id)
        feats = extract_features(sample_source, space, runtime, batch_size=cfg.batch_size)
        out = fid_kid_from_features(feats, ref_feats, kid_subset_size=cfg.kid_subset_size,
                                    kid_subsets=cfg.kid_subsets, seed=seed)
        out.update({"n_samples": len(feats), "n_reference": len(ref_feats)})
    out.update(space.extra)
    logger.info("%s: FID %.4f, KID %.5f +- %.5f (%d samples vs %d reference)", space.label, out["fid"],
                out["kid_mean"], out["kid_std"], out["n_samples"], out["n_reference"])
    return timer.finish(out, seed)


def _calculate_metrics(
    samples: ImageSource, reference: ImageSource, space: FeatureSpace, runtime: Runtime, cfg: GenerationConfig,
    seed: int,
) -> dict[str, float]:
    """One torch-fidelity ``calculate_metrics`` call (no caching)."""
    import torch_fidelity
    from torch_fidelity.metric_fid import KEY_METRIC_FID
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD

    subset = _kid_subset(cfg.kid_subset_size, len(samples), len(reference))
    res = torch_fidelity.calculate_metrics(
        input1=TorchFidelityImages(samples, space.channels),
        input2=TorchFidelityImages(reference, space.channels),
        fid=True, kid=True, kid_subset_size=subset, kid_subsets=cfg.kid_subsets, rng_seed=seed, cache=False,
        **_fidelity_kwargs(space, runtime, cfg.batch_size),
    )
    return {"fid": res[KEY_METRIC_FID], "kid_mean": res[KEY_METRIC_KID_MEAN], "kid_std": res[KEY_METRIC_KID_STD],
            "kid_subset_size": subset, "n_samples": len(samples), "n_reference": len(reference)}


def reference_images(
    dataset_path: str | os.PathLike, n: int, *, seed: int, split: str = "train",
) -> tuple[ImageSource, str]:
    """A seeded random subset of ``n`` images of one split of a dataset file, and its reference id.

    Returns:
        (an ``ImageDataset`` over the chosen rows, ``"<dataset folder>/<file>:<split>:<n>:<seed>"``).
    """
    from multibeta.data.h5io import SPLIT_CODES, ImageDataset

    lazy = ImageDataset(dataset_path, max_memory_bytes=0)
    codes = lazy.split_codes()
    lazy.close()
    rows = np.flatnonzero(codes == SPLIT_CODES[split])
    if len(rows) == 0:
        raise ValueError(f"{dataset_path} has no '{split}' images")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(rows, size=min(n, len(rows)), replace=False))
    path = Path(dataset_path)
    reference_id = f"{path.resolve().parent.name}/{path.name}:{split}:{len(chosen)}:{seed}"
    return ImageDataset(path, indices=chosen), reference_id
