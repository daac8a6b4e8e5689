"""How does the multi-β VAE's code change with β? A diagnostic of a finished experiment's cache.

For every cached level t: the total variance of μ_t, the fraction of it that a linear map from
μ_0 explains (R² of the least-squares fit μ_t ≈ μ_0 W), the singular values of W, and σ_t.
R² ≈ 1 with singular values ≈ 1 means μ_t is μ_0 rotated: the encoder keeps one code for every β
and the information is removed by the growing posterior noise σ_t, not by reorganising the
code. Since every disentanglement score is computed from the code alone, such levels score
(nearly) the same in every rotation-invariant basis (PCA, ICA); only the axis-aligned scores
move, with the rotation.

    .venv/bin/python benchmarks/latent_geometry.py --experiment default

Writes ``benchmarks/results/latent_geometry_<experiment>.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
from multibeta.cache.latent_cache import LatentCache  # noqa: E402
from multibeta.utils.io import write_text  # noqa: E402


def linear_map(mu_0: np.ndarray, mu_t: np.ndarray) -> tuple[float, np.ndarray]:
    """R² of the least-squares linear map from centred μ_0 to centred μ_t, and its singular values."""
    a = mu_0 - mu_0.mean(0)
    b = mu_t - mu_t.mean(0)
    w, *_ = np.linalg.lstsq(a, b, rcond=None)
    r2 = 1.0 - float(((b - a @ w) ** 2).sum() / max((b**2).sum(), 1e-300))
    return r2, np.linalg.svd(w, compute_uv=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="default")
    parser.add_argument("--results", type=Path, default=REPO / "results")
    args = parser.parse_args()
    cache = LatentCache(args.results / args.experiment / "cache" / "latents.h5")
    mu_0 = cache.level(0).astype(np.float64)
    lines = [f"# How μ_t relates to μ_0 (experiment `{args.experiment}`)", "",
             f"`.venv/bin/python benchmarks/latent_geometry.py --experiment {args.experiment}`; "
             f"{cache.num_items} cached images, d = {mu_0.shape[1]}.", "",
             "| t | β | σ_t | total variance of μ_t | R² of μ_t from μ_0 (linear) | singular values of the map |",
             "|---|---|---|---|---|---|"]
    for k in range(cache.num_levels):
        mu_t = cache.level(k).astype(np.float64)
        r2, sv = linear_map(mu_0, mu_t)
        lines.append(f"| {cache.t[k]:.3f} | {cache.beta[k]:.3g} | {cache.sigma[k]:.3f} | {mu_t.var(0).sum():.3f} | "
                     f"{r2:.4f} | {' '.join(f'{v:.2f}' for v in sv)} |")
    out = REPO / "benchmarks" / "results" / f"latent_geometry_{args.experiment}.md"
    write_text("\n".join(lines) + "\n", out)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
