"""A factor classifier whose penultimate layer is a domain feature space for FID/KID.

On data with ground-truth factors (dSprites) a small CNN is trained to predict every
factor's class (one linear cross-entropy head per factor on a shared trunk). Its
penultimate layer (``width`` ReLU units) is then registered with torch-fidelity as a
feature extractor, giving a Fréchet distance and KID that need no downloaded weights and
that measure what matters on the toy data (are shapes, scales, rotations and positions
right?), in the spirit of the "domain-specific FID" used for toy data (e.g. a
classifier-based FD on MNIST). Its held-out accuracy is reported with it: a feature
space from a classifier that fails is not worth much.

The checkpoint (``kind="factor_classifier"``) records the architecture (``arch``), the
weights, the held-out accuracy, the config and the versions.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from multibeta.core.schedules import lr_factor
from multibeta.metrics.config import FactorClassifierConfig
from multibeta.metrics.images import ImageSource, SubsetImages, as_image_source, channels_of
from multibeta.utils.checkpoint import load_checkpoint, save_checkpoint
from multibeta.utils.device import Runtime, eval_mode
from multibeta.utils.progress import ProgressLog
from multibeta.utils.versions import collect_versions

logger = logging.getLogger(__name__)

CHECKPOINT_KIND = "factor_classifier"
#: Name under which the feature extractor is registered with torch-fidelity.
EXTRACTOR_NAME = "multibeta-factor-classifier"
#: The feature that FID/KID use (the penultimate layer).
FEATURE_LAYER = "penultimate"
#: Default square image side (data.image_size's default); a classifier is built for its data's side.
IMAGE_SIZE = 64
#: Images per batch when evaluating held-out accuracy.
EVAL_BATCH = 256
#: Training images used to fit the feature normalisation (a seeded subset of the training part).
NORMALISATION_IMAGES = 5000
#: Lower bound of the global feature scale (all-dead features would give 0).
FEATURE_SCALE_FLOOR = 1e-6


class FactorClassifier(nn.Module):
    """Four stride-2 4x4 convolutions (c, c, 2c, 2c channels, ReLU) -> linear ``width`` + ReLU
    (the feature) -> one linear head per factor.

    Args:
        in_channels: image channels.
        factor_sizes: number of classes of each factor.
        channels: c, channels of the first convolution.
        width: feature dimension.
        image_size: square input side (divisible by 16).
    """

    def __init__(
        self, *, in_channels: int, factor_sizes: Sequence[int], channels: int, width: int, image_size: int = IMAGE_SIZE,
    ) -> None:
        super().__init__()
        if image_size % 16:
            raise ValueError(f"image_size must be divisible by 16, got {image_size}")
        c = channels
        self.trunk = nn.Sequential(
            nn.Conv2d(in_channels, c, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(c, c, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(c, 2 * c, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(2 * c, 2 * c, 4, 2, 1), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(2 * c * (image_size // 16) ** 2, width), nn.ReLU(),
        )
        self.heads = nn.ModuleList(nn.Linear(width, int(k)) for k in factor_sizes)
        self.in_channels = in_channels
        self.factor_sizes = tuple(int(k) for k in factor_sizes)
        self.image_size = int(image_size)
        #: Names of the factors (set from the checkpoint by :func:`load_factor_classifier`).
        self.factor_names: tuple[str, ...] | None = None
        # Set after training (fit_feature_normalisation): centre and one global scale.
        self.register_buffer("feature_mean", torch.zeros(width))
        self.register_buffer("feature_scale", torch.ones(()))

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """Raw penultimate activations [N, width] of float images [N, C, H, W] in [0, 1]."""
        return self.trunk(x * 2.0 - 1.0)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The FID/KID features: penultimate activations, centred and divided by one global
        scale (the RMS standard deviation over dimensions on the training images), so that
        the training images' features have mean 0 and mean per-dimension variance 1. A single
        scale keeps the geometry of the layer (per-dimension scaling would blow up nearly
        dead units) and puts FID and the cubic KID kernel on an O(1) scale like Inception's."""
        return (self.hidden(x) - self.feature_mean) / self.feature_scale

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every factor: list of [N, size_k]."""
        h = self.hidden(x)
        return [head(h) for head in self.heads]


# --- symmetries of the labels ------------------------------------------------------------


@dataclass(frozen=True)
class LabelSymmetry:
    """Classes of one factor that give the same image, depending on another factor.

    On dSprites the square at orientation k equals the square at k + 10 (a quarter turn), the
    ellipse at k + 20; only the heart has 40 distinct orientations. The classifier is trained
    with the probability of the whole equivalence class (``-log sum p``) and scored modulo it.

    Attributes:
        factor: index of the cyclic factor (orientation).
        given: index of the factor that sets the period (shape).
        periods: period in classes for each class of ``given``.
    """

    factor: int
    given: int
    periods: tuple[int, ...]

    def period(self, labels: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Period ``[N]`` of each row of ``labels`` ``[N, F]``."""
        given = torch.as_tensor(np.asarray(labels)[:, self.given] if isinstance(labels, np.ndarray)
                                else labels[:, self.given])
        return torch.as_tensor(self.periods, device=given.device)[given]

    def equivalent(self, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
        """bool ``[N, n_classes]``: the classes equivalent to each row's label."""
        per = self.period(labels)[:, None]
        k = torch.arange(n_classes, device=labels.device)[None, :]
        return (k % per) == (labels[:, self.factor, None] % per)


def label_symmetry(factor_names: Sequence[str], factor_sizes: Sequence[int]) -> LabelSymmetry | None:
    """The orientation symmetry of dSprites (by its factor names and sizes), else None."""
    from multibeta.data.dsprites import FACTOR_NAMES, FACTOR_SIZES, ORIENTATION_PERIODS

    if tuple(factor_names) == FACTOR_NAMES and tuple(int(k) for k in factor_sizes) == FACTOR_SIZES:
        return LabelSymmetry(factor=FACTOR_NAMES.index("orientation"), given=FACTOR_NAMES.index("shape"),
                             periods=ORIENTATION_PERIODS)
    return None


def classification_loss(logits: Sequence[torch.Tensor], labels: torch.Tensor,
                        symmetry: LabelSymmetry | None) -> torch.Tensor:
    """Sum over factors of the cross-entropy; for the symmetric factor, ``-log`` of the summed
    probability of the label's equivalence class. ``labels`` int ``[N, F]``."""
    total = logits[0].new_zeros((), dtype=torch.float32)
    for k, lg in enumerate(logits):
        lg = lg.float()
        if symmetry is not None and k == symmetry.factor:
            eq = symmetry.equivalent(labels, lg.shape[1])
            total = total - lg.log_softmax(1).masked_fill(~eq, float("-inf")).logsumexp(1).mean()
        else:
            total = total + F.cross_entropy(lg, labels[:, k])
    return total


def _arch(in_channels: int, factor_sizes: Sequence[int], cfg: FactorClassifierConfig, image_size: int) -> dict[str, Any]:
    return {
        "in_channels": int(in_channels),
        "factor_sizes": [int(k) for k in factor_sizes],
        "channels": int(cfg.channels),
        "width": int(cfg.width),
        "image_size": int(image_size),
    }


def _to_float(batch: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(batch).to(device, non_blocking=True).to(torch.float32).div_(255.0)


@torch.no_grad()
def fit_feature_normalisation(model: FactorClassifier, images: ImageSource, device: torch.device) -> None:
    """Set ``feature_mean`` and ``feature_scale`` from the raw features of ``images``."""
    with eval_mode(model):
        hs = [model.hidden(_to_float(images.uint8_batch(np.arange(s, min(s + EVAL_BATCH, len(images)))), device))
              .double() for s in range(0, len(images), EVAL_BATCH)]
    h = torch.cat(hs)
    mean = h.mean(dim=0)
    scale = h.var(dim=0, unbiased=False).mean().sqrt().clamp_min(FEATURE_SCALE_FLOOR)
    model.feature_mean.copy_(mean.float())
    model.feature_scale.copy_(scale.float())


@torch.no_grad()
def predict_probabilities(
    model: FactorClassifier, images: ImageSource | np.ndarray | torch.Tensor, device: torch.device | str = "cpu",
) -> list[torch.Tensor]:
    """Class probabilities of every factor (list of CPU float32 ``[N, size_k]``) for all images of
    ``images`` (an image source, or uint8/[0, 1] float arrays ``[N, C, S, S]`` at the classifier's
    side S)."""
    source = as_image_source(images)
    out: list[list[torch.Tensor]] = [[] for _ in model.heads]
    with eval_mode(model):
        for s in range(0, len(source), EVAL_BATCH):
            pos = np.arange(s, min(s + EVAL_BATCH, len(source)))
            for k, lg in enumerate(model(_to_float(source.uint8_batch(pos), torch.device(device)))):
                out[k].append(lg.float().softmax(1).cpu())
    return [torch.cat(p) if p else torch.zeros(0, head.out_features) for p, head in zip(out, model.heads)]


def factor_accuracy(
    predicted: np.ndarray, labels: np.ndarray, factor_names: Sequence[str], symmetry: LabelSymmetry | None,
) -> dict[str, float]:
    """Held-out accuracy of predicted classes ``[N, F]`` against ``labels`` ``[N, F]``.

    Returns ``accuracy.<factor>`` (exact class; the symmetric factor modulo its period),
    ``within_one.<factor>`` (off by at most one class; cyclic modulo the period for the
    symmetric factor) and ``accuracy`` (mean of the exact accuracies).
    """
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    out: dict[str, float] = {}
    for k, name in enumerate(factor_names):
        diff = np.abs(predicted[:, k] - labels[:, k])
        if symmetry is not None and k == symmetry.factor:
            period = symmetry.period(labels).numpy()
            diff = diff % period
            diff = np.minimum(diff, period - diff)
        out[f"accuracy.{name}"] = float(np.mean(diff == 0)) if len(diff) else 0.0
        out[f"within_one.{name}"] = float(np.mean(diff <= 1)) if len(diff) else 0.0
    out["accuracy"] = float(np.mean([out[f"accuracy.{n}"] for n in factor_names]))
    return out


def train_factor_classifier(
    images_source: ImageSource | np.ndarray | torch.Tensor,
    factor_classes: np.ndarray,
    factor_sizes: Sequence[int],
    cfg: FactorClassifierConfig,
    runtime: Runtime,
    out_path: str | os.PathLike,
    *,
    seed: int,
    factor_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """Train the factor classifier, save its checkpoint, return its held-out accuracy.

    A seeded random subset of at most ``cfg.max_images`` images is split into training and
    held-out parts (``cfg.holdout_fraction``); training draws ``cfg.steps`` batches with
    replacement from the training part (Adam, linear warm-up over the first 5% of the steps,
    then cosine decay to zero); the loss is the sum over factors of the cross-entropies, with
    the label's whole equivalence class for a symmetric factor (:func:`label_symmetry`).
    Afterwards the feature normalisation (see :meth:`FactorClassifier.features`) is fitted on
    up to 5,000 training images.

    Args:
        images_source: images [N, C, S, S] (uint8 or [0, 1] floats, numpy/torch), or an
            image source such as ``ImageDataset(path, split="train")``.
        factor_classes: int [N, F] class of each factor, aligned with the source's positions
            (``ImageDataset.factor_classes()``).
        factor_sizes: classes per factor [F].
        cfg: ``metrics.factor_classifier`` options.
        runtime: device (and autocast) to train on.
        out_path: checkpoint file (written atomically).
        seed: seed of the subset, split, initialisation and batches.
        factor_names: names of the factors (recorded; keys of the per-factor accuracies).

    Returns:
        :func:`factor_accuracy` on the held-out images (``accuracy``, ``accuracy.<factor>``,
        ``within_one.<factor>``), ``n_train``, ``n_heldout``, ``final_loss``, ``seed``,
        ``elapsed_s``.
    """
    start = time.perf_counter()
    source = as_image_source(images_source)
    labels = np.asarray(factor_classes, dtype=np.int64)
    sizes = [int(k) for k in factor_sizes]
    if labels.ndim != 2 or len(labels) != len(source) or labels.shape[1] != len(sizes):
        raise ValueError(
            f"factor_classes must be [N={len(source)}, F={len(sizes)}] aligned with the images, got {labels.shape}"
        )
    if labels.min() < 0 or (labels >= np.asarray(sizes)).any():
        raise ValueError(f"factor_classes out of range for factor_sizes {sizes}")
    names = list(factor_names) if factor_names is not None else [f"factor_{k}" for k in range(len(sizes))]
    rng = np.random.default_rng(seed)
    n = len(source) if cfg.max_images is None else min(cfg.max_images, len(source))
    chosen = rng.permutation(len(source))[:n]
    n_held = max(1, int(round(cfg.holdout_fraction * n)))
    if n - n_held < 1:
        raise ValueError(f"factor classifier needs at least 2 images, got {n}")
    train_pos, held_pos = np.sort(chosen[n_held:]), np.sort(chosen[:n_held])

    device = runtime.device
    torch.manual_seed(seed)
    channels = channels_of(source)
    image_size = int(source.uint8_batch(np.arange(1)).shape[-1])  # data.image_size of the file
    model = FactorClassifier(in_channels=channels, factor_sizes=sizes, channels=cfg.channels, width=cfg.width,
                             image_size=image_size).to(device)
    symmetry = label_symmetry(names, sizes)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    warmup = max(1, cfg.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warmup=warmup, total=cfg.steps))
    scaler = runtime.grad_scaler()
    label_t = torch.as_tensor(labels)
    loss_ema = None
    model.train()
    progress = ProgressLog("train_factor_classifier", cfg.steps, logger)
    for step in tqdm(range(cfg.steps), desc="factor classifier", disable=None):
        pos = train_pos[rng.integers(len(train_pos), size=cfg.batch_size)]
        x = _to_float(source.uint8_batch(pos), device)
        y = label_t[pos].to(device)
        with runtime.autocast():
            logits = model(x)
        loss = classification_loss(logits, y, symmetry)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
        loss_ema = loss.item() if loss_ema is None else 0.98 * loss_ema + 0.02 * loss.item()
        if not np.isfinite(loss_ema):
            raise FloatingPointError(
                f"factor classifier loss is {loss_ema} at step {step}; lower metrics.factor_classifier.learning_rate"
            )
        progress.update(step + 1, loss=loss_ema)

    norm_pos = np.sort(rng.permutation(train_pos)[:NORMALISATION_IMAGES])
    fit_feature_normalisation(model, SubsetImages(source, norm_pos), device)
    probs = predict_probabilities(model, SubsetImages(source, held_pos), device)
    predicted = np.stack([p.argmax(1).numpy() for p in probs], axis=1)
    result: dict[str, float] = factor_accuracy(predicted, labels[held_pos], names, symmetry)
    result.update({"n_train": len(train_pos), "n_heldout": len(held_pos), "final_loss": float(loss_ema),
                   "seed": seed})
    state = {
        "kind": CHECKPOINT_KIND,
        "arch": _arch(channels, sizes, cfg, image_size),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "factor_names": names,
        "heldout_accuracy": result,
        "config": asdict(cfg),
        "versions": collect_versions(),
    }
    save_checkpoint(state, out_path)
    result["elapsed_s"] = time.perf_counter() - start
    logger.info("factor classifier: held-out accuracy %.4f (%s) -> %s", result["accuracy"],
                ", ".join(f"{n} {result[f'accuracy.{n}']:.3f}" for n in names), out_path)
    return {k: float(v) for k, v in result.items()}


def load_factor_classifier(
    path: str | os.PathLike, device: torch.device | str = "cpu",
) -> tuple[FactorClassifier, dict[str, Any]]:
    """The trained classifier (eval mode, no grad) and its checkpoint dict."""
    state = load_checkpoint(path, kind=CHECKPOINT_KIND)
    arch = state["arch"]
    model = FactorClassifier(
        in_channels=arch["in_channels"], factor_sizes=arch["factor_sizes"], channels=arch["channels"],
        width=arch["width"], image_size=arch["image_size"],
    )
    model.load_state_dict(state["state_dict"])
    model.factor_names = tuple(state["factor_names"]) if state.get("factor_names") else None
    model.eval().requires_grad_(False)
    return model.to(device), state


# --- torch-fidelity feature extractor -----------------------------------------------------


def _extractor_class() -> type:
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    class FactorClassifierExtractor(FeatureExtractorBase):
        """torch-fidelity feature extractor: the factor classifier's penultimate layer.

        The checkpoint path is passed as torch-fidelity's ``feature_extractor_weights_path``.
        Input: uint8 [N, C, H, W] with the classifier's C (a 3-channel input to a 1-channel
        classifier is averaged over channels).
        """

        def __init__(self, name: str, features_list: list[str], feature_extractor_weights_path: str | None = None,
                     **kwargs: Any) -> None:
            super().__init__(name, features_list)
            if feature_extractor_weights_path is None:
                raise ValueError(
                    f"the {EXTRACTOR_NAME} feature extractor needs feature_extractor_weights_path "
                    "(the factor classifier checkpoint written by train_factor_classifier)"
                )
            self.model, _ = load_factor_classifier(feature_extractor_weights_path)

        @staticmethod
        def get_provided_features_list() -> tuple[str, ...]:
            return (FEATURE_LAYER,)

        @staticmethod
        def get_default_feature_layer_for_metric(metric: str) -> str:
            return FEATURE_LAYER

        @staticmethod
        def can_be_compiled() -> bool:
            return False

        @staticmethod
        def get_dummy_input_for_compile() -> torch.Tensor:
            return torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            if x.dtype != torch.uint8 or x.ndim != 4:
                raise ValueError(f"expected uint8 images [N, C, H, W], got {x.dtype} {tuple(x.shape)}")
            x = x.to(torch.float32) / 255.0
            if x.shape[1] != self.model.in_channels:
                if self.model.in_channels == 1:
                    x = x.mean(dim=1, keepdim=True)
                else:
                    x = x.expand(-1, self.model.in_channels, -1, -1)
            return (self.model.features(x),)

    return FactorClassifierExtractor


def register_factor_classifier_extractor() -> str:
    """Register the extractor with torch-fidelity once per process; return its name."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if EXTRACTOR_NAME not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(EXTRACTOR_NAME, _extractor_class())
    return EXTRACTOR_NAME
