"""Render consistency and coverage: rulers that only a procedural dataset allows (dSprites).

A generated or reconstructed dSprites image is *valid* when it is (nearly) an image the
renderer can draw. To measure that, the factor classifier predicts the image's factors,
the project's own renderer (:func:`multibeta.data.dsprites.shape_masks`) re-draws them, and
the binarised image is compared with that rendering by intersection over union (IoU).

The classifier's argmax can miss by one class on factors whose neighbouring classes differ by
a pixel (orientation, scale, position), which would make a perfect image look invalid. So the
rendering is the best of a small neighbourhood of the prediction: every shape, the two most
likely scales, the three most likely orientations (the orientation probabilities folded by each
shape's rotational symmetry first) and the predicted position ±1 pixel. A true dSprites image
therefore scores IoU 1 whenever its factors lie in that neighbourhood; an image of no dSprite
(a disc drawn for a square of the same size scores about 0.83) cannot score high.

- :func:`iou`: IoU of two binary image sets, per image.
- :func:`render_fit`: the best rendering of each image in its neighbourhood (IoU, factors).
- :func:`render_consistency`: mean IoU and fraction of valid images (IoU ≥ ``valid_iou``).
- :func:`coverage`: total variation distance between the predicted factor distribution of an
  image set and a reference distribution, per factor, with the sampling-noise floor of a
  real sample of the same size (an empty or single-mode sampler scores high).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from multibeta.data.dsprites import (
    FACTOR_NAMES, FACTOR_SIZES, IMAGE_SIZE, MASK_SIZE, orientation_period, shape_masks,
)

#: IoU at or above which an image counts as a valid dSprite. A disc drawn where a square of the
#: same size belongs scores about 0.83, so a lower threshold would not tell shapes apart.
VALID_IOU = 0.9
#: Pixel threshold of the binarisation (images in [0, 1]).
BINARY_THRESHOLD = 0.5
#: Neighbourhood of the classifier's prediction that :func:`render_fit` searches.
TOP_SCALES = 2
TOP_ORIENTATIONS = 3
POSITION_RADIUS = 1
#: Images per vectorised search step (bounds the grouped-convolution weights).
FIT_CHUNK = 256
#: Factors whose distribution :func:`coverage` compares (orientation folded by symmetry).
COVERAGE_FACTORS = ("shape", "scale", "orientation", "posX", "posY")
#: Bins of the folded orientation (fraction of each shape's symmetry period).
ORIENTATION_BINS = 10


def not_applicable(metadata: dict) -> str | None:
    """None when these rulers apply to a dataset, else the reason they do not (for logs and JSON).

    They apply to dSprites only: single-channel 64x64 images with its five factors, which the
    renderer can redraw. ``metadata`` is :func:`multibeta.data.h5io.read_metadata` of the file.
    """
    names, sizes = metadata.get("factor_names"), metadata.get("factor_sizes")
    is_dsprites = (names is not None and tuple(names) == FACTOR_NAMES and sizes is not None
                   and tuple(int(k) for k in sizes) == FACTOR_SIZES)
    if is_dsprites and metadata.get("channels") == 1 and metadata.get("image_size", IMAGE_SIZE) == IMAGE_SIZE:
        return None
    dataset = (metadata.get("attrs") or {}).get("dataset", "this dataset")
    return (f"render consistency does not apply to {dataset}: it redraws dSprites' factors with the "
            "dSprites renderer (single-channel 64x64 images of shape, scale, orientation, posX, posY)")


def classifier_not_applicable(classifier: torch.nn.Module) -> str | None:
    """None when ``classifier`` reads dSprites (its five factors, single-channel 64x64 images), so
    these rulers apply to what it scores; else the reason they do not (a Shapes3D, MPI3D or
    image-folder classifier). Classifiers without these attributes are taken for dSprites ones."""
    sizes = getattr(classifier, "factor_sizes", None)
    if sizes is None:
        return None
    names = getattr(classifier, "factor_names", None)
    if (tuple(sizes) == FACTOR_SIZES and (not names or tuple(names) == FACTOR_NAMES)
            and getattr(classifier, "in_channels", 1) == 1 and getattr(classifier, "image_size", IMAGE_SIZE) == IMAGE_SIZE):
        return None
    what = ", ".join(names) if names else f"{len(sizes)} factors"
    return (f"render consistency does not apply to this data ({what}): it redraws dSprites' factors with the "
            "dSprites renderer (single-channel 64x64 images of shape, scale, orientation, posX, posY)")


def binarise(images: np.ndarray | torch.Tensor, threshold: float = BINARY_THRESHOLD) -> torch.Tensor:
    """Binary images bool ``[N, 64, 64]`` from ``[N, 1, 64, 64]`` uint8 (0..255) or float in [0, 1]."""
    x = torch.as_tensor(images)
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"expected single-channel images [N, 1, H, W], got {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x[:, 0] > int(round(255 * threshold))
    return x[:, 0].float() > threshold


def iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU ``[N]`` of binary images ``a``, ``b`` bool ``[N, H, W]``; 1 where both are empty."""
    inter = (a & b).flatten(1).sum(1).double()
    union = (a | b).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def fold_orientation(orientation_probs: torch.Tensor, period: int) -> torch.Tensor:
    """Probabilities ``[N, 40]`` summed over orientations a ``period``-fold symmetry makes equal:
    ``[N, period]`` (class k collects k, k + period, ...)."""
    n, k = orientation_probs.shape
    return orientation_probs.reshape(n, k // period, period).sum(1)


def canonical_orientation(shape: np.ndarray, orientation: np.ndarray) -> np.ndarray:
    """Orientation classes modulo each shape's symmetry period (square 10, ellipse 20, heart 40)."""
    period = np.asarray([orientation_period(int(s)) for s in range(FACTOR_SIZES[0])])[np.asarray(shape)]
    return np.asarray(orientation) % period


@dataclass
class RenderFit:
    """Best renderings of a set of images.

    Attributes:
        iou: float64 ``[N]``, IoU of each binarised image with its best rendering.
        factor_classes: int64 ``[N, 5]``, the factors of that rendering (dSprites order).
    """

    iou: np.ndarray
    factor_classes: np.ndarray


def _candidates(probs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mask ids ``[N, M]`` (shape, scale, orientation) of the neighbourhood, plus the predicted
    top-left position ``(x [N], y [N])``."""
    p_shape, p_scale, p_orient, p_x, p_y = probs
    n = p_shape.shape[0]
    scales = p_scale.topk(min(TOP_SCALES, p_scale.shape[1]), dim=1).indices  # [N, S]
    ids = []
    for shape in range(FACTOR_SIZES[0]):
        period = orientation_period(shape)
        orients = fold_orientation(p_orient, period).topk(TOP_ORIENTATIONS, dim=1).indices  # [N, O]
        mask_id = (shape * FACTOR_SIZES[1] + scales[:, :, None]) * FACTOR_SIZES[2] + orients[:, None, :]
        ids.append(mask_id.reshape(n, -1))
    return torch.cat(ids, dim=1), p_x.argmax(1), p_y.argmax(1)


def render_fit(images: np.ndarray | torch.Tensor, probs: Sequence[torch.Tensor]) -> RenderFit:
    """The best rendering of every image among the neighbourhood of the classifier's prediction.

    Args:
        images: ``[N, 1, 64, 64]`` uint8 or float in [0, 1] (binarised at 0.5).
        probs: the classifier's class probabilities per factor, dSprites order
            ``[N, 3], [N, 6], [N, 40], [N, 32], [N, 32]``.

    Returns:
        :class:`RenderFit`.
    """
    binary = binarise(images)
    if binary.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"render consistency needs 64x64 dSprites images, got {tuple(binary.shape[1:])}")
    sizes = [int(p.shape[1]) for p in probs]
    if sizes != list(FACTOR_SIZES):
        raise ValueError(f"render consistency needs the dSprites factors {dict(zip(FACTOR_NAMES, FACTOR_SIZES))}; "
                         f"the classifier predicts classes {sizes}")
    masks = torch.from_numpy(np.array(shape_masks())).reshape(-1, MASK_SIZE, MASK_SIZE)
    mask_area = masks.flatten(1).sum(1).double()
    r = POSITION_RADIUS
    window = MASK_SIZE + 2 * r
    padded = F.pad(binary.float(), (r, r, r, r))
    out_iou, out_classes = [], []
    offsets = torch.arange(-r, r + 1)
    for lo in range(0, len(binary), FIT_CHUNK):
        sl = slice(lo, lo + FIT_CHUNK)
        ids, x0, y0 = _candidates([p[sl].float() for p in probs])
        n, m = ids.shape
        # window of each image around its predicted position (padded coordinates)
        rows = y0[:, None] + torch.arange(window)[None, :]
        cols = x0[:, None] + torch.arange(window)[None, :]
        win = padded[sl][torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
        weight = masks[ids.reshape(-1)].float()[:, None]  # [N*M, 1, 33, 33]
        inter = F.conv2d(win[None], weight, groups=n)[0].double().reshape(n, m, 2 * r + 1, 2 * r + 1)
        area = binary[sl].flatten(1).sum(1).double()
        union = area[:, None, None, None] + mask_area[ids][:, :, None, None] - inter
        score = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
        # positions outside the grid are not dSprites
        ys = y0[:, None] + offsets[None, :]
        xs = x0[:, None] + offsets[None, :]
        valid = ((ys >= 0) & (ys < FACTOR_SIZES[4]))[:, None, :, None] & \
            ((xs >= 0) & (xs < FACTOR_SIZES[3]))[:, None, None, :]
        score = score.masked_fill(~valid, -1.0)
        best = score.reshape(n, -1).argmax(1)
        best_iou = score.reshape(n, -1).gather(1, best[:, None])[:, 0]
        j, rest = best // (2 * r + 1) ** 2, best % (2 * r + 1) ** 2
        dy, dx = rest // (2 * r + 1), rest % (2 * r + 1)
        mask_id = ids.gather(1, j[:, None])[:, 0]
        shape, scale, orient = np.unravel_index(mask_id.numpy(), FACTOR_SIZES[:3])
        classes = np.stack([shape, scale, orient, (x0 + dx - r).numpy(), (y0 + dy - r).numpy()], axis=1)
        out_iou.append(best_iou.numpy())
        out_classes.append(classes.astype(np.int64))
    if not out_iou:
        return RenderFit(np.zeros(0), np.zeros((0, len(FACTOR_SIZES)), dtype=np.int64))
    return RenderFit(np.concatenate(out_iou), np.concatenate(out_classes))


def render_consistency(fit: RenderFit, *, valid_iou: float = VALID_IOU,
                       shapes: np.ndarray | None = None) -> dict[str, float]:
    """Summary of a :class:`RenderFit`: ``render_iou`` (mean), ``valid_fraction`` (IoU ≥
    ``valid_iou``) and, per shape of the best rendering (or of ``shapes`` [N] when given, e.g.
    the true shapes of reconstructed inputs), ``render_iou.<shape>`` and ``valid_fraction.<shape>``."""
    from multibeta.data.dsprites import SHAPE_NAMES

    out = {"render_iou": float(fit.iou.mean()) if len(fit.iou) else 0.0,
           "valid_fraction": float((fit.iou >= valid_iou).mean()) if len(fit.iou) else 0.0,
           "valid_iou": float(valid_iou), "n_images": float(len(fit.iou))}
    groups = fit.factor_classes[:, 0] if shapes is None else np.asarray(shapes)
    for k, name in enumerate(SHAPE_NAMES):
        sel = groups == k
        if sel.any():
            out[f"render_iou.{name}"] = float(fit.iou[sel].mean())
            out[f"valid_fraction.{name}"] = float((fit.iou[sel] >= valid_iou).mean())
    return out


def _histograms(factor_classes: np.ndarray) -> dict[str, np.ndarray]:
    """Normalised histograms of each coverage factor (orientation folded by the shape's symmetry
    into :data:`ORIENTATION_BINS` bins of its period)."""
    fc = np.asarray(factor_classes, dtype=np.int64)
    out = {}
    for k, name in enumerate(FACTOR_NAMES):
        if name == "orientation":
            period = np.asarray([orientation_period(s) for s in range(FACTOR_SIZES[0])])[fc[:, 0]]
            values = (fc[:, k] % period) * ORIENTATION_BINS // period
            bins = ORIENTATION_BINS
        else:
            values, bins = fc[:, k], FACTOR_SIZES[k]
        h = np.bincount(values, minlength=bins).astype(np.float64)
        out[name] = h / max(h.sum(), 1.0)
    return out


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """TV distance ½ Σ |p − q| of two distributions over the same bins."""
    return 0.5 * float(np.abs(np.asarray(p) - np.asarray(q)).sum())


def coverage(factor_classes: np.ndarray, reference_classes: np.ndarray, *, seed: int = 0,
             floor_draws: int = 20) -> dict[str, float]:
    """How well an image set covers the data's factor distribution.

    Args:
        factor_classes: int ``[N, 5]`` factors of the image set (e.g. :attr:`RenderFit.factor_classes`
            of generated samples). An empty set scores TV 1 on every factor.
        reference_classes: int ``[M, 5]`` factors of the data (the training images' labels).
        seed: seed of the noise-floor draws.
        floor_draws: real samples of size N drawn from the reference to estimate the floor.

    Returns:
        ``tv.<factor>``: TV distance per factor; ``tv_floor.<factor>``: mean TV of N images drawn
        from the reference itself (what sampling noise alone gives); ``tv_max``: the largest
        ``tv.<factor>`` over shape, scale, posX and posY.
    """
    ref = _histograms(reference_classes)
    n = len(factor_classes)
    out: dict[str, float] = {"n_images": float(n)}
    got = _histograms(factor_classes) if n else None
    for name in COVERAGE_FACTORS:
        out[f"tv.{name}"] = 1.0 if got is None else total_variation(got[name], ref[name])
    rng = np.random.default_rng(seed)
    ref_classes = np.asarray(reference_classes)
    for name in COVERAGE_FACTORS:
        if n == 0:
            out[f"tv_floor.{name}"] = 0.0
            continue
        draws = [_histograms(ref_classes[rng.integers(len(ref_classes), size=n)])[name] for _ in range(floor_draws)]
        out[f"tv_floor.{name}"] = float(np.mean([total_variation(d, ref[name]) for d in draws]))
    out["tv_max"] = max(out[f"tv.{k}"] for k in ("shape", "scale", "posX", "posY"))
    return out


def score_images(
    classifier: torch.nn.Module,
    images: np.ndarray | torch.Tensor,
    *,
    device: torch.device | str = "cpu",
    labels: np.ndarray | None = None,
    originals: np.ndarray | torch.Tensor | None = None,
    reference_classes: np.ndarray | None = None,
    valid_iou: float = VALID_IOU,
    seed: int = 0,
) -> dict[str, float]:
    """Every dSprites ruler of an image set in one call.

    Args:
        classifier: the trained factor classifier (:mod:`multibeta.metrics.factor_classifier`).
        images: ``[N, 1, 64, 64]`` uint8 or float in [0, 1] (reconstructions or samples).
        device: where the classifier runs.
        labels: int ``[N, 5]`` true factors of the images' inputs (reconstructions): adds the
            classifier's accuracy on the images, ``accuracy.<factor>`` / ``within_one.<factor>``.
        originals: the inputs ``[N, 1, 64, 64]`` (reconstructions): adds ``iou_to_input``, the
            mean IoU of binarised image and binarised input.
        reference_classes: int ``[M, 5]`` factors of the data (samples): adds :func:`coverage`
            of the best renderings' factors (``tv.<factor>``, ``tv_floor.<factor>``, ``tv_max``).
        valid_iou: IoU threshold of a valid image.
        seed: seed of the coverage floor.

    Returns:
        :func:`render_consistency` keys plus the optional ones above; for a classifier of other
        data (:func:`classifier_not_applicable`) only ``{"not_applicable": reason}``.
    """
    from multibeta.metrics.factor_classifier import factor_accuracy, label_symmetry, predict_probabilities

    reason = classifier_not_applicable(classifier)
    if reason is not None:
        return {"not_applicable": reason}

    probs = predict_probabilities(classifier, images, device)
    fit = render_fit(images, probs)
    out = render_consistency(fit, valid_iou=valid_iou, shapes=None if labels is None else labels[:, 0])
    if labels is not None:
        predicted = np.stack([p.argmax(1).numpy() for p in probs], axis=1)
        out.update(factor_accuracy(predicted, labels, FACTOR_NAMES, label_symmetry(FACTOR_NAMES, FACTOR_SIZES)))
    if originals is not None:
        per_image = iou(binarise(images), binarise(originals)).numpy()
        out["iou_to_input"] = float(per_image.mean()) if len(per_image) else 0.0
        if labels is not None:
            from multibeta.data.dsprites import SHAPE_NAMES

            for k, name in enumerate(SHAPE_NAMES):
                sel = labels[:, 0] == k
                if sel.any():
                    out[f"iou_to_input.{name}"] = float(per_image[sel].mean())
    if reference_classes is not None:
        out.update(coverage(fit.factor_classes, reference_classes, seed=seed))
    return out
