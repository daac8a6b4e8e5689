"""Diagnostics of the multi-β sampler's generation on a finished experiment, each a small table.

- ``bayes``: the trained denoiser's errors against the exact posterior over the training set.
  At each t, for validation latents z_t = μ_t(x) + σ_t ε, the relative errors ‖ε̂ − ε‖/‖ε‖ and
  ‖Δ̂ − Δ‖/‖Δ‖ of the network and of the empirical-Bayes predictor (posterior means of ε and Δ
  under the training rows' μ_t, softmax weights −‖z − μ_t(x_i)‖²/2σ_t²). Where the posterior's
  effective sample size is large (high t) the empirical-Bayes error is the least error any
  denoiser can reach, so a network near it has nothing left to learn there; where it is ≈ 1
  the empirical predictor memorises and its error is no bound.
- ``sample-size``: one sampler scored on 1,000 and on 2,000 samples (FD is biased upwards by a
  small sample set, so only runs of equal size may be compared).
- ``start``: the fitted Gaussian start against the empirical start z_1 = μ_1(x_i) + σ_1 ξ of
  random training rows, 10-step Heun and 25-step stochastic Heun (η = 0.7).
- ``oracle``: chains started from the true z_t = μ_t(x) + σ_t ξ of training images at several t,
  deterministic Heun against the ancestral chain: where a chain loses the data's factors.
- ``matched``: the ε errors of the multi-β denoiser and of the experiment's plain latent DDPM
  (``standard_ldm``) at equal log-SNR, on validation latents.
- ``noise``: how precise a latent must be to decode to a valid shape: the training images' μ_0
  plus isotropic Gaussian noise of std s (in latent units; μ_0 has a std near 1 per dimension),
  decoded and scored by every generation ruler. The valid fraction a sampler reaches says how
  far off the data's manifold its latents end; FD hardly sees that distance.
- ``ema``: each denoiser's EMA weights (what the pipeline samples with, ``diffusion.ema_decay``)
  against its last trained weights, the multi-β denoiser with 25 stochastic Heun steps, the
  plain DDPM with its 1000-step ancestral chain (2,000 samples each): whether the average
  over the last ~1/(1 − decay) steps helps or lags behind a learning rate that has decayed.

    .venv/bin/python benchmarks/generation_diagnostics.py bayes --experiment default
    .venv/bin/python benchmarks/generation_diagnostics.py sample-size start oracle matched --experiment default
    .venv/bin/python benchmarks/generation_diagnostics.py noise --experiment default
    .venv/bin/python benchmarks/generation_diagnostics.py ema --checkpoints results/default/ladder/*_lr3_s*/model.pt
    .venv/bin/python benchmarks/generation_diagnostics.py start oracle --denoiser results/default/ladder/L5_dlevel_s0/model.pt

Writes ``benchmarks/results/generation_diagnostics_<experiment>.md`` (one section per
diagnostic; a rerun replaces the sections it runs).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))
from generation_gap import Experiment  # noqa: E402
from multibeta.cache.latent_cache import LatentCache  # noqa: E402
from multibeta.core.schedules import sigma_rms  # noqa: E402
from multibeta.sampling.samplers import sample_latents  # noqa: E402
from multibeta.sampling.settings import SamplerSettings  # noqa: E402
from multibeta.utils.io import write_text  # noqa: E402
from multibeta.utils.versions import collect_versions  # noqa: E402

logger = logging.getLogger("benchmarks.generation_diagnostics")
BAYES_T = (0.1, 0.3, 0.5, 0.6, 0.65, 0.6875, 0.7, 0.72, 0.75, 0.78, 0.8, 0.85, 0.9, 0.95)


def empirical_bayes(cache: LatentCache, train: torch.Tensor, z: torch.Tensor, t: float,
                    sigma: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Posterior means of ε and Δ at ``z [B, d]`` under the training rows' μ_t (``sigma``: σ_t,
    one number or ``[d]`` for a per-dimension schedule), and the effective sample size of the
    posterior weights ``[B]`` (float64)."""
    times = torch.full((len(train),), t, dtype=torch.float64)
    mu, delta = (v.double() for v in cache.mu_and_delta_at(train, times))
    if isinstance(sigma, float):
        weights = torch.softmax(-torch.cdist(z.double(), mu) ** 2 / (2 * sigma**2), dim=1)
    else:  # diagonal Gaussian likelihood: distances in units of each dimension's σ
        sigma = sigma.double()
        weights = torch.softmax(-torch.cdist(z.double() / sigma, mu / sigma) ** 2 / 2, dim=1)
    eps = (z.double() - weights @ mu) / sigma
    return eps, weights @ delta, 1.0 / (weights**2).sum(1)


def bayes_table(exp: Experiment, model: torch.nn.Module, n: int, seed: int) -> str:
    cache = exp.cache
    train = torch.as_tensor(cache.rows("train"))
    rows = torch.as_tensor(cache.rows("validation")[:n])
    gen = torch.Generator().manual_seed(seed)
    lines = ["| t | σ_t (RMS over dimensions if per dimension) | ε error: network | ε error: empirical Bayes | Δ error: network | "
             "Δ error: empirical Bayes | posterior ESS (median) |", "|---|---|---|---|---|---|---|"]
    for t in BAYES_T:
        times = torch.full((len(rows),), t, dtype=torch.float64)
        mu, delta = cache.mu_and_delta_at(rows, times)
        sigma_t = model.sigma(torch.tensor([t]))[0]  # [] (shared σ_t) or [d]
        sigma = float(sigma_t) if sigma_t.ndim == 0 else sigma_t
        eps = torch.randn(mu.shape, generator=gen)
        z = mu + sigma * eps
        with torch.no_grad():
            eps_net, delta_net = model(z.float(), times.float())
        eps_b, delta_b, ess = empirical_bayes(cache, train, z, t, sigma)

        def rel(a: torch.Tensor, b: torch.Tensor) -> float:
            return float((a.double() - b.double()).norm() / b.double().norm())

        lines.append(f"| {t:g} | {float(sigma_rms(sigma_t.numpy())):.3f} | {rel(eps_net, eps):.3f} | {rel(eps_b, eps):.3f} | "
                     f"{rel(delta_net, delta):.3f} | {rel(delta_b, delta):.3f} | {float(ess.median()):.1f} |")
        logger.info(lines[-1])
    return "\n".join(lines)


def _score(exp: Experiment, z: torch.Tensor) -> dict[str, float]:
    return exp.score(exp.decode(z))


def sample_size_table(exp: Experiment, model: torch.nn.Module, runs: list[dict[str, Any]]) -> str:
    lines = ["| sampler | FD on 1,000 samples | FD on 2,000 samples |", "|---|---|---|"]
    for run in runs:
        fds = []
        for n in (1000, 2000):
            settings = SamplerSettings(variant="multibeta", spacing="uniform", seed=0, batch_size=1000, **run)
            z = sample_latents(model, model.sigma_table, settings, n=n, device=exp.runtime, prior=exp.prior,
                               progress=False)
            fds.append(_score(exp, z)["fd"])
        lines.append(f"| {run} | {fds[0]:.3f} | {fds[1]:.3f} |")
        logger.info(lines[-1])
    return "\n".join(lines)


SAMPLERS = {"heun10": dict(steps=10, eta=0.0, solver="heun"), "sheun25": dict(steps=25, eta=0.7, solver="heun")}


def start_table(exp: Experiment, model: torch.nn.Module, n: int) -> str:
    cache = exp.cache
    lines = ["| sampler | start | sampler seed | FD | valid | max TV |", "|---|---|---|---|---|---|"]
    for label, run in SAMPLERS.items():
        for seed in (0, 1):
            settings = SamplerSettings(variant="multibeta", spacing="uniform", seed=seed, batch_size=1000, **run)
            fitted = sample_latents(model, model.sigma_table, settings, n=n, device=exp.runtime,
                                    prior=exp.prior, progress=False)
            rows = np.random.default_rng(100 + seed).choice(cache.rows("train"), n, replace=True)
            mu_1 = torch.as_tensor(cache.level(cache.num_levels - 1)[rows])
            empirical = sample_latents(model, model.sigma_table, settings, device=exp.runtime, t_start=1.0,
                                       z_start=mu_1, start="forward", progress=False)
            for name, z in (("fitted Gaussian", fitted), ("empirical μ_1(x_i) + σ_1 ξ", empirical)):
                s = _score(exp, z)
                lines.append(f"| {label} | {name} | {seed} | {s['fd']:.3f} | {s['valid']:.3f} | {s['tv_max']:.3f} |")
                logger.info(lines[-1])
    return "\n".join(lines)


ORACLE_T = (0.5, 0.625, 0.75, 0.875)


def oracle_table(exp: Experiment, model: torch.nn.Module, n: int) -> str:
    cache = exp.cache
    rows = np.sort(np.random.default_rng(0).choice(cache.rows("train"), n, replace=False))
    mu_0 = torch.as_tensor(cache.level(0)[rows])
    s0 = _score(exp, mu_0)
    lines = ["| start | chain | FD | valid | TV of shape | max TV |", "|---|---|---|---|---|---|",
             f"| μ_0 of the same images, decoded | – | {s0['fd']:.3f} | {s0['valid']:.3f} | {s0['tv.shape']:.3f} | {s0['tv_max']:.3f} |"]
    for t in ORACLE_T:
        mu_t = cache.mu_at(torch.as_tensor(rows), torch.full((n,), t, dtype=torch.float64)).float()
        for name, run in ((f"Heun, {max(1, round(10 * t))} steps", dict(steps=10, eta=0.0, solver="heun")),
                          (f"ancestral, {round(1000 * t)} steps", dict(steps=1000, eta=1.0, solver="euler"))):
            settings = SamplerSettings(variant="multibeta", spacing="uniform", seed=0, batch_size=1000, **run)
            z = sample_latents(model, model.sigma_table, settings, device=exp.runtime, t_start=t, z_start=mu_t,
                               start="forward", progress=False)
            s = _score(exp, z)
            lines.append(f"| true z_t, t = {t:g} | {name} | {s['fd']:.3f} | {s['valid']:.3f} | {s['tv.shape']:.3f} | {s['tv_max']:.3f} |")
            logger.info(lines[-1])
    return "\n".join(lines)


MATCHED_T = (0.1, 0.3, 0.5, 0.6, 0.7, 0.75, 0.85)


def matched_table(exp: Experiment, model: torch.nn.Module, n: int) -> str:
    import math

    from multibeta.core.schedules import cosine_alpha_bar

    ldm = exp.denoiser("standard_ldm")
    cache = exp.cache
    rows = torch.as_tensor(cache.rows("validation")[:n])
    gen = torch.Generator().manual_seed(0)
    lines = ["| t | log-SNR λ | ε error: multibeta | ε error: plain DDPM at the same λ |", "|---|---|---|---|"]
    for t in MATCHED_T:
        times = torch.full((len(rows),), t, dtype=torch.float64)
        mu = cache.mu_at(rows, times).float()
        sigma = float(model.sigma(torch.tensor([t]))[0])
        lam = float(model.logsnr(times[:1])[0])
        eps = torch.randn(mu.shape, generator=gen)
        u = (2 / math.pi) * math.atan(math.exp(-lam / 2))  # the cosine time of the same λ
        abar = float(cosine_alpha_bar(torch.tensor([u], dtype=torch.float64))[0])
        z0 = ldm.normalize(cache.mu_at(rows, torch.zeros(len(rows), dtype=torch.float64)).float())
        with torch.no_grad():
            e_mb, _ = model(mu + sigma * eps, times.float())
            e_ldm, _ = ldm(math.sqrt(abar) * z0 + math.sqrt(1 - abar) * eps, torch.full((len(rows),), u))
        lines.append(f"| {t:g} | {lam:.2f} | {float((e_mb - eps).norm() / eps.norm()):.3f} | "
                     f"{float((e_ldm - eps).norm() / eps.norm()):.3f} |")
        logger.info(lines[-1])
    return "\n".join(lines)


NOISE_STD = (0.0, 0.01, 0.03, 0.05, 0.088, 0.15, 0.25)


def noise_table(exp: Experiment, n: int) -> str:
    """Generation rulers of decoded μ_0 + s·ξ for the std values :data:`NOISE_STD`."""
    cache = exp.cache
    rows = np.sort(np.random.default_rng(0).choice(cache.rows("train"), n, replace=False))
    mu_0 = torch.as_tensor(cache.level(0)[rows]).float()
    gen = torch.Generator().manual_seed(0)
    lines = [f"μ_0 std per dimension: {', '.join(f'{v:.2f}' for v in mu_0.std(0).tolist())}.", "",
             "| noise std s | FD | valid | TV of shape | max TV |", "|---|---|---|---|---|"]
    for std in NOISE_STD:
        s = _score(exp, mu_0 + std * torch.randn(mu_0.shape, generator=gen))
        lines.append(f"| {std:g} | {s['fd']:.3f} | {s['valid']:.3f} | {s['tv.shape']:.3f} | {s['tv_max']:.3f} |")
        logger.info(lines[-1])
    return "\n".join(lines)


#: the sampler each variant is scored with in :func:`ema_table`
EMA_SAMPLERS = {"multibeta": ("sheun25", dict(steps=25, eta=0.7, solver="heun")),
                "standard_ldm": ("anc1000", dict(steps=1000, eta=1.0, solver="euler"))}


def ema_table(exp: Experiment, checkpoints: list[Path], n: int) -> str:
    """FD and valid fraction of ``n`` samples of each checkpoint's EMA and last trained weights."""
    from multibeta.models.loading import load_denoiser, restore_sigma_table

    lines = ["| checkpoint | sampler | EMA weights: FD / valid | last weights: FD / valid |", "|---|---|---|---|"]
    for path in checkpoints:
        model, state = load_denoiser(path, map_location=exp.runtime.device)
        variant = state["variant"]
        if variant not in EMA_SAMPLERS:
            raise ValueError(f"{path}: a {variant} denoiser; the ema diagnostic scores "
                             f"{' and '.join(EMA_SAMPLERS)} checkpoints")
        name, sampler = EMA_SAMPLERS[variant]
        settings = SamplerSettings(variant=variant, spacing="uniform", seed=0, batch_size=1000, **sampler)
        cells = []
        for weights in ("ema", "model"):
            model.load_state_dict(state[weights])
            restore_sigma_table(model, state)
            z = sample_latents(model, model.sigma_table, settings, n=n, device=exp.runtime,
                               prior=None if variant == "standard_ldm" else exp.prior, progress=False)
            scores = _score(exp, z)
            cells.append(f"{scores['fd']:.3f} / {scores['valid']:.3f}")
        lines.append(f"| `{path}` | {name} | {cells[0]} | {cells[1]} |")
        logger.info(lines[-1])
    return "\n".join(lines)


def replace_section(text: str, title: str, body: str) -> str:
    """``text`` with the section ``## title`` replaced by (or appended as) ``body``."""
    section = f"## {title}\n\n{body}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        return pattern.sub(lambda _: section + "\n", text).rstrip() + "\n"
    return (text.rstrip() + "\n\n" if text.strip() else "") + section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("diagnostics", nargs="+", choices=["bayes", "sample-size", "start", "oracle", "matched", "noise", "ema"])
    parser.add_argument("--config", type=Path, default=REPO / "config.yaml")
    parser.add_argument("--experiment", default="default")
    parser.add_argument("--denoiser", type=Path, default=None,
                        help="a multibeta checkpoint other than the experiment's own")
    parser.add_argument("--checkpoints", type=Path, nargs="*", default=None,
                        help="ema: denoiser checkpoints (default: the experiment's multibeta and standard_ldm)")
    parser.add_argument("--n", type=int, default=1000, help="validation rows of the bayes table")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    exp = Experiment.from_config_file(args.config, args.experiment, args.threads)
    model = exp.denoiser("multibeta", args.denoiser)
    out = REPO / "benchmarks" / "results" / f"generation_diagnostics_{args.experiment}.md"
    text = out.read_text() if out.is_file() else f"# Generation diagnostics: {args.experiment}\n"
    commit = (collect_versions().get("git_commit") or "unknown")[:7]
    source = f"Denoiser `{args.denoiser or 'results/' + args.experiment + '/diffusion/multibeta/model.pt'}`, commit {commit}."
    heun10 = dict(steps=10, eta=0.0, solver="heun")
    label = "the experiment's denoiser" if args.denoiser is None else f"`{args.denoiser}`"
    for name in args.diagnostics:
        if name == "bayes":
            body = (f"{source} Relative errors on {args.n} validation rows (1 = predicting 0).\n\n"
                    + bayes_table(exp, model, args.n, seed=0))
            text = replace_section(text, "The denoiser against the exact posterior over the training set", body)
        elif name == "sample-size":
            runs = [heun10, dict(steps=1000, eta=1.0, solver="euler")]
            text = replace_section(text, "FD against the number of samples",
                                   f"{source}\n\n" + sample_size_table(exp, model, runs))
        elif name == "start":
            text = replace_section(text, f"Fitted against empirical start ({label})",
                                   f"{source} 2,000 samples.\n\n" + start_table(exp, model, 2000))
        elif name == "oracle":
            text = replace_section(text, f"Chains from the true z_t ({label})",
                                   f"{source} 2,000 training images.\n\n" + oracle_table(exp, model, 2000))
        elif name == "ema":
            checkpoints = args.checkpoints or [exp.base / "diffusion" / v / "model.pt" for v in EMA_SAMPLERS]
            text = replace_section(text, "EMA against the last trained weights",
                                   f"Commit {commit}; 2,000 samples per sampler, sampler seed 0.\n\n"
                                   + ema_table(exp, checkpoints, 2000))
        elif name == "noise":
            text = replace_section(text, "Valid fraction against latent noise",
                                   f"VAE `results/{args.experiment}/vae/model.pt`, commit {commit}; 2,000 training "
                                   "images, μ_0 + s·ξ decoded at t = 0.\n\n" + noise_table(exp, 2000))
        else:
            text = replace_section(text, "The ε errors of the two denoisers at equal log-SNR",
                                   f"{source} Plain DDPM `results/{args.experiment}/diffusion/standard_ldm/model.pt`; "
                                   f"relative errors on {args.n} validation rows.\n\n" + matched_table(exp, model, args.n))
        write_text(text, out)
    print(text)


if __name__ == "__main__":
    main()
