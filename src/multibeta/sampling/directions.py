"""Latent edit directions learned from labels, and PCA/ICA directions matched to factors.

The paper's traversals move a latent along post-hoc PCA/ICA directions and leave it to the
reader to guess which factor each one moves. Here the directions are learned from the labels
instead (the open question of replacing post-hoc PCA by semantically guided directions), one
per factor, with a linear probe fitted on latents ``[N, d]`` (μ_t at the edit level t):

- binary factors and attributes (2 classes): logistic regression; the direction is the normal
  of its decision boundary (its weight vector, as InterFaceGAN), pointing to the larger class;
  the probe's score is its held-out accuracy (with the majority-class rate as chance level);
- ordinal factors with more than 2 classes (scale, orientation, posX, posY): ridge regression
  on the class index; the direction is the gradient of the predicted index (its weight
  vector); the score is its held-out R². Orientation is cyclic, so a linear index probe fits
  it badly (a low R² says so) — a pair of (cos, sin) directions would be needed;
- categorical factors (dSprites ``shape``: square, ellipse, heart): one-vs-rest logistic
  regression towards a named target class (:func:`default_categorical`: the heart). The class
  order of a categorical factor is arbitrary, so a regression on its index would fit an
  ordering that does not exist (its R² and direction would change if the classes were
  renumbered); "towards the heart" is an edit with a meaning and its accuracy is well defined.

With ``orientation="pattern"`` the direction is instead the probe's activation pattern
Cov(z) w (Haufe et al. 2014): the direction along which the latents actually vary with the
probe's output. When factors are linearly mixed in latent space, moving along the pattern
leaves the other factors' readouts unchanged while moving along the normal does not; for
uncorrelated latents the two coincide.

Every direction is a unit vector; its ``std`` (the std of the latents' projections on it) is
the unit of edit amounts, as for traversals (:class:`multibeta.sampling.edit.Directions`).

:func:`match_directions` assigns to each factor the direction of a PCA/ICA family whose
coordinate is most related to it (correlation ratio), so the three families can be compared
factor by factor (:func:`select_directions`). :func:`denoise_function` and
:func:`edit_pipeline` wrap the VAE and the denoiser into the two callables an edit needs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import r2_score

from multibeta.sampling.edit import Directions, Encoder, denoise_to_zero, encode_images
from multibeta.sampling.samplers import Decoder, Denoiser, SigmaFn, StartMode, decode_latents
from multibeta.sampling.settings import SamplerSettings
from multibeta.utils.device import Runtime

logger = logging.getLogger(__name__)

ProbeKind = Literal["logistic", "ridge", "one_vs_rest"]
Orientation = Literal["normal", "pattern"]
#: Inverse regularisation of the logistic probes (on standardised latents).
LOGISTIC_C = 1.0
#: Ridge penalty of the regression probes (on standardised latents).
RIDGE_ALPHA = 1.0
#: Iterations of the logistic regression solver (lbfgs).
LOGISTIC_MAX_ITER = 2000
#: Floor of the global latent scale when standardising (all-constant latents have scale 0).
SCALE_FLOOR = 1e-12

LatentsLike = torch.Tensor | np.ndarray


def _as_array(x: LatentsLike, dtype: type = np.float64) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return arr.astype(dtype)


def default_categorical(names: Sequence[str], sizes: Sequence[int]) -> dict[str, int]:
    """The categorical factors of a known dataset and the class their probe points to.

    dSprites: ``{"shape": 2}`` (one-vs-rest towards the heart, its most distinctive shape);
    any other dataset: none (CelebA's attributes are all binary).
    """
    from multibeta.data.dsprites import FACTOR_NAMES, FACTOR_SIZES

    if tuple(names) == FACTOR_NAMES and tuple(int(k) for k in sizes) == FACTOR_SIZES:
        return {"shape": FACTOR_SIZES[FACTOR_NAMES.index("shape")] - 1}
    return {}


@dataclass(frozen=True)
class ProbeTarget:
    """What a factor's probe predicts: ``values`` ``[N]`` (class index, or 0/1 indicator)."""

    kind: ProbeKind
    values: np.ndarray
    description: str


def probe_targets(
    labels: LatentsLike,
    names: Sequence[str],
    sizes: Sequence[int],
    categorical: Mapping[str, int] | None = None,
) -> list[ProbeTarget]:
    """The probe target of each factor of ``labels`` int ``[N, F]`` (see the module docstring).

    Raises:
        ValueError: shapes disagree, a label is out of range, or ``categorical`` names an
            unknown factor or class.
    """
    y = _as_array(labels, np.int64)
    categorical = dict(categorical or {})
    if y.ndim != 2 or y.shape[1] != len(names) or len(names) != len(sizes):
        raise ValueError(f"labels must be [N, F={len(names)}] with one name and size per factor, "
                         f"got labels {y.shape}, {len(names)} names, {len(sizes)} sizes")
    if len(y) and (y.min() < 0 or (y >= np.asarray(sizes)[None, :]).any()):
        raise ValueError(f"labels out of range for factor sizes {list(sizes)}")
    unknown = set(categorical) - set(names)
    if unknown:
        raise ValueError(f"categorical factors {sorted(unknown)} are not among the factors {list(names)}")
    out: list[ProbeTarget] = []
    for k, (name, size) in enumerate(zip(names, sizes)):
        if name in categorical:
            target = int(categorical[name])
            if not 0 <= target < size:
                raise ValueError(f"target class {target} of categorical factor {name!r} is not in 0..{size - 1}")
            out.append(ProbeTarget("one_vs_rest", (y[:, k] == target).astype(np.int64), f"{name}={target} vs rest"))
        elif size == 2:
            out.append(ProbeTarget("logistic", y[:, k], name))
        elif size > 2:
            out.append(ProbeTarget("ridge", y[:, k], f"{name} index"))
        else:
            raise ValueError(f"factor {name!r} has {size} class; a direction needs at least 2")
    return out


@dataclass(frozen=True)
class AttributeDirections:
    """One probe direction per factor, and how well each probe reads its factor.

    Attributes:
        directions: ``Directions`` named ``attribute``: ``vectors`` ``[F, d]`` unit norm (row k
            for factor k), ``stds`` ``[F]`` std of the latents' projections on each vector (the
            unit of edit amounts), ``labels`` one row label per factor.
        names: the factor names ``[F]``.
        kinds: the probe of each factor (``logistic``, ``one_vs_rest`` or ``ridge``).
        scores: held-out accuracy (logistic, one-vs-rest) or R² (ridge) per factor ``[F]``.
        chance: the score of a constant guess ``[F]``: the held-out majority-class rate for
            classifiers, 0 for R².
        orientation: ``normal`` (probe weights) or ``pattern`` (Cov(z) w).
    """

    directions: Directions
    names: tuple[str, ...]
    kinds: tuple[ProbeKind, ...]
    scores: np.ndarray
    chance: np.ndarray
    orientation: Orientation

    def summary(self) -> dict[str, float]:
        """Flat ``probe_score.<factor>`` / ``probe_chance.<factor>`` numbers for metrics.json."""
        out: dict[str, float] = {}
        for name, score, chance in zip(self.names, self.scores, self.chance):
            out[f"probe_score.{name}"] = float(score)
            out[f"probe_chance.{name}"] = float(chance)
        return out


def _standardise(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre and one global scale (the RMS std over dimensions), not one scale per dimension:
    the latent space has no preferred axes (the KL term is rotation invariant), and scaling
    each axis on its own would make the penalised probes, hence their directions, depend on
    how the space happens to be rotated."""
    return x.mean(axis=0), max(float(np.sqrt(x.var(axis=0).mean())), SCALE_FLOOR)


def _fit_probe(
    x_train: np.ndarray, y_train: np.ndarray, x_held: np.ndarray, y_held: np.ndarray,
    kind: ProbeKind, seed: int,
) -> tuple[np.ndarray, float, float]:
    """(weights in raw latent units ``[d]``, held-out score, chance score)."""
    mean, std = _standardise(x_train)
    xs_train, xs_held = (x_train - mean) / std, (x_held - mean) / std
    if kind == "ridge":
        model = Ridge(alpha=RIDGE_ALPHA).fit(xs_train, y_train.astype(np.float64))
        pred = model.predict(xs_held)
        score = float(r2_score(y_held, pred)) if len(y_held) > 1 and np.ptp(y_held) > 0 else float("nan")
        return model.coef_ / std, score, 0.0
    model = LogisticRegression(C=LOGISTIC_C, max_iter=LOGISTIC_MAX_ITER, random_state=seed).fit(xs_train, y_train)
    # coef_ points towards classes_[1], the larger label
    score = float(np.mean(model.predict(xs_held) == y_held))
    chance = float(np.max(np.bincount(y_held)) / len(y_held))
    return model.coef_[0] / std, score, chance


def attribute_directions(
    latents: LatentsLike,
    labels: LatentsLike,
    names: Sequence[str],
    sizes: Sequence[int],
    *,
    categorical: Mapping[str, int] | None = None,
    orientation: Orientation = "normal",
    holdout_fraction: float = 0.2,
    seed: int = 0,
) -> AttributeDirections:
    """Fit one linear probe per factor on ``latents`` ``[N, d]`` and return its direction.

    Args:
        latents: μ_t of N images at the level t where edits will be made.
        labels: int ``[N, F]`` class of each factor (``factor_classes``; CelebA attributes in
            {0, 1}).
        names, sizes: factor names and class counts ``[F]``.
        categorical: categorical factors and their target class (one-vs-rest); default
            :func:`default_categorical`. Pass ``{}`` to treat every factor as ordinal/binary.
        orientation: ``normal`` (the probe's weight vector) or ``pattern`` (Cov(z) w).
        holdout_fraction: share of the N latents (seeded) held out to score each probe; the
            probes are fitted on the rest.
        seed: seed of the held-out split and the solvers.

    Raises:
        ValueError: fewer than 4 latents, misaligned labels, or a factor with a single class
            in the training part.
    """
    x = _as_array(latents)
    if x.ndim != 2 or len(x) < 4:
        raise ValueError(f"attribute directions need latents [N >= 4, d], got shape {x.shape}")
    if orientation not in ("normal", "pattern"):
        raise ValueError(f"unknown direction orientation {orientation!r}; use normal or pattern")
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    y = _as_array(labels, np.int64)
    if len(y) != len(x):
        raise ValueError(f"{len(x)} latents but {len(y)} label rows")
    if categorical is None:
        categorical = default_categorical(names, sizes)
    targets = probe_targets(y, names, sizes, categorical)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_held = min(len(x) - 2, max(1, int(round(holdout_fraction * len(x)))))
    held, train = np.sort(order[:n_held]), np.sort(order[n_held:])
    cov = np.cov(x[train], rowvar=False).reshape(x.shape[1], x.shape[1])

    vectors, stds, scores, chance, labels_out = [], [], [], [], []
    for name, target in zip(names, targets):
        if np.unique(target.values[train]).size < 2:
            raise ValueError(
                f"factor {name!r} ({target.description}) takes a single value in the {len(train)} "
                "training latents; use more (and more varied) images for the directions"
            )
        w, score, base = _fit_probe(x[train], target.values[train], x[held], target.values[held],
                                    target.kind, seed)
        v = cov @ w if orientation == "pattern" else w
        norm = float(np.linalg.norm(v))
        if norm == 0.0 or not np.isfinite(norm):
            raise ValueError(f"the probe of factor {name!r} has a zero or non-finite direction")
        v = v / norm
        vectors.append(v)
        stds.append(float((x @ v).std(ddof=1)))
        scores.append(score)
        chance.append(base)
        metric = "R²" if target.kind == "ridge" else "acc"
        labels_out.append(f"{target.description} ({metric} {score:.2f})")
        logger.info("probe %s: %s %s %.3f (chance %.3f), projection std %.3g", name, target.kind, metric,
                    score, base, stds[-1])
    return AttributeDirections(
        directions=Directions(
            name="attribute",
            vectors=torch.as_tensor(np.stack(vectors), dtype=torch.float32),
            stds=torch.as_tensor(stds, dtype=torch.float32),
            labels=labels_out,
        ),
        names=tuple(names),
        kinds=tuple(t.kind for t in targets),
        scores=np.asarray(scores, dtype=np.float64),
        chance=np.asarray(chance, dtype=np.float64),
        orientation=orientation,
    )


# --------------------------------------------------------------------------- matching


def direction_coordinates(latents: LatentsLike, directions: Directions) -> np.ndarray:
    """Coordinates ``[N, K]`` of centred latents in a family of directions ``[K, d]``.

    The least-squares coefficients ``c`` of ``z − mean ≈ c · vectors`` (the dual basis): moving
    z by α along ``vectors[k]`` changes coordinate k by α and no other (for linearly independent
    directions). For orthonormal PCA directions these are the projections; for ICA directions
    (the non-orthogonal mixing vectors) they are the independent sources, which a plain
    projection would mix.
    """
    x = _as_array(latents)
    v = directions.vectors.detach().cpu().double().numpy()
    return (x - x.mean(axis=0)) @ np.linalg.pinv(v)


def correlation_ratio(values: np.ndarray, classes: np.ndarray) -> float:
    """η ∈ [0, 1]: sqrt of the share of the variance of ``values`` ``[N]`` explained by the class
    means of ``classes`` ``[N]`` (equals |Pearson r| for two classes; order-free, so it also
    reads categorical and cyclic factors)."""
    total = float(np.var(values))
    if total <= 0.0:
        return 0.0
    _, inverse, counts = np.unique(classes, return_inverse=True, return_counts=True)
    means = np.bincount(inverse, weights=values) / counts
    between = float(np.sum(counts * (means - values.mean()) ** 2) / len(values))
    return float(np.sqrt(min(1.0, between / total)))


@dataclass(frozen=True)
class DirectionMatch:
    """The direction of a family matched to each factor.

    Attributes:
        indices: ``[F]`` index into the family of factor k's direction (several factors may
            share one direction: that direction then moves them together).
        signs: ``[F]`` ±1 so that moving along ``sign · vectors[index]`` increases the
            factor's probe target (class index, or the target class of a categorical factor).
        strengths: ``[F]`` correlation ratio η of the matched coordinate with the factor.
        association: ``[F, K]`` η of every (factor, direction) pair.
    """

    indices: np.ndarray
    signs: np.ndarray
    strengths: np.ndarray
    association: np.ndarray


def match_directions(
    latents: LatentsLike,
    labels: LatentsLike,
    directions: Directions,
    *,
    names: Sequence[str] | None = None,
    sizes: Sequence[int] | None = None,
    categorical: Mapping[str, int] | None = None,
) -> DirectionMatch:
    """For each factor, the direction of ``directions`` whose coordinate relates to it most.

    The relation is the correlation ratio η between the direction's coordinate
    (:func:`direction_coordinates`) and the factor's classes: order-free, so a categorical
    (shape) or cyclic (orientation) factor is matched as well as an ordinal one. The sign
    makes the matched direction increase the factor's probe target (:func:`probe_targets`),
    so signs agree with :func:`attribute_directions`.

    Args:
        latents: ``[N, d]`` at the level the directions were fitted at.
        labels: int ``[N, F]``.
        directions: a family (PCA, ICA, ...) of K directions.
        names, sizes: factor names and class counts (default ``factor_k`` and the label
            maxima + 1); ``categorical`` as for :func:`attribute_directions` (default
            :func:`default_categorical`).
    """
    y = _as_array(labels, np.int64)
    if y.ndim != 2:
        raise ValueError(f"labels must be [N, F], got shape {y.shape}")
    n_factors = y.shape[1]
    names = list(names) if names is not None else [f"factor_{k}" for k in range(n_factors)]
    sizes = [int(s) for s in sizes] if sizes is not None else [int(m) + 1 for m in y.max(axis=0)]
    if categorical is None:
        categorical = default_categorical(names, sizes)
    targets = probe_targets(y, names, sizes, categorical)
    coords = direction_coordinates(latents, directions)
    if len(coords) != len(y):
        raise ValueError(f"{len(coords)} latents but {len(y)} label rows")
    assoc = np.array([[correlation_ratio(coords[:, j], y[:, k]) for j in range(coords.shape[1])]
                      for k in range(n_factors)]).reshape(n_factors, coords.shape[1])
    indices = assoc.argmax(axis=1)
    signs = np.ones(n_factors)
    for k, target in enumerate(targets):
        c = coords[:, indices[k]]
        if np.std(c) > 0 and np.std(target.values) > 0:
            signs[k] = 1.0 if np.corrcoef(c, target.values)[0, 1] >= 0 else -1.0
    return DirectionMatch(indices=indices, signs=signs, strengths=assoc[np.arange(n_factors), indices],
                          association=assoc)


def select_directions(directions: Directions, match: DirectionMatch, names: Sequence[str]) -> Directions:
    """The matched direction of each factor as a factor-aligned family ``[F, d]`` (signed; same
    name and stds), labelled e.g. ``posX: PC3 (η 0.91)``."""
    idx = torch.as_tensor(match.indices, dtype=torch.long)
    signs = torch.as_tensor(match.signs, dtype=torch.float32)
    return Directions(
        name=directions.name,
        vectors=directions.vectors[idx].float() * signs[:, None],
        stds=directions.stds[idx].float(),
        labels=[f"{name}: {directions.labels[int(j)].split(' ')[0]} (η {float(s):.2f})"
                for name, j, s in zip(names, match.indices, match.strengths)],
    )


# --------------------------------------------------------------------------- edit pipelines


LatentMap = Callable[[torch.Tensor], torch.Tensor]
"""``f(z [N, d]) -> [N, d]`` (CPU float32)."""


def denoise_function(
    model: Denoiser,
    sigma: SigmaFn,
    *,
    t_b: float,
    settings: SamplerSettings,
    start: StartMode = "noise_free",
    device: torch.device | str | Runtime = "cpu",
) -> LatentMap:
    """``z [N, d] at level t_b -> z_0 [N, d]``: the sampler run from t_b to 0.

    The only call of :func:`multibeta.sampling.edit.denoise_to_zero` here, with the sampler's
    ``settings``. The noise of row i depends only on the seed and i, so two calls on equally
    long inputs (an edited set and its unedited twin) draw the same noise.
    """

    def denoise(z: torch.Tensor) -> torch.Tensor:
        return denoise_to_zero(model, sigma, z, settings, t_b=t_b, start=start,
                               device=device, progress=False)

    return denoise


@dataclass(frozen=True)
class EditPipeline:
    """Images to latents at the edit level and (possibly moved) latents back to images.

    Attributes:
        t: the level the edit is made at.
        encode: ``images [N, C, H, W] in [0, 1] -> μ_t [N, d]``.
        render: ``z [N, d] at level t -> images [N, C, H, W] in [0, 1]`` (denoised to t = 0
            when a denoiser is given, then decoded with D(·, 0)).
    """

    t: float
    encode: Callable[[torch.Tensor], torch.Tensor]
    render: Callable[[torch.Tensor], torch.Tensor]


def edit_pipeline(
    encoder: Encoder,
    decoder: Decoder,
    *,
    t: float,
    denoise: LatentMap | None,
    batch_size: int,
    device: torch.device | str | Runtime = "cpu",
) -> EditPipeline:
    """The encode/render pair of one direction family.

    ``denoise`` (from :func:`denoise_function`) is applied before decoding at t = 0; ``None``
    decodes the edited latent directly at t = 0 (only meaningful for ``t = 0``: the
    "no denoiser" family).
    """
    if denoise is None and t != 0.0:
        raise ValueError(f"a pipeline without a denoiser must edit at t = 0 (got t = {t}): the "
                         "decoder D(·, 0) only reads t = 0 latents")

    def encode(images: torch.Tensor) -> torch.Tensor:
        return encode_images(encoder, images, t, batch_size=batch_size, device=device)

    def render(z: torch.Tensor) -> torch.Tensor:
        z0 = denoise(z) if denoise is not None else z
        return decode_latents(decoder, z0, t=0.0, batch_size=batch_size, device=device, progress=False)

    return EditPipeline(t=float(t), encode=encode, render=render)


def edit_latents(z: torch.Tensor, directions: Directions, k: int, amount: float) -> torch.Tensor:
    """``z [N, d]`` moved by ``amount · stds[k]`` along ``vectors[k]``."""
    step = float(amount) * directions.stds[k].float() * directions.vectors[k].float()
    return z.float() + step.to(z.device)[None, :]


def edit_images(
    images: torch.Tensor, directions: Directions, amounts: Sequence[float], pipeline: EditPipeline
) -> torch.Tensor:
    """Rendered edits ``[N, K, A, C, H, W]`` of images ``[N, C, H, W]``: image n moved along
    direction k by amount a (std units). Each (k, a) is rendered as its own batch of N, so
    image n draws the same sampler noise in every cell."""
    z = pipeline.encode(images)
    rows = [torch.stack([pipeline.render(edit_latents(z, directions, k, a)) for a in amounts], dim=1)
            for k in range(len(directions.vectors))]
    return torch.stack(rows, dim=1)
