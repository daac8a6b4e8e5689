"""How selective a latent edit is: does moving along factor k's direction change factor k only?

For one family of directions (one per edited factor: probe directions, or the PCA/ICA
direction matched to each factor) and held-out images x_1..x_N:

1. encode at the family's level t (t_b, or 0 for the family edited without a denoiser);
2. move z by ``amount × std`` along factor k's direction (each amount a separate pass);
3. render: denoise from t_b to 0 (the sampler, same seed) and decode with D(·, 0), or decode
   directly for t = 0;
4. read every factor of the rendered images with the factor classifier (class probabilities);
5. compare with the same images rendered identically without the move (the same noise per
   image, so an amount of 0 changes nothing).

**Distance** between the classifier's distributions p (before) and q (after) of one factor:
the Wasserstein-1 (earth mover's) distance on the factor's own geometry, divided by its
largest possible value so that it lies in [0, 1] (:func:`class_distance`):

- categorical (dSprites shape) and binary factors: total variation ½ Σ_c |q(c) − p(c)| (any
  class is as far from any other);
- ordinal factors (scale, posX, posY): Σ_c |F_q(c) − F_p(c)| / (size − 1) over the cumulative
  distributions — |Δ expected class index| / (size − 1) when the edit shifts the distribution,
  but not blind to a change that keeps the mean;
- cyclic factors (orientation): the same on the circle, min_α Σ_c |F_q(c) − F_p(c) − α| /
  ⌊size / 2⌋, so class 39 is next to class 0.

Why not plain total variation for every factor: on the fine-grained factors (40
orientations, 32 positions) a one-class jitter of the prediction counts as a full change, so
every edit seems to change every such factor (on the dsprites_long models TV put every
family's score at 0.51–0.53). Why not |Δ expected index| alone: it means nothing for shape
and wraps around for orientation.

**Relative change** of factor j = the mean distance (over images and amounts) divided by its
**reference**: the mean distance between the unedited renders of two different held-out
images (random pairs). The raw distances are not comparable across factors (a categorical
factor that flips moves 1, a position that moves by 3 of 32 classes moves 0.1); relative to
the reference, 1 means "as different as another image" for every factor.

**Edit-disentanglement score** of factor k = c_k / (c_k + mean_{j≠k} c_j) with c the relative
changes: 1 when only the target moves, 0.5 when every factor moves as much as the target,
below 0.5 when the edit moves other factors more than its own. An edit that changes nothing
scores 0.5 (no evidence of selectivity) — always read it with the target change itself.

Classes the classifier cannot tell apart (dSprites orientations a quarter turn apart, for
squares) are pooled first (:func:`symmetry_class_maps`), so turning a square by 90° is no
change.

All functions are pure (tensors and callables in, numbers out); the rule script supplies the
encoder/renderer (:func:`multibeta.sampling.directions.edit_pipeline`) and the classifier
(:func:`classifier_probabilities`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np
import torch

from multibeta.sampling.directions import edit_latents
from multibeta.sampling.edit import Directions

logger = logging.getLogger(__name__)

ProbabilityFn = Callable[[torch.Tensor], Sequence[torch.Tensor]]
"""``probabilities(images [N, C, H, W] in [0, 1]) -> per factor [N, size_j]`` class probabilities."""


def classifier_probabilities(model: torch.nn.Module, device: torch.device | str = "cpu") -> ProbabilityFn:
    """The factor classifier (:func:`multibeta.metrics.factor_classifier.load_factor_classifier`)
    as a :data:`ProbabilityFn`."""
    from multibeta.metrics.factor_classifier import predict_probabilities

    def probabilities(images: torch.Tensor) -> list[torch.Tensor]:
        return predict_probabilities(model, images, device)  # type: ignore[arg-type]

    return probabilities


FactorGeometry = Literal["categorical", "ordinal", "cyclic"]
#: Floor of a factor's reference distance (a factor that hardly varies among the held-out
#: images would otherwise blow its relative change up).
REFERENCE_FLOOR = 0.02


def factor_geometries(names: Sequence[str], sizes: Sequence[int]) -> list[FactorGeometry]:
    """The geometry of each factor's classes: dSprites shape categorical, orientation cyclic,
    scale and positions ordinal; any other dataset's factors ordinal (binary attributes: for two
    classes every geometry gives the total variation)."""
    from multibeta.data.dsprites import FACTOR_NAMES, FACTOR_SIZES

    if tuple(names) == FACTOR_NAMES and tuple(int(k) for k in sizes) == FACTOR_SIZES:
        return ["categorical" if n == "shape" else "cyclic" if n == "orientation" else "ordinal"
                for n in names]
    return ["ordinal"] * len(sizes)


def symmetry_class_maps(names: Sequence[str], sizes: Sequence[int]) -> list[torch.Tensor | None]:
    """Per factor, None or a map ``[size]`` class -> pooled class for :func:`distribution_change`.

    dSprites: orientation classes are pooled modulo 10 (a quarter turn, the gcd of the
    shapes' periods; :func:`multibeta.metrics.factor_classifier.label_symmetry`): the
    classifier is trained on equivalence classes and cannot tell them apart for squares. The
    pooled classes stay cyclic (9 is next to 0). The price: a heart turned by exactly a
    multiple of 90° reads as unchanged. Other datasets: no pooling.
    """
    from multibeta.metrics.factor_classifier import label_symmetry

    maps: list[torch.Tensor | None] = [None] * len(sizes)
    symmetry = label_symmetry(names, sizes)
    if symmetry is not None:
        period = math.gcd(*symmetry.periods)
        maps[symmetry.factor] = torch.arange(int(sizes[symmetry.factor])) % period
    return maps


def _pool(p: torch.Tensor, class_map: torch.Tensor | None) -> torch.Tensor:
    if class_map is None:
        return p
    groups = int(class_map.max()) + 1
    out = p.new_zeros(p.shape[0], groups)
    return out.index_add_(1, class_map.to(p.device), p)


def class_distance(p: torch.Tensor, q: torch.Tensor, geometry: FactorGeometry) -> torch.Tensor:
    """Normalised Wasserstein-1 distance ``[N]`` in [0, 1] between class distributions ``p`` and
    ``q`` ``[N, n]`` on the classes' geometry (see the module docstring)."""
    if geometry not in ("categorical", "ordinal", "cyclic"):
        raise ValueError(f"unknown factor geometry {geometry!r}; use categorical, ordinal or cyclic")
    diff = q.double() - p.double()
    n = diff.shape[1]
    if geometry == "categorical" or n <= 2:
        return 0.5 * diff.abs().sum(dim=1)
    cdf = diff.cumsum(dim=1)
    if geometry == "ordinal":
        return cdf[:, :-1].abs().sum(dim=1) / (n - 1)
    # on the circle the best shift α of the cumulative difference is its median
    return (cdf - cdf.median(dim=1, keepdim=True).values).abs().sum(dim=1) / (n // 2)


def _distances(
    before: Sequence[torch.Tensor], after: Sequence[torch.Tensor], geometries: Sequence[FactorGeometry],
    class_maps: Sequence[torch.Tensor | None] | None,
) -> list[torch.Tensor]:
    if not len(before) == len(after) == len(geometries):
        raise ValueError(f"{len(before)} factors before, {len(after)} after, {len(geometries)} geometries")
    maps = list(class_maps) if class_maps is not None else [None] * len(before)
    out = []
    for j, (p, q) in enumerate(zip(before, after)):
        if p.shape != q.shape:
            raise ValueError(f"factor {j}: probabilities {tuple(p.shape)} before but {tuple(q.shape)} after")
        out.append(class_distance(_pool(p, maps[j]), _pool(q, maps[j]), geometries[j]))
    return out


def distribution_change(
    before: Sequence[torch.Tensor],
    after: Sequence[torch.Tensor],
    geometries: Sequence[FactorGeometry],
    class_maps: Sequence[torch.Tensor | None] | None = None,
) -> np.ndarray:
    """Mean over images of :func:`class_distance` between ``before`` and ``after`` class
    probabilities (per factor ``[N, size_j]``), after pooling with ``class_maps`` -> ``[F]``."""
    return np.array([float(d.mean()) if len(d) else 0.0
                     for d in _distances(before, after, geometries, class_maps)])


def reference_change(
    probabilities: Sequence[torch.Tensor],
    geometries: Sequence[FactorGeometry],
    class_maps: Sequence[torch.Tensor | None] | None = None,
    *,
    seed: int = 0,
) -> np.ndarray:
    """``[F]`` mean :func:`class_distance` between the distributions of two different images:
    image ``order[i]`` against ``order[i + 1]`` (cyclically) for a seeded random order, so every
    image is paired once with another one."""
    n = len(probabilities[0]) if probabilities else 0
    if n < 2:
        raise ValueError(f"the reference change needs at least 2 images, got {n}")
    order = torch.as_tensor(np.random.default_rng(seed).permutation(n))
    partner = order.roll(-1)
    return distribution_change([p[order] for p in probabilities], [p[partner] for p in probabilities],
                               geometries, class_maps)


@dataclass(frozen=True)
class EditScores:
    """Selectivity of one family's edits.

    Attributes:
        family: the family's name (``attribute``, ``pca``, ``ica``, ``attribute_t0``).
        names: the factors read by the classifier ``[F]``.
        targets: the factor each direction edits ``[K]`` (indices into ``names``).
        amounts: the edit amounts in std units ``[A]``.
        change: ``[A, K, F]`` mean distance of factor j's distributions before and after the
            edit of direction k by amount a (:func:`class_distance`).
        reference: ``[F]`` the same between two different unedited images
            (:func:`reference_change`), the unit of the relative changes.
        baseline_accuracy: ``[F]`` accuracy of the classifier on the unedited renders against
            the true labels (None without labels): how well the pipeline keeps the factors
            before any edit.
    """

    family: str
    names: tuple[str, ...]
    targets: tuple[int, ...]
    amounts: tuple[float, ...]
    change: np.ndarray
    reference: np.ndarray
    baseline_accuracy: np.ndarray | None = None

    @property
    def relative_change(self) -> np.ndarray:
        """``[K, F]`` change averaged over the amounts, in units of the reference (1: as
        different as another image)."""
        return self.change.mean(axis=0) / np.maximum(self.reference, REFERENCE_FLOOR)[None, :]

    @property
    def target_change(self) -> np.ndarray:
        """``[K]`` relative change of the edited factor itself."""
        m = self.relative_change
        return m[np.arange(len(self.targets)), list(self.targets)]

    @property
    def off_target_change(self) -> np.ndarray:
        """``[K]`` mean relative change of the other factors (0 with a single factor)."""
        m = self.relative_change
        n = m.shape[1]
        if n < 2:
            return np.zeros(len(self.targets))
        return (m.sum(axis=1) - self.target_change) / (n - 1)

    @property
    def score(self) -> np.ndarray:
        """``[K]`` c_k / (c_k + mean_{j≠k} c_j) of the relative changes; 0.5 when nothing changes."""
        target, off = self.target_change, self.off_target_change
        total = target + off
        return np.divide(target, total, out=np.full_like(total, 0.5), where=total > 0)

    def summary(self) -> dict[str, float]:
        """Flat numbers for metrics.json: ``score``, ``target_change``, ``off_target_change`` (means
        over the edited factors) and the same per factor as ``<key>.<factor>``, plus
        ``change.<edited>.<read>`` (relative), ``reference.<factor>`` and
        ``baseline_accuracy.<factor>`` when known."""
        edited = [self.names[k] for k in self.targets]
        out: dict[str, float] = {}
        for key, values in (("score", self.score), ("target_change", self.target_change),
                            ("off_target_change", self.off_target_change)):
            out[key] = float(np.mean(values))
            out.update({f"{key}.{name}": float(v) for name, v in zip(edited, values)})
        for name, row in zip(edited, self.relative_change):
            out.update({f"change.{name}.{read}": float(v) for read, v in zip(self.names, row)})
        out.update({f"reference.{name}": float(v) for name, v in zip(self.names, self.reference)})
        if self.baseline_accuracy is not None:
            out.update({f"baseline_accuracy.{name}": float(v)
                        for name, v in zip(self.names, self.baseline_accuracy)})
        return out


def _accuracy(
    probs: Sequence[torch.Tensor], labels: np.ndarray, class_maps: Sequence[torch.Tensor | None]
) -> np.ndarray:
    acc = np.zeros(len(probs))
    for j, p in enumerate(probs):
        pred, truth = p.argmax(dim=1), torch.as_tensor(labels[:, j])
        if class_maps[j] is not None:
            pred, truth = class_maps[j][pred], class_maps[j][truth]
        acc[j] = float((pred == truth).double().mean())
    return acc


def measure_edits(
    images: torch.Tensor,
    directions: Directions,
    amounts: Sequence[float],
    *,
    encode: Callable[[torch.Tensor], torch.Tensor],
    render: Callable[[torch.Tensor], torch.Tensor],
    probabilities: ProbabilityFn,
    names: Sequence[str],
    geometries: Sequence[FactorGeometry] | None = None,
    targets: Sequence[int] | None = None,
    class_maps: Sequence[torch.Tensor | None] | None = None,
    labels: np.ndarray | torch.Tensor | None = None,
    family: str | None = None,
    seed: int = 0,
) -> EditScores:
    """Edit every image along each direction by each amount and measure what changed.

    Args:
        images: held-out images ``[N >= 2, C, H, W]`` in [0, 1].
        directions: K directions, row k editing factor ``targets[k]``; ``stds`` sets the unit.
        amounts: edit amounts in std units ``[A]`` (leave out 0: it changes nothing and only
            dilutes the averages).
        encode: ``images -> z [N, d]`` at the edit level.
        render: ``z [N, d] -> images [N, C, H, W]``; called once on the unedited latents and
            once per (k, a) on N edited ones, so the sampler noise of image n is the same.
        probabilities: the classifier (:func:`classifier_probabilities`).
        names: the factors the classifier reads ``[F]``.
        geometries: each factor's class geometry (default :func:`factor_geometries` with the
            classifier's class counts).
        targets: the factor of each direction (default: direction k edits factor k, K = F).
        class_maps: pooled classes per factor (:func:`symmetry_class_maps`).
        labels: optional true classes ``[N, F]`` for the baseline accuracy.
        family: the family's name (default ``directions.name``).
        seed: seed of the random image pairs of the reference.
    """
    k_dirs = len(directions.vectors)
    targets = list(range(k_dirs)) if targets is None else [int(t) for t in targets]
    if len(targets) != k_dirs:
        raise ValueError(f"{k_dirs} directions but {len(targets)} targets")
    if any(not 0 <= t < len(names) for t in targets):
        raise ValueError(f"targets {targets} must index the {len(names)} factors {list(names)}")
    if len(amounts) == 0:
        raise ValueError("no edit amounts given")
    maps = list(class_maps) if class_maps is not None else [None] * len(names)
    z = encode(images)
    before = list(probabilities(render(z)))
    if len(before) != len(names):
        raise ValueError(f"the classifier reads {len(before)} factors but {len(names)} names were given")
    if geometries is None:
        geometries = factor_geometries(names, [p.shape[1] for p in before])
    reference = reference_change(before, geometries, maps, seed=seed)
    change = np.zeros((len(amounts), k_dirs, len(names)))
    for a, amount in enumerate(amounts):
        for k in range(k_dirs):
            after = probabilities(render(edit_latents(z, directions, k, amount)))
            change[a, k] = distribution_change(before, after, geometries, maps)
    baseline = None
    if labels is not None:
        baseline = _accuracy(before, np.asarray(labels), maps)
    result = EditScores(
        family=family or directions.name, names=tuple(names), targets=tuple(targets),
        amounts=tuple(float(a) for a in amounts), change=change, reference=reference,
        baseline_accuracy=baseline,
    )
    logger.info("edits %s: mean score %.3f, mean relative target change %.3f (%s)", result.family,
                float(result.score.mean()), float(result.target_change.mean()),
                ", ".join(f"{names[t]} {s:.2f}/{c:.2f}" for t, s, c in
                          zip(targets, result.score, result.target_change)))
    return result
