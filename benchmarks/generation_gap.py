"""Why does (or doesn't) the multi-β sampler generate as well as a plain latent DDPM?

Runs on a finished experiment (its VAE, latent cache, denoisers, factor classifier and domain
reference features) and scores image sets with the same rulers as the pipeline: domain FD
against the training images, fraction of valid shapes (render consistency ≥ 0.9), worst
total-variation distance of the shape / scale / x / y distribution from the data's.

Diagnostics (``--diagnostics``), each an image set of ``--n`` images:

- ``data``: held-out images (the rulers' ceiling) and ``recon_t0``: their t = 0 reconstructions
  (the VAE's ceiling: no sampler on this VAE can do better);
- ``ldm_heun10`` / ``ldm_anc1000``: the standard_ldm baseline; ``mb_heun10`` / ``mb_anc1000``:
  the multibeta sampler from the fitted Gaussian start; ``noise_only_heun10``: without Δ;
- ``oracle_t<t>``: the multibeta sampler started at level t from the true forward process,
  z_t = μ_t(x) + σ_t ε for training images x (10-step Heun density). ``oracle_t1.00`` isolates
  the start distribution (true z_1 instead of the fitted Gaussian); lower t show how much of
  the error the chain accumulates below t;
- ``start_stats``: how much information the cached μ_1 still carries (KL per dimension of the
  posterior at t = 1, variance of μ_1 relative to σ_1²).

Fixes (``--fixes``): the multibeta denoiser retrained on the same cache with changed
``diffusion`` options (:data:`FIXES`; steps pinned so that each is compared with the
experiment's own 3,000-step denoiser), then sampled like ``mb_heun10`` / ``mb_anc1000``.

    .venv/bin/python benchmarks/generation_gap.py --experiment default [--fixes wide long]

The experiment's config is read from its report (``results/<exp>/report/metrics.json``) when
it exists, else from ``--config``.

Writes ``benchmarks/results/generation_gap_<experiment>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import functools
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
from multibeta.cache.latent_cache import LatentCache  # noqa: E402
from multibeta.data.h5io import ImageDataset  # noqa: E402
from multibeta.diffusion.config import DiffusionConfig  # noqa: E402
from multibeta.diffusion.trainer import train_diffusion  # noqa: E402
from multibeta.metrics.config import MetricsConfig  # noqa: E402
from multibeta.metrics.factor_classifier import load_factor_classifier  # noqa: E402
from multibeta.metrics.fidelity import compute_fidelity, factor_classifier_feature_space  # noqa: E402
from multibeta.metrics.render_consistency import score_images  # noqa: E402
from multibeta.models.loading import load_denoiser  # noqa: E402
from multibeta.models.vae import load_vae  # noqa: E402
from multibeta.sampling.samplers import GaussianPrior, decode_latents, sample_latents  # noqa: E402
from multibeta.sampling.settings import SamplerSettings  # noqa: E402
from multibeta.sampling.spacing import level_steps  # noqa: E402
from multibeta.utils.device import select_runtime  # noqa: E402
from multibeta.utils.io import write_json, write_text  # noqa: E402
from multibeta.utils.versions import collect_versions  # noqa: E402
from multibeta.workflow.config import resolve_config, section_defaults  # noqa: E402
from multibeta.workflow.experiments import classifier_id, dataset_id, expand_experiments  # noqa: E402

logger = logging.getLogger("benchmarks.generation_gap")
OUT_DIR = REPO / "benchmarks" / "results"
DIAGNOSTICS = ("data", "recon_t0", "ldm_heun10", "ldm_anc1000", "mb_heun10", "mb_anc1000",
               "noise_only_heun10", "oracle_t1.00", "oracle_t0.75", "oracle_t0.50", "oracle_t0.25")
#: name -> diffusion overrides of a retrained multibeta denoiser.
FIXES: dict[str, dict[str, Any]] = {
    "long": {"steps": 9000},
    "long_lambda0.1": {"steps": 9000, "lambda_delta": 0.1},
    "wide": {"steps": 3000, "width": 512},
    "deep": {"steps": 3000, "depth": 6},
    "lambda0.01": {"steps": 3000, "lambda_delta": 0.01},
    "lambda0.03": {"steps": 3000, "lambda_delta": 0.03},
    "lambda0.1": {"steps": 3000, "lambda_delta": 0.1},
    "lambda0.3": {"steps": 3000, "lambda_delta": 0.3},
    "lambda10": {"steps": 3000, "lambda_delta": 10.0},
    "snr": {"steps": 3000, "weighting": "snr"},
    "min_snr": {"steps": 3000, "weighting": "min_snr"},
    "batch1024": {"steps": 3000, "batch_size": 1024},
}
HEUN10 = {"steps": 10, "eta": 0.0, "solver": "heun"}
ANC1000 = {"steps": 1000, "eta": 1.0, "solver": "euler"}


class Experiment:
    """Paths and models of a finished experiment."""

    def __init__(self, config: dict[str, Any], name: str, runtime: Any) -> None:
        cfg = expand_experiments(config)[name]
        self.cfg = cfg
        root = Path(cfg["results_dir"])
        self.base = root / name
        data_dir = root / "datasets" / dataset_id(cfg["data"])
        self.dataset = data_dir / "dataset.h5"
        self.classifier_path = data_dir / classifier_id(cfg) / "model.pt"
        self.reference = self.base / "metrics" / "reference" / "factor_classifier.pt"
        self.runtime = runtime
        self.vae, _ = load_vae(self.base / "vae" / "model.pt", map_location=runtime.device)
        self.vae.eval().requires_grad_(False)
        self.cache = LatentCache(self.base / "cache" / "latents.h5")
        self.classifier, _ = load_factor_classifier(self.classifier_path)
        self.metrics_cfg = MetricsConfig.from_section(section_defaults("metrics", cfg["metrics"]))
        self.space = factor_classifier_feature_space(self.classifier_path)
        self.train_classes = ImageDataset(self.dataset, split="train", max_memory_bytes=0).factor_classes()

    @classmethod
    def from_config_file(cls, path: Path, name: str, threads: int | None) -> "Experiment":
        """Experiment ``name`` of the config file at ``path``, on the pipeline's device and
        precision (``compute.device``, ``compute.precision``: bf16 autocast where native) with
        ``threads`` CPU threads."""
        import yaml

        config = resolve_config(yaml.safe_load(path.read_text()))
        compute = config["compute"]
        return cls(config, name, select_runtime(compute["device"], compute["precision"], threads))

    @functools.cached_property
    def prior(self) -> GaussianPrior:
        """The fitted start of the multibeta / noise_only samplers (:meth:`GaussianPrior.from_cache`)."""
        return GaussianPrior.from_cache(self.cache)

    def denoiser(self, variant: str, path: Path | None = None) -> torch.nn.Module:
        model, _ = load_denoiser(path or self.base / "diffusion" / variant / "model.pt",
                                 map_location=self.runtime.device)
        return model

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return decode_latents(self.vae.decode_image, z, t=0.0, batch_size=500, device=self.runtime, progress=False)

    def score(self, images: torch.Tensor) -> dict[str, float]:
        fid = compute_fidelity(images, None, self.space, self.runtime, self.metrics_cfg.generation, seed=0,
                               reference_cache=self.reference)
        ruler = score_images(self.classifier, images, reference_classes=self.train_classes)
        out = {"fd": fid["fid"], "kid": fid["kid_mean"], "valid": ruler["valid_fraction"],
               "render_iou": ruler["render_iou"], "tv_max": ruler["tv_max"]}
        out.update({k: ruler[k] for k in ruler if k.startswith("tv.")})
        return out


def sample(exp: Experiment, variant: str, settings: dict[str, Any], n: int, *, model: torch.nn.Module | None = None,
           seed: int = 0) -> torch.Tensor:
    """Decoded samples of a variant from its start (fitted Gaussian for multibeta/noise_only)."""
    model = model if model is not None else exp.denoiser(variant)
    prior = None
    if variant != "standard_ldm":
        prior = exp.prior
    sampler = SamplerSettings(variant=variant, spacing="uniform", seed=seed, batch_size=1000, **settings)
    z = sample_latents(model, getattr(model, "sigma_table", None), sampler, n=n, device=exp.runtime,
                       prior=prior, progress=False)
    return exp.decode(z)


def oracle(exp: Experiment, t: float, n: int, seed: int = 0) -> torch.Tensor:
    """Multibeta samples started at level t from the true z_t = μ_t(x) + σ_t ε of training images."""
    model = exp.denoiser("multibeta")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(exp.cache.rows("train"), n, replace=False))
    mu = exp.cache.mu_at(torch.as_tensor(rows), torch.full((n,), t, dtype=torch.float64)).float()
    sampler = SamplerSettings(variant="multibeta", steps=level_steps(10, t), eta=0.0, solver="heun",
                              spacing="uniform", seed=seed, batch_size=1000)
    z = sample_latents(model, model.sigma_table, sampler, device=exp.runtime, t_start=t, z_start=mu,
                       start="forward", progress=False)
    return exp.decode(z)


def start_stats(exp: Experiment) -> dict[str, float]:
    """Information left at t = 1: mean KL(N(μ_1, σ_1²) || N(0, 1)) per dimension and Var μ_1 / σ_1²."""
    mu = exp.cache.level(exp.cache.num_levels - 1).astype(np.float64)
    s = float(exp.cache.sigma[-1])
    kl = 0.5 * (mu**2 + s**2 - 1.0) - np.log(s)
    return {"kl_per_dim_t1": float(kl.mean()), "kl_total_t1": float(kl.sum(1).mean()),
            "var_mu1_over_sigma1sq": float(mu.var(0).mean() / s**2), "sigma_1": s}


def run_diagnostic(exp: Experiment, name: str, n: int) -> tuple[dict[str, float], float]:
    start = time.perf_counter()
    if name in ("data", "recon_t0"):
        val = ImageDataset(exp.dataset, split="val")
        images = val.tensor_batch(np.arange(min(n, len(val))))
        if name == "recon_t0":
            with torch.no_grad():
                t = torch.zeros(1)
                images = exp.vae.decode_image(exp.vae.encode(images, t), t)
    elif name.startswith("oracle_t"):
        images = oracle(exp, float(name.removeprefix("oracle_t")), n)
    else:
        variant = {"ldm": "standard_ldm", "mb": "multibeta", "noise": "noise_only"}[name.split("_")[0]]
        images = sample(exp, variant, HEUN10 if name.endswith("heun10") else ANC1000, n)
    seconds = time.perf_counter() - start
    return exp.score(images), seconds


def run_fix(exp: Experiment, name: str, n: int) -> dict[str, Any]:
    """Retrain the multibeta denoiser with FIXES[name] on the same cache; sample and score."""
    overrides = {**exp.cfg["diffusion"], **FIXES[name]}
    cfg = DiffusionConfig.from_section(section_defaults("diffusion", overrides))
    out_dir = OUT_DIR / "generation_gap_models" / name
    start = time.perf_counter()
    path = train_diffusion(cfg, variant="multibeta", cache=exp.cache, model_path=out_dir / "model.pt",
                           log_csv=out_dir / "train_log.csv", runtime=exp.runtime)
    train_s = time.perf_counter() - start
    model = exp.denoiser("multibeta", path)
    return {"overrides": FIXES[name], "train_s": train_s,
            "mb_heun10": exp.score(sample(exp, "multibeta", HEUN10, n, model=model)),
            "mb_anc1000": exp.score(sample(exp, "multibeta", ANC1000, n, model=model))}


def markdown(result: dict[str, Any]) -> str:
    cols = ("fd", "valid", "render_iou", "tv_max", "tv.shape", "tv.scale", "tv.posX", "tv.posY")
    lines = [f"# Generation gap on experiment `{result['experiment']}`", "",
             f"{result['n']} images per set; start statistics: `{json.dumps(result.get('start_stats', {}))}`", "",
             "| set | " + " | ".join(cols) + " | seconds |", "|---|" + "---|" * (len(cols) + 1)]
    for name, row in result["diagnostics"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row['scores'][c]:.3f}" for c in cols) + f" | {row['seconds']:.1f} |")
    for name, fix in result.get("fixes", {}).items():
        for run in ("mb_heun10", "mb_anc1000"):
            lines.append(f"| fix `{name}` {json.dumps(fix['overrides'])} {run} | "
                         + " | ".join(f"{fix[run][c]:.3f}" for c in cols) + f" | {fix['train_s']:.0f} (train) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "config.yaml")
    parser.add_argument("--experiment", default="default")
    parser.add_argument("--diagnostics", nargs="*", default=list(DIAGNOSTICS), choices=DIAGNOSTICS)
    parser.add_argument("--fixes", nargs="*", default=[], choices=sorted(FIXES))
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import yaml

    config = resolve_config(yaml.safe_load(args.config.read_text()))
    # the finished run's own config (its report records it): the config file may have moved on
    recorded = Path(config["results_dir"]) / args.experiment / "report" / "metrics.json"
    if recorded.is_file():
        config = resolve_config({**json.loads(recorded.read_text())["config"], "sweep": []})
    runtime = select_runtime("cpu", "fp32", args.threads)
    exp = Experiment(config, args.experiment, runtime)
    out_json = OUT_DIR / f"generation_gap_{args.experiment}.json"
    result: dict[str, Any] = json.loads(out_json.read_text()) if out_json.is_file() else {}
    result.update(experiment=args.experiment, n=args.n, versions=collect_versions(), start_stats=start_stats(exp))
    result.setdefault("diagnostics", {})
    result.setdefault("fixes", {})
    for name in args.diagnostics:
        scores, seconds = run_diagnostic(exp, name, args.n)
        result["diagnostics"][name] = {"scores": scores, "seconds": seconds}
        logger.info("%s: %s (%.1f s)", name, json.dumps({k: round(v, 4) for k, v in scores.items()}), seconds)
        write_json(result, out_json)
    for name in args.fixes:
        result["fixes"][name] = run_fix(exp, name, args.n)
        logger.info("fix %s: %s", name, result["fixes"][name])
        write_json(result, out_json)
    write_text(markdown(result), out_json.with_suffix(".md"))
    print(markdown(result))


if __name__ == "__main__":
    main()
