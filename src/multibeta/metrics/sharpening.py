"""Scores of sharpening: is the image denoised from t_b to 0 closer to the input, and sharper,
than the image decoded directly at t_b?

For every level t_b of a :class:`multibeta.sampling.edit.SharpenResult`: the MSE to the input
of the decoded D(μ_{t_b}, t_b) and of the denoised D(z_0, 0) images; on dSprites (with the
factor classifier) also their IoU to the binarised input and their render consistency (mean
IoU with the best rendering of the classifier's prediction, fraction of valid shapes).
"""

from __future__ import annotations

from typing import Any

import torch

from multibeta.metrics.render_consistency import binarise, classifier_not_applicable, iou, score_images
from multibeta.sampling.edit import SharpenResult


def score_sharpening(result: SharpenResult, *, classifier: torch.nn.Module | None = None,
                     device: torch.device | str = "cpu") -> dict[str, Any]:
    """``{"levels": [{"t_b", "decoded": {...}, "denoised": {...}}, ...], "n_images"}``.

    Each of ``decoded``/``denoised`` holds ``mse`` and, with a dSprites ``classifier``,
    ``iou_to_input``, ``render_iou`` and ``valid_fraction``; a classifier of other data adds
    ``not_applicable: {"render": reason}`` instead (:func:`classifier_not_applicable`).
    """
    inputs = result.inputs
    reason = None if classifier is None else classifier_not_applicable(classifier)
    if reason is not None:
        classifier = None
    levels = []
    for k, t_b in enumerate(result.levels):
        entry: dict[str, Any] = {"t_b": float(t_b)}
        for name, images in (("decoded", result.blurry[k]), ("denoised", result.sharp[k])):
            scores: dict[str, float] = {"mse": float((images - inputs).pow(2).mean())}
            if classifier is not None:
                scores["iou_to_input"] = float(iou(binarise(images), binarise(inputs)).mean())
                ruler = score_images(classifier, images, device=device)
                scores.update(render_iou=ruler["render_iou"], valid_fraction=ruler["valid_fraction"])
            entry[name] = scores
        levels.append(entry)
    out: dict[str, Any] = {"levels": levels, "n_images": int(len(inputs))}
    if reason is not None:
        out["not_applicable"] = {"render": reason}
    return out
