"""Does the ICA basis stay put? Local optima of FastICA on a finished run's codes, and what a restart count buys.

The report leads with scores in the ICA basis, and FastICA on a VAE's codes (close to Gaussian)
has several local optima: one start lands in one or another depending on its seed and on the
last bits of the codes. For each disentanglement level of a finished run's latent cache this
script

1. runs ``--starts`` seeded FastICA starts on the codes the metrics fit (the same rows and
   settings as ``metrics.ica``), groups the converged ones into distinct optima
   (:func:`multibeta.utils.bases.distinct_optima`) and scores each optimum's basis (FactorVAE,
   MIG): how far the scores of the optima lie apart, and how large each optimum's basin is;
2. for each restart count in ``--restarts``, fits the basis as the metrics do (best of R starts
   by the ICA objective) on the codes and on ``--perturbations`` copies perturbed by 1e-6 of
   their std, and reports the largest change of each score (the reproducibility the report needs).

    .venv/bin/python benchmarks/ica_stability.py --run results/default --restarts 1 32

Writes ``benchmarks/results/ica_stability.json`` and ``benchmarks/results/ica_stability.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
from multibeta.cache.latent_cache import LatentCache  # noqa: E402
from multibeta.metrics.config import MetricsConfig, select_levels  # noqa: E402
from multibeta.metrics.factorvae import compute_factorvae  # noqa: E402
from multibeta.metrics.levels import Labels  # noqa: E402
from multibeta.metrics.mig import compute_mig  # noqa: E402
from multibeta.utils.bases import distinct_optima, fit_basis, fit_ica_restarts  # noqa: E402
from multibeta.utils.io import write_json, write_text  # noqa: E402
from multibeta.utils.versions import collect_versions  # noqa: E402
from multibeta.workflow.config import section_defaults  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "ica_stability"
PERTURBATION = 1e-6  # of each dimension's std


def scores(codes: np.ndarray, labels: Labels, cfg: MetricsConfig) -> dict[str, float]:
    """FactorVAE score and MIG of ``codes`` [N, K] (already in the basis)."""
    return {
        "factorvae": compute_factorvae(codes, labels.factor_classes, cfg.factorvae, seed=cfg.seed)["factorvae_score"],
        "mig": compute_mig(codes, labels.factor_classes, cfg.mig, seed=cfg.seed)["mig"],
    }


def perturbed(codes: np.ndarray, draw: int) -> np.ndarray:
    rng = np.random.default_rng(1000 + draw)
    return codes + PERTURBATION * codes.std(axis=0) * rng.standard_normal(codes.shape)


def level_study(codes: np.ndarray, labels: Labels, cfg: MetricsConfig, starts: int, restarts: list[int],
                perturbations: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    fits = fit_ica_restarts(codes, seed=cfg.seed, settings=dataclasses.replace(cfg.ica, restarts=starts))
    optima = []
    for fit, count in distinct_optima(fits):
        optima.append({"objective": fit.objective, "starts": count, "basin": count / starts,
                       **scores(fit.basis.transform(codes), labels, cfg)})
    out: dict[str, Any] = {"starts": starts, "converged": sum(f.converged for f in fits),
                           "fit_s_per_start": (time.perf_counter() - t0) / starts, "optima": optima}
    per_r = []
    for r in restarts:
        ica = dataclasses.replace(cfg.ica, restarts=r)
        base = scores(fit_basis(codes, "ica", seed=cfg.seed, ica=ica).transform(codes), labels, cfg)
        moved = {key: 0.0 for key in base}
        for draw in range(perturbations):
            noisy = perturbed(codes, draw)
            other = scores(fit_basis(noisy, "ica", seed=cfg.seed, ica=ica).transform(noisy), labels, cfg)
            moved = {key: max(moved[key], abs(other[key] - base[key])) for key in base}
        # probability that R starts miss the best optimum, from its basin in the starts above
        p_best = optima[0]["basin"] if optima else 0.0
        per_r.append({"restarts": r, **base, "max_change": moved, "p_miss_best": (1 - p_best) ** r})
    out["restarts"] = per_r
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# ICA basis stability", "",
        f"Run `{result['run']}`, commit {result['commit']}; command: `{result['command']}`.",
        f"Machine: {result['machine']}.", "",
        "## Local optima of FastICA per level", "",
        f"{result['starts']} seeded starts per level (metrics.ica max_iter/tol), converged starts grouped into "
        "distinct optima (every component matched up to sign with |cos| > 0.99); basin = share of the starts "
        "that reached the optimum.", "",
        "| t | optimum | objective ×1e3 | basin | FactorVAE | MIG |", "|---|---|---|---|---|---|",
    ]
    for level in result["levels"]:
        for i, o in enumerate(level["optima"]):
            lines.append(f"| {level['t']:.3f} | {i + 1} | {1e3 * o['objective']:.3f} | {o['basin']:.2f} | "
                         f"{o['factorvae']:.3f} | {o['mig']:.3f} |")
    lines += ["", f"## Reported scores under a {PERTURBATION:g} perturbation of the codes", "",
              f"Best of R starts by the ICA objective, on the codes and on {result['perturbations']} perturbed copies; "
              "max change = largest |score(perturbed) − score(codes)|; P(miss) = (1 − basin of the best optimum)^R.",
              "", "| t | R | FactorVAE | max change | MIG | max change | P(miss best) |", "|---|---|---|---|---|---|---|"]
    for level in result["levels"]:
        for r in level["restarts"]:
            lines.append(f"| {level['t']:.3f} | {r['restarts']} | {r['factorvae']:.3f} | {r['max_change']['factorvae']:.3f} | "
                         f"{r['mig']:.3f} | {r['max_change']['mig']:.3f} | {r['p_miss_best']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", default="results/default", help="a finished run's results folder")
    parser.add_argument("--config", default="config.yaml", help="its config (the metrics section)")
    parser.add_argument("--starts", type=int, default=64, help="starts for the optima census")
    parser.add_argument("--restarts", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--perturbations", type=int, default=2)
    parser.add_argument("--dataset", help="the run's dataset file (default: the prepared dSprites file)")
    args = parser.parse_args()
    run = REPO / args.run
    metrics = (yaml.safe_load((REPO / args.config).read_text()) or {}).get("metrics", {})
    cfg = MetricsConfig.from_section(section_defaults("metrics", metrics))
    cache = LatentCache(run / "cache" / "latents.h5")
    dataset = args.dataset or sorted(glob.glob(str(REPO / "results" / "datasets" / "dsprites-*" / "dataset.h5")))[0]
    labels = Labels.from_dataset(dataset, np.asarray(cache.index))
    levels = []
    for k in select_levels(np.asarray(cache.t), cfg.levels):
        study = level_study(cache.level(int(k)), labels, cfg, args.starts, args.restarts, args.perturbations)
        levels.append({"t": float(cache.t[k]), **study})
        print(f"t={cache.t[k]:.3f}: {len(study['optima'])} optima, {study['restarts']}", flush=True)
        write_result(args, levels)  # after every level: a long run cut short keeps what it measured


def write_result(args: argparse.Namespace, levels: list[dict[str, Any]]) -> None:
    result = {
        "run": args.run, "starts": args.starts, "perturbations": args.perturbations, "levels": levels,
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                 text=True).stdout.strip(),
        "command": "python benchmarks/ica_stability.py " + " ".join(sys.argv[1:]),
        "machine": f"{os.cpu_count()} CPU cores, load {os.getloadavg()[0]:.2f}",
        "versions": collect_versions(),
    }
    write_json(result, OUT.with_suffix(".json"))
    write_text(markdown(result), OUT.with_suffix(".md"))


if __name__ == "__main__":
    main()
