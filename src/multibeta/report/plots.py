"""Report figures: metrics against β over the cached levels."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from multibeta.utils.io import atomic_path  # noqa: E402

DISENTANGLEMENT_KEYS = {
    "mig": "MIG", "dci_disentanglement": "DCI disentanglement", "factorvae_score": "FactorVAE score",
    "sap": "SAP", "tad": "TAD",
}
RECONSTRUCTION_KEYS = {"mse": "MSE", "lpips": "LPIPS"}


def plot_level_curves(levels: list[dict[str, Any]], out_png: str | os.PathLike) -> Path:
    """Two panels over β (log axis): reconstruction error and disentanglement of μ_t."""
    betas = [lvl["beta"] for lvl in levels]
    fig, (ax_rec, ax_dis) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in RECONSTRUCTION_KEYS.items():
        if all(key in lvl for lvl in levels):
            ax_rec.plot(betas, [lvl[key] for lvl in levels], marker="o", label=label)
    ax_rec.set(xscale="log", xlabel="β", ylabel="error (held-out images)", title="reconstruction (↓)")
    ax_rec.legend()
    for key, label in DISENTANGLEMENT_KEYS.items():
        if all(key in lvl for lvl in levels):
            ax_dis.plot(betas, [lvl[key] for lvl in levels], marker="o", label=label)
    ax_dis.set(xscale="log", xlabel="β", ylabel="score", title="disentanglement of μ_t (↑)")
    if ax_dis.lines:
        ax_dis.legend()
    fig.tight_layout()
    out = Path(out_png)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out
