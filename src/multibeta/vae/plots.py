"""Diagnostic plots of Stage 1. Each function writes one PNG atomically (Agg, no pyplot state).

- :func:`plot_loss_curves`: loss terms over steps from ``train_log.csv``.
- :func:`plot_sigma_vs_beta`: σ_t against β (log x axis), the paper's first check.
- :func:`plot_kl_rec_vs_beta`: KL per latent dimension and reconstruction error against β.
- :func:`plot_recon_grid`: reconstructions of the same images at 8 β levels.
- :func:`write_vae_plots`: all of the above for one model (what rule ``vae_plots`` calls).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure

from multibeta.data.h5io import spread_positions
from multibeta.models.vae import MultiBetaVAE
from multibeta.utils.io import atomic_path
from multibeta.vae.config import EvalConfig
from multibeta.vae.evaluation import (
    LevelEvaluation,
    RecMetric,
    evaluate_levels,
    level_grid,
    prior_gap,
    reconstructions,
)
from multibeta.data.sources import ImageSource
from multibeta.vae.trainer import as_source


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


def read_log(csv_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Columns of a training CSV as float arrays (empty cells become NaN)."""
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{csv_path} has no rows")
    return {k: np.array([float(r[k]) if r.get(k) not in (None, "") else np.nan for r in rows])
            for k in rows[0]}


def plot_loss_curves(csv_path: str | os.PathLike, out_png: str | os.PathLike) -> Path:
    """Loss, reconstruction, KL, β·KL, gradient norm, σ and learning rate against step."""
    log = read_log(csv_path)
    panels = [("loss", ["loss"]), ("reconstruction", ["rec", "l1", "lpips"]),
              ("KL (nats)", ["kl", "beta_kl"]), ("GAN", ["g_loss", "d_loss", "d_weight"]),
              ("grad norm", ["grad_norm"]), ("sigma_t", ["sigma_0", "sigma_half", "sigma_1"]),
              ("learning rate", ["lr"])]
    panels = [(title, [k for k in keys if k in log]) for title, keys in panels]
    panels = [(title, keys) for title, keys in panels if keys]
    fig = Figure(figsize=(4.0 * len(panels), 3.2))
    for i, (title, keys) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for key in keys:
            ax.plot(log["step"], log[key], label=key)
        if title in ("loss", "reconstruction", "grad norm") and np.nanmin(
                np.concatenate([log[k] for k in keys])) > 0:
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("step")
        if len(keys) > 1:
            ax.legend(fontsize=7)
    return _save(fig, out_png)


@torch.no_grad()
def plot_sigma_vs_beta(model: MultiBetaVAE, out_png: str | os.PathLike, *, points: int = 201) -> Path:
    """σ_t against β(t) on a log β axis, with the t axis on top (one line per dimension when
    the schedule is staggered)."""
    device = next(model.parameters()).device
    t = torch.linspace(0.0, 1.0, points, device=device)
    beta = model.beta(t).cpu().numpy()
    sigma = model.posterior_sigma(t).cpu().numpy()  # [points, 1] or [points, d]
    fig = Figure(figsize=(5.0, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    if sigma.shape[1] == 1:
        ax.plot(beta, sigma[:, 0], label=f"sigma_t ({model.schedule.name})")
    else:
        colours = colormaps["viridis"](np.linspace(0.0, 1.0, sigma.shape[1]))
        for j in range(sigma.shape[1]):
            ax.plot(beta, sigma[:, j], color=colours[j], lw=1,
                    label=(f"sigma_t,j ({model.schedule.name}, stagger {model.sigma_stagger:g}): "
                           f"z0 (violet) ... z{sigma.shape[1] - 1} (yellow)") if j == 0 else None)
    if model.fixed_beta is not None:
        ax.axvline(model.fixed_beta, color="k", ls=":", label=f"fixed beta={model.fixed_beta:g}")
    ax.set_xscale("log")
    ax.set_xlabel("beta")
    ax.set_ylabel("sigma_t")
    ax.set_ylim(0.0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    top = ax.twiny()  # t of the same points (β is log-linear in t)
    top.set_xscale("log")
    top.set_xlim(ax.get_xlim())
    t_ticks = np.linspace(0.0, 1.0, 5)
    top.set_xticks(model.beta_min * np.exp(t_ticks * model.log_beta_ratio))
    top.set_xticklabels([f"{v:g}" for v in t_ticks])
    top.minorticks_off()
    top.set_xlabel("t")
    return _save(fig, out_png)


def plot_kl_rec_vs_beta(ev: LevelEvaluation, out_png: str | os.PathLike) -> Path:
    """KL per latent dimension (one line each) and reconstruction error against β."""
    fig = Figure(figsize=(10.0, 3.6))
    ax = fig.add_subplot(1, 2, 1)
    for j in range(ev.kl_per_dim.shape[1]):
        ax.plot(ev.beta, np.maximum(ev.kl_per_dim[:, j], 1e-5), marker=".", lw=1, label=f"z{j}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("beta")
    ax.set_ylabel("KL per dimension (nats)")
    ax.set_title(f"KL per latent dimension ({ev.num_images} held-out images)")
    if ev.kl_per_dim.shape[1] <= 16:
        ax.legend(fontsize=6, ncol=2)
    ax2 = fig.add_subplot(1, 2, 2)
    unit = "BCE (nats/image)" if ev.metric == "bce" else "MSE (per pixel)"
    ax2.plot(ev.beta, ev.rec_mean, marker="o", label="decode mu_t")
    ax2.plot(ev.beta, ev.rec_sample, marker="x", label="decode z_t ~ q")
    ax2.set_xscale("log")
    ax2.set_xlabel("beta")
    ax2.set_ylabel(unit)
    ax2.set_title("reconstruction error")
    ax2.legend(fontsize=8)
    return _save(fig, out_png)


def plot_recon_grid(model: MultiBetaVAE, images: torch.Tensor, out_png: str | os.PathLike, *,
                    levels: int = 8, t_levels: Sequence[float] | None = None) -> Path:
    """Originals (top row) and decoded μ_t at ``levels`` β values (one row each)."""
    device = next(model.parameters()).device
    t = np.linspace(0.0, 1.0, levels) if t_levels is None else np.asarray(t_levels)
    recs = reconstructions(model, images, t, device=device).numpy()  # [K, n, C, H, W]
    x = images.float().numpy() / (255.0 if images.dtype == torch.uint8 else 1.0)
    rows = np.concatenate([x[None], recs], axis=0)
    k, n = rows.shape[:2]
    beta = model.beta(torch.as_tensor(t, dtype=torch.float32)).numpy()
    fig = Figure(figsize=(1.0 * n + 1.0, 1.0 * k))
    for r in range(k):
        for c in range(n):
            ax = fig.add_subplot(k, n, r * n + c + 1)
            img = rows[r, c].transpose(1, 2, 0)
            ax.imshow(img[..., 0] if img.shape[2] == 1 else np.clip(img, 0, 1),
                      cmap="gray" if img.shape[2] == 1 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel("input" if r == 0 else f"b={beta[r - 1]:.3g}", fontsize=7)
    fig.subplots_adjust(wspace=0.03, hspace=0.03)
    return _save(fig, out_png)


def write_vae_plots(
    model: MultiBetaVAE,
    held_out: torch.Tensor | ImageSource | str | os.PathLike,
    log_csv: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    cfg: EvalConfig,
    *,
    metric: RecMetric,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """All Stage 1 figures for one trained model, plus the numbers behind them.

    Writes ``loss_terms.png`` (when ``log_csv`` is given), ``sigma_vs_beta.png``,
    ``kl_rec_vs_beta.png`` and ``recon_grid.png`` into ``out_dir``.

    Args:
        model: trained VAE on ``device``.
        held_out: held-out images (tensor, source, or dataset path: its validation split).
        log_csv: the training CSV.
        out_dir: folder of the PNGs.
        cfg: ``vae.evaluation`` (image counts, number of levels, batch size).
        metric: ``bce`` or ``mse`` (``multibeta.vae.evaluation.rec_metric_for``).

    Returns:
        ``{"plots": {name: path}, "levels": LevelEvaluation.to_dict(), "prior_gap": {...}}``.
    """
    out = Path(out_dir)
    source = as_source(held_out, split="validation")
    ev = evaluate_levels(model, source, level_grid(model, cfg.levels), metric=metric, device=device,
                         batch_size=cfg.batch_size, num_images=cfg.num_images)
    plots = {
        "sigma_vs_beta": plot_sigma_vs_beta(model, out / "sigma_vs_beta.png"),
        "kl_rec_vs_beta": plot_kl_rec_vs_beta(ev, out / "kl_rec_vs_beta.png"),
    }
    n = min(cfg.recon_images, len(source))
    t_grid = [model.fixed_t] if model.fixed_t is not None else None
    plots["recon_grid"] = plot_recon_grid(model, source.batch(spread_positions(len(source), n)), out / "recon_grid.png",
                                          t_levels=t_grid)
    if log_csv is not None:
        plots["loss_terms"] = plot_loss_curves(log_csv, out / "loss_terms.png")
    gap = prior_gap(model, source, device=device, batch_size=cfg.batch_size,
                    num_images=cfg.num_images) if model.fixed_t is None else None
    return {"plots": plots, "levels": ev.to_dict(), "prior_gap": gap}
