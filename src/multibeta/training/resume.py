"""The resume policy of every trainer, and where its resumable state goes by default.

A trainer writes its full state (weights, optimiser, RNGs, log rows) every few steps and
resumes from it when rerun. A state written with another config (or one that cannot be read)
is never resumed and never deleted: it is renamed ``<stem>.stale`` beside itself, a warning
names what differs, and training starts again from step 0.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable

import torch

from multibeta.utils.checkpoint import CheckpointError, load_checkpoint

logger = logging.getLogger(__name__)


def default_state_path(checkpoint_path: str | os.PathLike) -> Path:
    """The resumable state beside a final checkpoint: ``.<stem>.partial.pt``."""
    path = Path(checkpoint_path)
    return path.with_name(f".{path.stem}.partial.pt")


def stale_path(path: str | os.PathLike) -> Path:
    """Where a state that cannot be resumed is kept: ``path`` with the suffix ``.stale``."""
    return Path(path).with_suffix(".stale")


def load_resumable(
    path: str | os.PathLike,
    *,
    kind: str,
    differences: Callable[[dict[str, Any]], list[str]],
    map_location: str | torch.device = "cpu",
) -> dict[str, Any] | None:
    """The state at ``path`` when this run may continue it; None when training starts again.

    Args:
        path: the resumable state (or a final checkpoint).
        kind: the checkpoint kind it must have (``vae``, ``diffusion``).
        differences: one line per setting in which the state differs from this run
            (``vae.lr: checkpoint has 0.001, config asks for 0.0005``); empty when it may resume.
        map_location: where tensors are loaded (keep ``cpu`` when RNG states are inside).

    Returns:
        The loaded state, or None when there is no file or it was set aside as
        :func:`stale_path` (with a warning naming the differences).
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = load_checkpoint(path, kind=kind, map_location=map_location)
    except CheckpointError as exc:
        set_aside(path, f"it cannot be read ({exc})")
        return None
    diffs = differences(state)
    if not diffs:
        return state
    set_aside(path, "it was written with another config:\n  - " + "\n  - ".join(diffs))
    return None


def set_aside(path: str | os.PathLike, reason: str) -> Path:
    """Rename ``path`` to :func:`stale_path` (replacing an older one) with a warning; return it."""
    path = Path(path)
    stale = stale_path(path)
    os.replace(path, stale)
    logger.warning("not resuming from %s: %s\nkept as %s; training starts again from step 0",
                   path, reason, stale)
    return stale
