"""The generation ladder: from a plain latent DDPM to the multi-β denoiser, one ingredient at a time.

Every rung trains a denoiser on the latents of one finished experiment's VAE, with the same
network, the same number of training examples (the experiment's ``diffusion.steps`` ×
``batch_size``) and the same rulers (domain FD against the training images, valid fraction,
worst total variation of shape / scale / x / y), over several seeds:

- ``L0``: the plain latent DDPM (``standard_ldm``): cosine schedule on normalised t = 0 latents;
- ``L1``: the same Gaussian path on μ_0, but with the multi-β process's noise level: the
  ``noise_only`` denoiser on a cache whose every level is μ_0 and whose σ'_t is chosen so that
  λ'(t) = log(p_0/σ'_t²) equals the multi-β λ(t) = log(p(t)/σ_t²); trained and stepped
  uniformly in t;
- ``L2``: L1 trained with the cosine schedule's log-SNR density and stepped on the cosine
  grid carried over by λ (``t_density: cosine``, ``spacing: cosine``);
- ``L3``: the real μ_t path, ε head only (``noise_only``), as L2;
- ``L4``: L3 plus the Δ head (``multibeta``, the method), as L2;
- ``L5``: the method as the paper has it: uniform times, uniform grid.

Further rungs change one more option of L4 or L5 (:data:`RUNGS`): EDM's density (``L4_edm``),
the log-SNR time input (``L4_tin``), the density alone with the uniform grid (``L4_ugrid``),
the cache's level count and JVP Δ (``L5_k33``, ``L5_k65``, ``L5_jvp``), and the Δ loss relative
to each level's Δ scale (``L5_dlevel``, with λ_Δ 0.3 / 0.03: ``L5_dlevel_l03``,
``L5_dlevel_l003``). ``--diagnostics`` adds, for rungs with a Δ head, the pipeline's sharpening
scores and the Δ head's relative error per t.

Each (rung, seed) is scored with 10-step Heun (19 NFE) and the 1000-step ancestral sampler
on the rung's grid (``--heun100`` adds 100-step Heun), and written to
``benchmarks/results/generation_ladder/<rung>_s<seed>.json`` (``generation_ladder_<experiment>/`` for another experiment than ``default``); ``--summarise`` writes the table
(mean ± sd over seeds) to ``benchmarks/results/generation_ladder.md``. Models and the derived
μ_0 cache live under ``results/<experiment>/ladder/`` (not committed).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/generation_ladder.py --rungs L0 L1 --seeds 0 1 2 --threads 1
    .venv/bin/python benchmarks/generation_ladder.py --summarise
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))
from generation_gap import Experiment  # noqa: E402
from multibeta.cache.latent_cache import LatentCache  # noqa: E402
from multibeta.core import logsnr  # noqa: E402
from multibeta.diffusion.config import DiffusionConfig  # noqa: E402
from multibeta.diffusion.trainer import train_diffusion  # noqa: E402
from multibeta.models.loading import load_denoiser  # noqa: E402
from multibeta.sampling.samplers import GaussianPrior, sample_latents  # noqa: E402
from multibeta.sampling.settings import SamplerSettings  # noqa: E402
from multibeta.utils.io import write_json, write_text  # noqa: E402
from multibeta.utils.versions import collect_versions  # noqa: E402
from multibeta.workflow.config import section_defaults  # noqa: E402
from fd_sample_size import run_scores as fd_curve  # noqa: E402
from sharpen_start import sharpen_scores  # noqa: E402

logger = logging.getLogger("benchmarks.generation_ladder")
OUT_DIR = REPO / "benchmarks" / "results" / "generation_ladder"


def out_dir(experiment: str) -> Path:
    """Where the (rung, seed) results of ``experiment`` go: ``generation_ladder/`` for the
    default experiment, ``generation_ladder_<experiment>/`` for any other."""
    return OUT_DIR if experiment == "default" else OUT_DIR.with_name(f"{OUT_DIR.name}_{experiment}")

#: rung -> (variant, cache: "real" | "mu0" | cache-section overrides, diffusion overrides, sampler spacing, what it changes)
RUNGS: dict[str, dict[str, Any]] = {
    "L0": dict(variant="standard_ldm", cache="real", diffusion={}, spacing="uniform",
               what="plain latent DDPM (cosine schedule on normalised μ_0)"),
    "L1": dict(variant="noise_only", cache="mu0", diffusion={"t_density": "uniform"}, spacing="uniform",
               what="Gaussian path on μ_0 with the multi-β log-SNR(t), uniform t"),
    "L1_edm": dict(variant="noise_only", cache="mu0", diffusion={"t_density": "edm"}, spacing="uniform",
                   what="L1 trained with EDM's log-normal density: L5_dlevel_edm with μ_0 for μ_t and no Δ head"),
    "L2": dict(variant="noise_only", cache="mu0", diffusion={"t_density": "cosine"}, spacing="cosine",
               what="L1, trained and stepped as the cosine schedule in log-SNR"),
    "L3": dict(variant="noise_only", cache="real", diffusion={"t_density": "cosine"}, spacing="cosine",
               what="the real μ_t path, ε head only, as L2"),
    "L4": dict(variant="multibeta", cache="real", diffusion={"t_density": "cosine"}, spacing="cosine",
               what="L3 + the Δ head (the method), as L2"),
    "L5": dict(variant="multibeta", cache="real", diffusion={"t_density": "uniform"}, spacing="uniform",
               what="the method as the paper has it: uniform t, uniform grid"),
    "L4_ugrid": dict(variant="multibeta", cache="real", diffusion={"t_density": "cosine"}, spacing="uniform",
                     what="L4 stepped on the uniform grid"),
    "L4_lgrid": dict(variant="multibeta", cache="real", diffusion={"t_density": "cosine"}, spacing="logsnr",
                     what="L4 stepped evenly in log-SNR"),
    "L4_edm": dict(variant="multibeta", cache="real", diffusion={"t_density": "edm"}, spacing="cosine",
                   what="L4 with EDM's log-normal training density"),
    "L4_tin": dict(variant="multibeta", cache="real",
                   diffusion={"t_density": "cosine", "time_input": "logsnr"}, spacing="cosine",
                   what="L4 with the log-SNR time input"),
    # the path's discretisation: the cache's level count and its Δ targets, each against L5
    "L5_k33": dict(variant="multibeta", cache={"levels": 33}, diffusion={"t_density": "uniform"},
                   spacing="uniform", what="L5 on a cache of 33 levels (17 by default)"),
    "L5_k65": dict(variant="multibeta", cache={"levels": 65}, diffusion={"t_density": "uniform"},
                   spacing="uniform", what="L5 on a cache of 65 levels"),
    "L5_jvp": dict(variant="multibeta", cache={"delta": "jvp"}, diffusion={"t_density": "uniform"},
                   spacing="uniform", what="L5 with Δ by JVP at each level, interpolated (17 levels)"),
    "L5_dlevel": dict(variant="multibeta", cache="real",
                      diffusion={"t_density": "uniform", "delta_scale": "per_level"}, spacing="uniform",
                      what="L5 with the Δ loss relative to each level's Δ scale (delta_scale: per_level)"),
    "L5_dlevel_l03": dict(variant="multibeta", cache="real",
                          diffusion={"t_density": "uniform", "delta_scale": "per_level", "lambda_delta": 0.3},
                          spacing="uniform", what="L5_dlevel with lambda_delta 0.3"),
    "L5_dlevel_l003": dict(variant="multibeta", cache="real",
                           diffusion={"t_density": "uniform", "delta_scale": "per_level", "lambda_delta": 0.03},
                           spacing="uniform", what="L5_dlevel with lambda_delta 0.03"),
    # the noise head's parametrisation and the training density, each against L5_dlevel (L0 for L0_v)
    "L0_v": dict(variant="standard_ldm", cache="real", diffusion={"prediction": "v"}, spacing="uniform",
                 what="L0 with v-prediction"),
    "L0_edm": dict(variant="standard_ldm", cache="real", diffusion={"t_density": "edm"}, spacing="uniform",
                   what="L0 trained with EDM's log-normal density"),
    "L5_dlevel_v": dict(variant="multibeta", cache="real",
                        diffusion={"t_density": "uniform", "delta_scale": "per_level", "prediction": "v"},
                        spacing="uniform", what="L5_dlevel with the ε head predicting v (prediction: v)"),
    "L5_dlevel_cos": dict(variant="multibeta", cache="real",
                          diffusion={"t_density": "cosine", "delta_scale": "per_level"},
                          spacing="uniform", what="L5_dlevel trained with the cosine log-SNR density"),
    "L5_dlevel_edm": dict(variant="multibeta", cache="real",
                          diffusion={"t_density": "edm", "delta_scale": "per_level"},
                          spacing="uniform", what="L5_dlevel trained with EDM's log-normal density"),
    # the denoiser's optimisation and capacity at the default budget, each for both models
    # (against L5_dlevel_edm, the default multibeta recipe, and L0_edm)
    "L5_dlevel_edm_lr3": dict(variant="multibeta", cache="real",
                              diffusion={"t_density": "edm", "delta_scale": "per_level", "lr": 3e-3},
                              spacing="uniform", what="L5_dlevel_edm with lr 3e-3 (1e-3 by default)"),
    "L0_edm_lr3": dict(variant="standard_ldm", cache="real", diffusion={"t_density": "edm", "lr": 3e-3},
                       spacing="uniform", what="L0_edm with lr 3e-3"),
    "L5_dlevel_edm_w512": dict(variant="multibeta", cache="real",
                               diffusion={"t_density": "edm", "delta_scale": "per_level", "width": 512},
                               spacing="uniform", what="L5_dlevel_edm with width 512 (256 by default)"),
    "L0_edm_w512": dict(variant="standard_ldm", cache="real", diffusion={"t_density": "edm", "width": 512},
                        spacing="uniform", what="L0_edm with width 512"),
    "L5_edm": dict(variant="multibeta", cache="real", diffusion={"t_density": "edm", "delta_scale": "global"},
                   spacing="uniform", what="L5_dlevel_edm with one Δ scale for all t (delta_scale: global)"),
    # EDM's log-normal centred at lower noise (λ ~ N(4, 2.4²) instead of N(2.4, 2.4²)): more
    # training examples where validity is decided (σ_t ≲ 0.1); no config option, the rung sets
    # the module constant while it trains
    "L5_dlevel_edm_lr3_pm2": dict(variant="multibeta", cache="real",
                                  diffusion={"t_density": "edm", "delta_scale": "per_level", "lr": 3e-3},
                                  edm_p_mean=-2.0, spacing="uniform",
                                  what="L5_dlevel_edm_lr3 with EDM's P_mean -2.0 (-1.2 by default): λ centred at 4 instead of 2.4"),
    "L5_dlevel_edm_k33": dict(variant="multibeta", cache={"levels": 33},
                              diffusion={"t_density": "edm", "delta_scale": "per_level"}, spacing="uniform",
                              what="L5_dlevel_edm on a cache of 33 levels (17 by default)"),
}
# the default recipe's denoisers stepped on other grids (same models as L5_dlevel_edm_lr3)
for _grid in ("logsnr", "edm", "quadratic"):
    RUNGS[f"L5_dlevel_edm_lr3_{_grid}"] = dict(
        RUNGS["L5_dlevel_edm_lr3"], spacing=_grid,
        what=f"L5_dlevel_edm_lr3 stepped on the {_grid} grid (the same models; uniform in t by default)")
RUNGS["L5_dlevel_edm_logsnr"] = dict(RUNGS["L5_dlevel_edm"], spacing="logsnr",
                                     what="L5_dlevel_edm stepped evenly in log-SNR (the same models)")
#: rungs that reuse another rung's trained model (same training, other sampler grid)
SAME_MODEL = {"L4_ugrid": "L4", "L4_lgrid": "L4", "L5_dlevel_edm_logsnr": "L5_dlevel_edm",
              **{f"L5_dlevel_edm_lr3_{g}": "L5_dlevel_edm_lr3" for g in ("logsnr", "edm", "quadratic")}}
#: every sampler draws as many samples: FD is biased upwards by a small sample set (the default
#: run's 10-step Heun scores 2.06 with 1,000 samples and 1.49 with 2,000), so FDs are only
#: compared at equal n
N_SAMPLES = 2000
SAMPLERS = {
    "heun10": dict(steps=10, eta=0.0, solver="heun", n=N_SAMPLES),
    "anc1000": dict(steps=1000, eta=1.0, solver="euler", n=N_SAMPLES),
    "heun25": dict(steps=25, eta=0.0, solver="heun", n=N_SAMPLES),
    "sheun25": dict(steps=25, eta=0.7, solver="heun", n=N_SAMPLES),
    "heun100": dict(steps=100, eta=0.0, solver="heun", n=N_SAMPLES),
    "ddim50": dict(steps=50, eta=0.0, solver="euler", n=N_SAMPLES),
    # the same samplers on 5,000 samples (dsprites_long's pipeline runs draw as many)
    "sheun25_n5000": dict(steps=25, eta=0.7, solver="heun", n=5000),
    "anc1000_n5000": dict(steps=1000, eta=1.0, solver="euler", n=5000),
    # other ≤ 50-NFE samplers of the multi-β denoiser on 5,000 samples: fully stochastic Heun,
    # and the ancestral chain cut to 50 steps
    "sheun25_eta1_n5000": dict(steps=25, eta=1.0, solver="heun", n=5000),
    "anc50_n5000": dict(steps=50, eta=1.0, solver="euler", n=5000),
}
#: (sampler, score) columns of the summary table
SUMMARY_COLUMNS = (("heun10", "fd"), ("heun10", "valid"), ("heun10", "tv_max"), ("heun25", "fd"),
                   ("sheun25", "fd"), ("sheun25", "fd_inf"), ("sheun25", "valid"), ("anc1000", "fd"),
                   ("anc1000", "fd_inf"), ("anc1000", "valid"), ("heun100", "fd"), ("ddim50", "fd"),
                   ("ddim50", "valid"), ("sheun25_n5000", "fd"), ("sheun25_n5000", "fd_inf"),
                   ("sheun25_n5000", "valid"), ("anc1000_n5000", "fd"), ("anc1000_n5000", "fd_inf"),
                   ("anc1000_n5000", "valid"), ("sheun25_eta1_n5000", "fd"), ("sheun25_eta1_n5000", "valid"),
                   ("anc50_n5000", "fd"), ("anc50_n5000", "valid"))
#: column titles of the score keys
KEY_TITLES = {"fd": "FD", "fd_inf": "FD∞", "valid": "valid", "tv_max": "max TV"}
#: sample counts of results written before ``n`` was recorded (anc1000 then drew 1,000)
LEGACY_N = {"anc1000": 1000}


def score_n(scores: dict[str, Any], sampler: str) -> int | None:
    """How many samples a stored sampler score was computed on (None: not scored)."""
    if sampler not in scores:
        return None
    return int(scores[sampler].get("n", LEGACY_N.get(sampler, N_SAMPLES)))


def mu0_cache(cache: LatentCache, path: Path) -> Path:
    """A copy of ``cache`` whose every level is μ_0 and whose σ'_t gives the multi-β log-SNR.

    σ'_t = σ_t · sqrt(p_0/p(t)), p(t) the signal power (mean over dims of E[μ_t²] over the
    training rows, linearly interpolated between levels), so that log(p_0/σ'_t²) equals
    log(p(t)/σ_t²) at every t; made non-decreasing as a schedule must be.
    """
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    stats = cache.statistics(cache.rows("train"))
    power = (stats.var + stats.mean**2).mean(axis=1)  # [K]
    tmp = path.with_suffix(".tmp.h5")
    shutil.copyfile(cache.path, tmp)
    with h5py.File(tmp, "r+") as f:
        mu = f["mu"]
        mu0 = mu[:, 0, :]
        for k in range(mu.shape[1]):
            mu[:, k, :] = mu0
        if "delta" in f:
            f["delta"][...] = 0
        t, sched_t = f["t"][...], f["schedule_t"][...]
        f["sigma"][...] = f["sigma"][...] * np.sqrt(power[0] / power)
        ratio = np.sqrt(power[0] / np.interp(sched_t, t, power))
        f["schedule_sigma"][...] = np.maximum.accumulate(f["schedule_sigma"][...] * ratio)
    tmp.rename(path)
    return path


def variant_cache(exp: Experiment, overrides: dict[str, Any], runtime: Any) -> Path:
    """The experiment's VAE encoded into a cache with ``overrides`` of its ``cache`` section
    (e.g. ``{"levels": 33}``), built once under ``results/<experiment>/ladder/``."""
    from multibeta.cache.config import CacheConfig
    from multibeta.cache.latent_cache import cache_latents

    key = "_".join(f"{k}{v}" for k, v in sorted(overrides.items()))
    path = exp.base / "ladder" / f"cache_{key}.h5"
    if not path.is_file():
        cfg = CacheConfig.from_section(section_defaults("cache", {**exp.cfg["cache"], **overrides}))
        cache_latents(exp.base / "vae" / "model.pt", exp.dataset, path, cfg=cfg, runtime=runtime)
    return path


def rung_cache(exp: Experiment, spec: dict[str, Any], runtime: Any) -> Path:
    """The cache file a rung trains and samples on."""
    if spec["cache"] == "real":
        return exp.cache.path
    if spec["cache"] == "mu0":
        return mu0_cache(exp.cache, exp.base / "ladder" / "cache_mu0.h5")
    return variant_cache(exp, spec["cache"], runtime)


def run_name(rung: str, seed: int, steps: int | None) -> str:
    """``<rung>[_steps<N>]_s<seed>``: the file stem of a (rung, budget, seed)."""
    return f"{rung}{'' if steps is None else f'_steps{steps}'}_s{seed}"


def train_rung(exp: Experiment, rung: str, seed: int, runtime: Any, steps: int | None) -> tuple[Path, float]:
    """Train (or reuse) the denoiser of ``rung`` with diffusion.seed = ``seed`` (and ``steps``)."""
    spec = RUNGS[SAME_MODEL.get(rung, rung)]
    out = exp.base / "ladder" / run_name(SAME_MODEL.get(rung, rung), seed, steps)
    model_path = out / "model.pt"
    if model_path.is_file():
        return model_path, float("nan")
    cache_path = rung_cache(exp, spec, runtime)
    overrides = {**exp.cfg["diffusion"], **spec["diffusion"], "seed": seed}
    if steps is not None:
        overrides["steps"] = steps
    cfg = DiffusionConfig.from_section(section_defaults("diffusion", overrides))
    start = time.perf_counter()
    default_p_mean = logsnr.EDM_P_MEAN
    logsnr.EDM_P_MEAN = spec.get("edm_p_mean", default_p_mean)
    try:
        train_diffusion(cfg, variant=spec["variant"], cache=LatentCache(cache_path), model_path=model_path,
                        log_csv=out / "train_log.csv", runtime=runtime)
    finally:
        logsnr.EDM_P_MEAN = default_p_mean
    return model_path, time.perf_counter() - start


def sample_rung(exp: Experiment, rung: str, model: torch.nn.Module, cache: LatentCache, sampler: str,
                seed: int) -> torch.Tensor:
    spec, opts = RUNGS[rung], SAMPLERS[sampler]
    prior = None if spec["variant"] == "standard_ldm" else GaussianPrior.from_cache(cache)
    settings = SamplerSettings(variant=spec["variant"], steps=opts["steps"], eta=opts["eta"],
                               solver=opts["solver"], spacing=spec["spacing"], seed=seed, batch_size=1000)
    z = sample_latents(model, getattr(model, "sigma_table", None), settings, n=opts["n"],
                       device=exp.runtime, prior=prior, progress=False)
    return exp.decode(z)


#: times at which the Δ head's error is measured (diagnostic of :func:`delta_error`)
DELTA_ERROR_T = (0.1, 0.3, 0.5, 0.7, 0.9)


def delta_error(model: torch.nn.Module, cache: LatentCache, seed: int) -> dict[str, float]:
    """‖Δ̂ − Δ‖/‖Δ‖ over the validation rows at each of :data:`DELTA_ERROR_T` (z_t a forward
    draw); 1 is what Δ̂ = 0 scores, so above 1 the head moves the latent the wrong way."""
    rows = torch.as_tensor(cache.rows("validation"))
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    out = {}
    for t0 in DELTA_ERROR_T:
        t = torch.full((len(rows),), t0, dtype=torch.float64)
        mu, delta = cache.mu_and_delta_at(rows, t)
        z = mu + model.sigma_table.columns(t.float().to(device)).cpu() * torch.randn(mu.shape, generator=gen)
        with torch.no_grad():
            _, delta_hat = model(z.to(device), t.float().to(device))
        out[f"{t0:g}"] = float((delta_hat.cpu() - delta).norm() / delta.norm())
    return out


def pipeline_sharpening(exp: Experiment, model: torch.nn.Module) -> list[dict[str, float]]:
    """IoU to the input of decoded and denoised images at the experiment's sharpening levels,
    with the pipeline's sharpening settings (``sampling.sharpen``: start, steps, images)."""
    from multibeta.core.config import from_section
    from multibeta.sampling.config import SharpenConfig
    from multibeta.sampling.edit import spread_images

    cfg = from_section(SharpenConfig, section_defaults("sampling", exp.cfg["sampling"])["sharpen"],
                       "sampling.sharpen")
    scores = sharpen_scores(exp, model, cfg, spread_images(exp.dataset, cfg.split, cfg.n_metric_images))
    return [{"t_b": lv["t_b"], "decoded": lv["decoded"]["iou_to_input"],
             "denoised": lv["denoised"]["iou_to_input"]} for lv in scores["levels"]]


#: random subsets per sample count of the FD_∞ fit (benchmarks/fd_sample_size.py)
FD_INF_SUBSETS = 5


def run(exp: Experiment, rung: str, seed: int, samplers: list[str], runtime: Any,
        steps: int | None = None, result: dict[str, Any] | None = None,
        diagnostics: bool = False, fd_inf: bool = False) -> dict[str, Any]:
    """Train (or reuse) and score a (rung, seed); with an earlier ``result``, add only the
    samplers it lacks. With ``fd_inf``, each sampler's score also gets ``fd_inf`` (FD
    extrapolated to infinitely many samples, :func:`fd_sample_size.run_scores`), drawing the
    samples again for scores that lack it (sampling is seeded: the same samples)."""
    model_path, train_s = train_rung(exp, rung, seed, runtime, steps)
    model, _ = load_denoiser(model_path, map_location=runtime.device)
    spec = RUNGS[rung]
    cache = LatentCache(rung_cache(exp, spec, runtime))
    result = result or {"experiment": exp.base.name, "rung": rung, "seed": seed, "steps": steps, "what": spec["what"], "variant": spec["variant"],
                              "diffusion": {**spec["diffusion"], **({"edm_p_mean": spec["edm_p_mean"]} if "edm_p_mean" in spec else {})},
                              "cache": spec["cache"], "spacing": spec["spacing"], "train_s": train_s,
                              "versions": collect_versions(), "scores": {}}
    for name in samplers:
        n_old = score_n(result["scores"], name)
        if n_old == SAMPLERS[name]["n"]:
            if fd_inf and "fd_inf" not in result["scores"][name]:
                images = sample_rung(exp, rung, model, cache, name, seed)
                result["scores"][name].update(fd_inf_scores(exp, images))
            continue
        if n_old is not None:  # an older score on fewer samples: kept under its own name
            result["scores"][f"{name}_n{n_old}"] = result["scores"].pop(name)
        start = time.perf_counter()
        images = sample_rung(exp, rung, model, cache, name, seed)
        scores = exp.score(images)
        result["scores"][name] = {**scores, "n": SAMPLERS[name]["n"], "seconds": time.perf_counter() - start}
        if fd_inf:
            result["scores"][name].update(fd_inf_scores(exp, images))
        logger.info("%s seed %d %s: FD %.3f valid %.3f tv_max %.3f", rung, seed, name, scores["fd"],
                    scores["valid"], scores["tv_max"])
    if diagnostics and getattr(model, "predicts_delta", False):
        result.setdefault("delta_rel_error", delta_error(model, cache, seed))
        if "sharpen" not in result:
            result["sharpen"] = pipeline_sharpening(exp, model)
        logger.info("%s seed %d: Δ rel error %s, sharpening %s", rung, seed, result["delta_rel_error"],
                    [(lv["t_b"], round(lv["denoised"] - lv["decoded"], 3)) for lv in result["sharpen"]])
    return result


def fd_inf_scores(exp: Experiment, images: torch.Tensor) -> dict[str, float]:
    """``fd_inf`` (± ``fd_inf_se``) and ``fd_c`` of decoded samples [N, C, H, W] in [0, 1]."""
    curve = fd_curve(exp, images, FD_INF_SUBSETS)
    return {"fd_inf": curve["fd_inf"], "fd_inf_se": curve["fd_inf_se"], "fd_c": curve["c"]}


def summarise(folder: Path = OUT_DIR) -> str:
    rows: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(folder.glob("*_s*.json")):
        r = json.loads(path.read_text())
        rows.setdefault((r["rung"], r.get("steps")), []).append(r)
    order = sorted(rows, key=lambda key: (key[1] or 0, list(RUNGS).index(key[0])))
    lines = ["# Generation ladder", "",
             "Domain FD ↓, valid fraction ↑, max TV ↓: mean ± sd over seeds (n seeds in brackets); "
             "heun10 / heun25 / heun100: 10 / 25 / 100 Heun steps (19 / 49 / 199 NFE), sheun25: 25 "
             "stochastic Heun steps with η = 0.7 (49 NFE), anc1000: 1000-step ancestral, ddim50: 50 "
             f"deterministic Euler (DDIM) steps; {N_SAMPLES:,} samples each (`_n5000`: the same "
             "sampler on 5,000 samples; sheun25_eta1: η = 1; anc50: 50 ancestral steps, 50 NFE). Results of "
             "1000-step ancestral runs on 1,000 samples (written before every sampler drew as many) are "
             "left out: FD is larger on fewer samples. FD∞: the FD extrapolated to infinitely many "
             f"samples (FD_n = FD∞ + c/n fitted over {FD_INF_SUBSETS} random subsets of 500, 1,000, "
             "1,500, … samples and all of them; `--fd-inf`, benchmarks/fd_sample_size.py); a count in "
             "brackets: fewer seeds than the row has. Columns no rung has scored are left out.", ""]

    def cell(runs: list[dict[str, Any]], sampler: str, key: str) -> str:
        # only scores on the sampler's current sample count (FD depends on it)
        vals = [r["scores"][sampler][key] for r in runs
                if score_n(r["scores"], sampler) == SAMPLERS[sampler]["n"] and key in r["scores"][sampler]]
        if not vals:
            return "–"
        sd = f" ± {np.std(vals, ddof=1):.3f}" if len(vals) > 1 else ""
        fewer = f" [{len(vals)}]" if len(vals) < len(runs) else ""
        return f"{np.mean(vals):.3f}{sd}{fewer}"

    cells = {key: [cell(rows[key], s, k) for s, k in SUMMARY_COLUMNS] for key in order}
    shown = [j for j in range(len(SUMMARY_COLUMNS)) if any(c[j] != "–" for c in cells.values())]
    lines += ["| rung | what | denoiser steps (default: the experiment's) | seeds | "
              + " | ".join(f"{SUMMARY_COLUMNS[j][0]} {KEY_TITLES[SUMMARY_COLUMNS[j][1]]}" for j in shown) + " |",
              "|---|---|---|---|" + "---|" * len(shown)]
    for rung, steps in order:
        runs = rows[(rung, steps)]
        lines.append(f"| {rung} | {RUNGS[rung]['what']} | {steps or 'default'} | {len(runs)} | "
                     + " | ".join(cells[(rung, steps)][j] for j in shown) + " |")
    diag = [(key, runs) for key, runs in ((k, rows[k]) for k in order)
            if any("sharpen" in r for r in runs)]
    if diag:
        levels = [lv["t_b"] for lv in next(r for _, runs in diag for r in runs if "sharpen" in r)["sharpen"]]
        lines += ["", "Sharpening (the pipeline's `sampling.sharpen` settings): IoU to the input, denoised − "
                  "decoded, per t_b; Δ head: ‖Δ̂ − Δ‖/‖Δ‖ on validation rows at t (1 = predicting 0). "
                  "Mean ± sd over seeds.", "",
                  "| rung | seeds | " + " | ".join(f"sharpen t_b={lv:g}" for lv in levels) + " | "
                  + " | ".join(f"Δ err t={t:g}" for t in DELTA_ERROR_T) + " |",
                  "|---|---|" + "---|" * (len(levels) + len(DELTA_ERROR_T))]

        def mean_sd(vals: list[float]) -> str:
            return f"{np.mean(vals):+.3f}" + (f" ± {np.std(vals, ddof=1):.3f}" if len(vals) > 1 else "")

        for (rung, steps), runs in diag:
            runs = [r for r in runs if "sharpen" in r]
            sharp = [mean_sd([r["sharpen"][k]["denoised"] - r["sharpen"][k]["decoded"] for r in runs])
                     for k in range(len(levels))]
            err = [mean_sd([r["delta_rel_error"][f"{t:g}"] for r in runs]).lstrip("+") for t in DELTA_ERROR_T]
            name = rung if steps is None else f"{rung} ({steps} steps)"
            lines.append(f"| {name} | {len(runs)} | " + " | ".join(sharp + err) + " |")
    commits = sorted({(r.get("versions", {}).get("git_commit") or "unknown")[:7]
                      for runs in rows.values() for r in runs})
    lines += ["", f"Commits: {', '.join(commits)}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "config.yaml")
    parser.add_argument("--experiment", default="default")
    parser.add_argument("--rungs", nargs="*", default=[], choices=list(RUNGS))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--heun100", action="store_true", help="also score 100-step Heun")
    parser.add_argument("--samplers", nargs="*", default=[], choices=list(SAMPLERS),
                        help="further samplers to score (e.g. ddim50 for the plain DDPM)")
    parser.add_argument("--only", action="store_true",
                        help="score only the samplers named by --samplers (not heun10 and anc1000 too)")
    parser.add_argument("--steps", type=int, default=None,
                        help="denoiser steps instead of the experiment's (a longer budget)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--diagnostics", action="store_true",
                        help="also score sharpening and the Δ head's relative error (multibeta rungs)")
    parser.add_argument("--fd-inf", action="store_true",
                        help="also the FD extrapolated to infinitely many samples (drawing again where missing)")
    parser.add_argument("--summarise", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.rungs:
        exp = Experiment.from_config_file(args.config, args.experiment, args.threads)
        runtime = exp.runtime
        samplers = ([] if args.only else ["heun10", "anc1000"]) + (["heun100"] if args.heun100 else []) + args.samplers
        for rung in args.rungs:
            for seed in args.seeds:
                out = out_dir(args.experiment) / f"{run_name(rung, seed, args.steps)}.json"
                earlier = json.loads(out.read_text()) if out.is_file() else None
                if earlier is not None:
                    logger.info("%s exists: adding the samplers it lacks (delete it to rerun)", out)
                write_json(run(exp, rung, seed, samplers, runtime, args.steps, earlier, args.diagnostics,
                               args.fd_inf), out)
    if args.summarise or not args.rungs:
        folder = out_dir(args.experiment)
        text = summarise(folder)
        write_text(text, folder.with_suffix(".md"))
        print(text)


if __name__ == "__main__":
    main()
