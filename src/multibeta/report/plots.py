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
RECONSTRUCTION_KEYS = {"mse": "MSE (↓)", "lpips": "LPIPS (↓)"}
#: Scores in [0, 1] of the reconstructions (dSprites), on a second axis.
AGREEMENT_KEYS = {"recon_iou_to_input": "IoU to input (↑)", "recon_accuracy.shape": "shape accuracy (↑)"}


def plot_level_curves(levels: list[dict[str, Any]], out_png: str | os.PathLike, *, basis: str = "identity") -> Path:
    """Two panels over β (log axis): reconstruction error and disentanglement of μ_t in ``basis``."""
    betas = [lvl["beta"] for lvl in levels]
    prefix = "" if basis == "identity" else f"{basis}_"
    if prefix:
        levels = [{**lvl, **{k: lvl[prefix + k] for k in DISENTANGLEMENT_KEYS if prefix + k in lvl}}
                  for lvl in levels]
    fig, (ax_rec, ax_dis) = plt.subplots(1, 2, figsize=(10, 4))
    def series(key: str) -> tuple[list[float], list[float]]:
        """(β, value) of the levels that have ``key`` (disentanglement is scored at a subset)."""
        pts = [(b, lvl[key]) for b, lvl in zip(betas, levels) if lvl.get(key) is not None]
        return [p[0] for p in pts], [p[1] for p in pts]

    for key, label in RECONSTRUCTION_KEYS.items():
        if all(key in lvl for lvl in levels):
            ax_rec.plot(betas, [lvl[key] for lvl in levels], marker="o", label=label)
    ax_rec.set(xscale="log", xlabel="β", ylabel="error (held-out images)", title="reconstruction")
    handles, labels = ax_rec.get_legend_handles_labels()
    agreement = [(k, lab) for k, lab in AGREEMENT_KEYS.items() if all(k in lvl for lvl in levels)]
    if agreement:  # scores in [0, 1] on their own axis
        ax_agree = ax_rec.twinx()
        for (key, label), style in zip(agreement, ("s--", "^--")):
            ax_agree.plot(betas, [lvl[key] for lvl in levels], style, color="gray", label=label)
        ax_agree.set(ylabel="agreement with the input", ylim=(0, 1.02))
        more_h, more_l = ax_agree.get_legend_handles_labels()
        handles, labels = handles + more_h, labels + more_l
    ax_rec.legend(handles, labels, fontsize=8)
    for key, label in DISENTANGLEMENT_KEYS.items():
        xs, ys = series(key)
        if xs:
            ax_dis.plot(xs, ys, marker="o", label=label)
    ax_dis.set(xscale="log", xlabel="β", ylabel="score", title=f"disentanglement of μ_t, {basis} basis (↑)")
    if ax_dis.lines:
        ax_dis.legend()
    fig.tight_layout()
    out = Path(out_png)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out
