"""FactorVAE disentanglement score.

Kim & Mnih, "Disentangling by Factorising", ICML 2018 (arXiv:1802.05983); implementation
as google-research/disentanglement_lib ``evaluation/metrics/factor_vae.py``:

1. global variance s_d^2 of each code dimension over ``n_variance_estimate`` images
   (ddof=1); dimensions with s_d < ``prune_threshold`` are "collapsed" and ignored
   (disentanglement_lib's study configs use 0.05);
2. one vote: draw a factor k uniformly, a batch of ``batch_size`` images sharing one value
   of factor k, and take ``argmin_d var_batch(z_d) / s_d^2`` over the active dimensions;
   the vote is the pair (k, d);
3. ``n_train`` votes build a majority-vote classifier d -> k; the score is its accuracy
   on ``n_eval`` fresh votes (``factorvae_score``; also ``factorvae_train_accuracy``).

An identity-like code scores 1 (the fixed factor's dimension has zero batch variance);
a code unrelated to the factors scores about chance, max(votes per dim)/votes ~ 1/F.

Sampling from a finite image table (:class:`FixedFactorSampler`) instead of a generative
dataset: a batch with factor k fixed is drawn by picking an anchor row uniformly (so a
value is chosen with probability proportional to its frequency, which is uniform over
values for a uniform random subset of a full product dataset such as dSprites) and then
``batch_size`` rows with the anchor's value of k, without replacement; the other factors
vary as they do in the table. What happens when a subset lacks items:

- values of k held by a single row are never chosen (no variance from one item);
- a value held by fewer than ``batch_size`` rows gives a smaller batch made of all its
  rows (no duplicates, so the ddof=1 variance stays unbiased); the number of such batches
  is reported as ``factorvae_small_batches``;
- a factor with no value held by two rows (e.g. constant factors are dropped first; a
  factor whose values are all unique) raises ``ValueError`` naming the factor.

Deviations from disentanglement_lib, none of which changes the score: votes are indexed
by the original dimension (disentanglement_lib indexes by position among active
dimensions), and ``factorvae_active_dims`` counts active dimensions (disentanglement_lib
reports the mask's length). Dimensions with zero global variance are always inactive
(else 0/0).
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence, Union

import numpy as np

from multibeta.metrics.config import FactorVaeConfig
from multibeta.metrics.utils import Timer, select_varying_factors

logger = logging.getLogger(__name__)

#: A representation: a precomputed code array [N, D] indexed by table row, or a function
#: from row indices [B] to codes [B, D] (e.g. encode images read at those rows).
Representation = Union[np.ndarray, Callable[[np.ndarray], np.ndarray]]


class FixedFactorSampler:
    """Draws rows of a factor table that share the value of one factor.

    Args:
        factor_classes: int [N, F] factor class indices (rows = images).
        factor_names: names used in error messages.

    Raises:
        ValueError: a factor has no value held by at least two rows.
    """

    def __init__(self, factor_classes: np.ndarray, factor_names: Sequence[str] | None = None) -> None:
        table = np.asarray(factor_classes)
        if table.ndim != 2:
            raise ValueError(f"factor_classes must be [N, F], got {table.shape}")
        self.num_rows, self.num_factors = table.shape
        names = list(factor_names) if factor_names is not None else [f"factor_{j}" for j in range(self.num_factors)]
        # Per factor: rows sorted by value; for each eligible row (value count >= 2) the
        # start and length of its value's run in that order.
        self._order: list[np.ndarray] = []
        self._eligible: list[np.ndarray] = []
        self._run_start: list[np.ndarray] = []
        self._run_len: list[np.ndarray] = []
        for k in range(self.num_factors):
            order = np.argsort(table[:, k], kind="stable")
            _, starts, counts = np.unique(table[order, k], return_index=True, return_counts=True)
            run_of_pos = np.repeat(np.arange(len(starts)), counts)
            pos_ok = counts[run_of_pos] >= 2
            if not pos_ok.any():
                raise ValueError(
                    f"FactorVAE score: no value of factor '{names[k]}' is held by two or more of the "
                    f"{self.num_rows} rows, so no batch with that factor fixed can be drawn. "
                    "Use more images (metrics.factorvae) or drop the factor."
                )
            self._order.append(order)
            self._eligible.append(np.flatnonzero(pos_ok))
            self._run_start.append(starts[run_of_pos[pos_ok]])
            self._run_len.append(counts[run_of_pos[pos_ok]])

    def sample(self, factor: int, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        """Rows [min(batch_size, run length)] sharing one value of ``factor``, without replacement."""
        j = rng.integers(len(self._eligible[factor]))
        start, length = self._run_start[factor][j], self._run_len[factor][j]
        take = min(batch_size, int(length))
        picks = rng.choice(int(length), size=take, replace=False) if take < length else np.arange(length)
        return self._order[factor][start + picks]


def _as_function(representation: Representation) -> Callable[[np.ndarray], np.ndarray]:
    if callable(representation):
        return lambda rows: np.asarray(representation(rows), dtype=np.float64)
    codes = np.asarray(representation, dtype=np.float64)
    if codes.ndim != 2:
        raise ValueError(f"a code array must be [N, D], got {codes.shape}")
    return lambda rows: codes[rows]


def _votes(
    represent: Callable[[np.ndarray], np.ndarray],
    sampler: FixedFactorSampler,
    factors: np.ndarray,
    num_points: int,
    batch_size: int,
    global_var: np.ndarray,
    active: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, int]:
    """Votes [F_used, D] (factor, argmin dim) and the number of batches smaller than batch_size."""
    active_idx = np.flatnonzero(active)
    votes = np.zeros((len(factors), len(global_var)), dtype=np.int64)
    small = 0
    for _ in range(num_points):
        f = int(rng.integers(len(factors)))
        rows = sampler.sample(int(factors[f]), batch_size, rng)
        small += len(rows) < batch_size
        local_var = np.var(represent(rows), axis=0, ddof=1)
        d = active_idx[np.argmin(local_var[active_idx] / global_var[active_idx])]
        votes[f, d] += 1
    return votes, small


def _factorvae(
    represent: Callable[[np.ndarray], np.ndarray],
    factor_classes: np.ndarray,
    factors: np.ndarray,
    cfg: FactorVaeConfig,
    rng: np.random.Generator,
    factor_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """Core of the score: ``factors`` are the column indices of ``factor_classes`` to use."""
    sampler = FixedFactorSampler(factor_classes, factor_names)
    n = factor_classes.shape[0]
    var_rows = rng.choice(n, size=min(cfg.n_variance_estimate, n), replace=False)
    global_var = np.var(represent(np.sort(var_rows)), axis=0, ddof=1)
    active = (np.sqrt(global_var) >= cfg.prune_threshold) & (global_var > 0)
    if not active.any():
        logger.warning("FactorVAE score: every code dimension is collapsed (std < %g)", cfg.prune_threshold)
        return {"factorvae_score": 0.0, "factorvae_train_accuracy": 0.0, "factorvae_active_dims": 0,
                "factorvae_small_batches": 0}
    train_votes, small_train = _votes(represent, sampler, factors, cfg.n_train, cfg.batch_size, global_var, active, rng)
    classifier = np.argmax(train_votes, axis=0)
    dims = np.arange(train_votes.shape[1])
    train_acc = train_votes[classifier, dims].sum() / train_votes.sum()
    eval_votes, small_eval = _votes(represent, sampler, factors, cfg.n_eval, cfg.batch_size, global_var, active, rng)
    eval_acc = eval_votes[classifier, dims].sum() / eval_votes.sum()
    small = small_train + small_eval
    if small:
        logger.warning("FactorVAE score: %d of %d batches had fewer than %d rows sharing the fixed value",
                       small, cfg.n_train + cfg.n_eval, cfg.batch_size)
    return {
        "factorvae_score": float(eval_acc),
        "factorvae_train_accuracy": float(train_acc),
        "factorvae_active_dims": int(active.sum()),
        "factorvae_small_batches": int(small),
    }


def compute_factorvae(
    representation: Representation,
    factor_classes: np.ndarray,
    cfg: FactorVaeConfig,
    *,
    seed: int,
    factor_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """FactorVAE score of a representation over a table of images with factor classes.

    Args:
        representation: codes [N, D] aligned with ``factor_classes`` rows (the pipeline
            passes the cached mu_t), or a function rows [B] -> codes [B, D] (see
            :func:`image_representation`).
        factor_classes: int [N, F] factor class indices; constant factors are dropped.
        cfg: ``metrics.factorvae`` options.
        seed: seed of all draws.
        factor_names: names for messages.

    Returns:
        ``factorvae_score`` (evaluation accuracy), ``factorvae_train_accuracy``,
        ``factorvae_active_dims``, ``factorvae_small_batches``, ``factorvae_n_factors``,
        ``seed``, ``elapsed_s``.
    """
    timer = Timer()
    table = np.asarray(factor_classes)
    if not callable(representation) and len(representation) != len(table):
        raise ValueError(f"codes has {len(representation)} rows but factor_classes has {len(table)}")
    keep, names = select_varying_factors(table, factor_names)
    rng = np.random.default_rng(seed)
    result = _factorvae(_as_function(representation), table, np.flatnonzero(keep), cfg, rng, factor_names)
    result["factorvae_n_factors"] = len(names)
    logger.info("FactorVAE score %.4f (train %.4f, %d active dims)", result["factorvae_score"],
                result["factorvae_train_accuracy"], result["factorvae_active_dims"])
    return timer.finish(result, seed)


def image_representation(
    encode: Callable[[np.ndarray], np.ndarray],
    read_images: Callable[[np.ndarray], np.ndarray],
) -> Callable[[np.ndarray], np.ndarray]:
    """A representation function rows -> codes from an image reader and an encoder.

    Args:
        encode: images (as ``read_images`` returns them) -> codes [B, D].
        read_images: rows [B] -> images, e.g. ``ImageDataset.uint8_batch`` or
            ``lambda rows: multibeta.data.h5io.read_images(path, rows)``.
    """
    return lambda rows: np.asarray(encode(read_images(np.asarray(rows))))
