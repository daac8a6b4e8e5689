"""Checkpoints: atomic save, and loading that explains mismatches instead of tracebacks.

A checkpoint is a dict saved with ``torch.save``. It always carries:

- ``kind``: what it is (``"vae"``, ``"diffusion"``, ``"factor_classifier"``, ...);
- ``arch``: the architecture-defining config (a plain dict); loading with another ``arch``
  raises :class:`CheckpointMismatchError` naming the differing keys;
- ``versions``: from :func:`multibeta.utils.versions.collect_versions`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from multibeta.utils.io import atomic_path


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable, or of the wrong kind."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint was written for a different architecture/config."""


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Save ``state`` atomically (temporary file, then rename)."""
    for key in ("kind", "arch"):
        if key not in state:
            raise ValueError(f"checkpoint state needs a '{key}' entry")
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def diff_configs(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """One line per differing (nested, dotted) key: what the checkpoint has vs what is asked."""
    diffs = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, "<missing>"), b.get(key, "<missing>")
        if isinstance(va, dict) and isinstance(vb, dict):
            diffs += diff_configs(va, vb, f"{prefix}{key}.")
        elif va != vb:
            diffs.append(f"{prefix}{key}: checkpoint has {va!r}, config asks for {vb!r}")
    return diffs


def load_checkpoint(
    path: str | os.PathLike,
    *,
    kind: str,
    arch: dict[str, Any] | None = None,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Load a checkpoint and check its kind and (optionally) its architecture config.

    Raises:
        CheckpointError: missing/corrupt file or wrong kind, with the path and a fix.
        CheckpointMismatchError: ``arch`` differs; the message lists each differing key.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises several types for truncated/corrupt files
        raise CheckpointError(
            f"checkpoint {path} is unreadable or corrupt ({type(exc).__name__}: {exc}). "
            "Delete it and rerun the rule that produces it."
        ) from exc
    if not isinstance(state, dict) or state.get("kind") != kind:
        found = state.get("kind") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not a '{kind}' checkpoint (found {found!r}).")
    if arch is not None:
        diffs = diff_configs(state.get("arch", {}), arch)
        if diffs:
            raise CheckpointMismatchError(
                f"{path} was written for another architecture/config:\n  - "
                + "\n  - ".join(diffs)
                + "\nUse the matching config, or delete the checkpoint to train from scratch."
            )
    return state
