"""Choose ``vae.loss_weighting`` by measurement: none vs inv_beta vs normalized.

One multi-β VAE per weighting (default ``vae`` config otherwise, same seed and data) is
trained for a short run on procedural dSprites; each is then evaluated on held-out images at
evenly spaced levels t_k. At each level the quantity a dedicated β_k-VAE would minimise,
J_k = rec_k + β_k · KL_k (posterior sample decoded; nats per image), is compared across
weightings: regret_k(w) = J_k(w) / min_w' J_k(w') − 1. The weighting with the lowest mean
regret over levels (the best trade-off across the whole β range) is the proposed default;
training stability (non-finite losses) and the monotonicity of KL and reconstruction error
in β are recorded as well.

    python benchmarks/vae_loss_weighting.py [--steps 1000] [--threads 2]

Writes ``benchmarks/results/vae_loss_weighting.json``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from multibeta.data.dsprites import generate_dsprites
from multibeta.models.vae import load_vae
from multibeta.training.errors import NonFiniteLossError
from multibeta.utils.device import select_runtime
from multibeta.utils.io import write_json
from multibeta.utils.versions import collect_versions
from multibeta.vae.config import VAEConfig
from multibeta.vae.evaluation import evaluate_levels
from multibeta.vae.trainer import train_vae
from multibeta.workflow.config import section_defaults

logger = logging.getLogger("benchmarks.vae_loss_weighting")
OUT = Path(__file__).resolve().parent / "results" / "vae_loss_weighting.json"
WEIGHTINGS = ("none", "inv_beta", "normalized")


def run_one(cfg: VAEConfig, train: torch.Tensor, held_out: torch.Tensor, levels: int, threads: int) -> dict:
    """Train one weighting and evaluate it; returns per-level arrays and the training summary."""
    runtime = select_runtime("cpu", "fp32", threads)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        try:
            result = train_vae(cfg, train, checkpoint_path=Path(tmp) / "m.pt", log_csv=None,
                               runtime=runtime, progress=False)
        except NonFiniteLossError as exc:
            return {"stable": False, "error": str(exc)}
        train_s = time.perf_counter() - t0
        model, _ = load_vae(Path(tmp) / "m.pt")
    ev = evaluate_levels(model, held_out, np.linspace(0, 1, levels), metric="bce",
                         generator=torch.Generator().manual_seed(0))
    return {
        "stable": True,
        "train_s": train_s,
        "summary_final": result.summary["final"],
        "sigma_grid": result.summary["sigma_grid"],
        "eval": ev.to_dict(),
        "objective": (ev.rec_sample + ev.beta * ev.kl).tolist(),
        "kl_monotone": bool(np.all(np.diff(ev.kl) < 0)),
        "rec_sample_monotone": bool(np.all(np.diff(ev.rec_sample) > 0)),
        "rec_mean_monotone": bool(np.all(np.diff(ev.rec_mean) > 0)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-images", type=int, default=20000)
    parser.add_argument("--held-out", type=int, default=1000)
    parser.add_argument("--levels", type=int, default=11)
    parser.add_argument("--weightings", nargs="+", default=list(WEIGHTINGS))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    data = generate_dsprites(args.train_images + args.held_out, seed=0, progress=False).images
    perm = np.random.default_rng(0).permutation(len(data))
    train = torch.from_numpy(data[perm[: args.train_images]])
    held_out = torch.from_numpy(data[perm[args.train_images:]])
    runs = {}
    for name in args.weightings:
        cfg = VAEConfig.from_section(section_defaults("vae", {"loss_weighting": name, "steps": args.steps}))
        logger.info("training with loss_weighting=%s (%d steps)", name, args.steps)
        runs[name] = run_one(cfg, train, held_out, args.levels, args.threads)
    stable = [n for n in runs if runs[n]["stable"]]
    obj = np.array([runs[n]["objective"] for n in stable])  # [W, K]
    regret = obj / obj.min(axis=0, keepdims=True) - 1.0
    for i, name in enumerate(stable):
        runs[name]["regret"] = regret[i].tolist()
        runs[name]["mean_regret"] = float(regret[i].mean())
        runs[name]["max_regret"] = float(regret[i].max())
        logger.info("%-10s mean regret %.4f, max regret %.4f, KL monotone %s, rec monotone %s",
                    name, regret[i].mean(), regret[i].max(), runs[name]["kl_monotone"],
                    runs[name]["rec_sample_monotone"])
    best = stable[int(np.argmin(regret.mean(axis=1)))]
    logger.info("lowest mean regret: %s", best)
    base = VAEConfig.from_section(section_defaults("vae", {"steps": args.steps}))
    write_json({
        "benchmark": "vae_loss_weighting",
        "description": __doc__.split("\n\n")[1].replace("\n", " "),
        "steps": args.steps,
        "threads": args.threads,
        "train_images": args.train_images,
        "held_out_images": args.held_out,
        "config": {k: v for k, v in base.to_dict().items() if k != "loss_weighting"},
        "runs": runs,
        "best_mean_regret": best,
        "versions": collect_versions(),
    }, args.out)
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
