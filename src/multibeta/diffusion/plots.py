"""Plots of Stage-2 training: the loss of each head over steps."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from multibeta.utils.io import atomic_path  # noqa: E402

logger = logging.getLogger(__name__)


def read_train_log(path: str | os.PathLike) -> list[dict[str, float]]:
    """Rows of a ``train_log.csv`` as dicts of floats."""
    with open(path, newline="") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def plot_training_curves(
    logs: Mapping[str, Sequence[Mapping[str, float]] | str | os.PathLike],
    out_path: str | os.PathLike,
) -> Path:
    """Loss per head (total, ε, Δ) over steps, one line per run; PNG written atomically.

    Args:
        logs: run name (e.g. the variant) -> its log rows or the path of its train_log.csv.
        out_path: the PNG.
    """
    panels = (
        ("loss", "weighted total loss"),
        ("eps_loss", "ε loss  ‖ε − ε̂‖²/d"),
        ("delta_loss", "Δ loss  ‖(Δ − Δ̂)/s‖²/d"),
    )
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.2 * len(panels), 3.4), constrained_layout=True
    )
    for name, log in logs.items():
        rows = read_train_log(log) if isinstance(log, (str, os.PathLike)) else list(log)
        if not rows:
            continue
        steps = [r["step"] for r in rows]
        for ax, (key, _) in zip(axes, panels, strict=True):
            values = [r[key] for r in rows]
            if key == "delta_loss" and not any(values):
                continue  # variants without a Δ head
            ax.plot(steps, values, label=name, lw=1.2)
    for ax, (_, title) in zip(axes, panels, strict=True):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    logger.info("wrote %s", out_path)
    return out_path
