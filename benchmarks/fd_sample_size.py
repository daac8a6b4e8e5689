"""FD against the number of samples, and its extrapolation to infinitely many, per sampling run.

The Fréchet distance between a finite sample set and the reference is biased upwards, by a term
close to c/n for n samples (Chong & Forsyth, "Effectively Unbiased FID and Inception Score and
where to find them", CVPR 2020), and c differs between models: a ratio of two FDs read at one n
mixes the models' distances with their bias terms. This script scores each sampling run of a
finished experiment on random subsets of n of its samples for several n (the pipeline's ruler:
the domain FD in the factor classifier's feature space against the experiment's reference
features; ``--subsets`` seeded subsets per n below the run's size, the mean taken), fits
FD_n = FD_∞ + c/n by least squares over every subset's FD, and writes the mean FDs, the fitted
FD_∞ (± its standard error) and c, and each run's ratio to the best ``standard_ldm`` run at
every n and at n = ∞.

    .venv/bin/python benchmarks/fd_sample_size.py --config configs/dsprites_long.yaml --experiment dsprites_long

Writes ``benchmarks/results/fd_sample_size_<experiment>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))
from generation_gap import Experiment  # noqa: E402

from multibeta.metrics.fidelity import compute_fidelity  # noqa: E402
from multibeta.sampling.store import read_samples  # noqa: E402
from multibeta.utils.io import write_json, write_text  # noqa: E402
from multibeta.utils.versions import collect_versions  # noqa: E402

logger = logging.getLogger("benchmarks.fd_sample_size")
#: sample counts tried (those above a run's size are skipped)
COUNTS = (500, 1000, 1500, 2000, 2500, 3000, 4000, 5000)


def fit_unbiased(counts: list[int], fds: list[float]) -> tuple[float, float, float]:
    """(FD_∞, c, standard error of FD_∞) of the least-squares line FD_n = FD_∞ + c/n through
    the points (counts[i], fds[i])."""
    a = np.stack([np.ones(len(counts)), 1.0 / np.asarray(counts, dtype=np.float64)], axis=1)
    y = np.asarray(fds, dtype=np.float64)
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    dof = max(len(y) - 2, 1)
    resid_var = float(((y - a @ coef) ** 2).sum()) / dof
    se = float(np.sqrt(resid_var * np.linalg.inv(a.T @ a)[0, 0]))
    return float(coef[0]), float(coef[1]), se


def run_scores(exp: Experiment, images: np.ndarray | Any, subsets: int) -> dict[str, Any]:
    """FD of seeded random subsets of ``images`` ``[N, C, H, W]`` (uint8, or a float tensor in
    [0, 1]) at each count of
    :data:`COUNTS` up to N (one subset, all images, at N itself) and the fit through them."""
    rng = np.random.default_rng(0)
    counts = [n for n in COUNTS if n < len(images)] + [len(images)]
    points, means = [], []
    for n in counts:
        fds = []
        for _ in range(1 if n == len(images) else subsets):
            pick = np.sort(rng.choice(len(images), n, replace=False)).tolist()
            fid = compute_fidelity(images[pick], None, exp.space, exp.runtime, exp.metrics_cfg.generation,
                                   seed=0, reference_cache=exp.reference)
            fds.append(float(fid["fid"]))
            points.append((n, fds[-1]))
        means.append(float(np.mean(fds)))
    fd_inf, c, se = fit_unbiased([p[0] for p in points], [p[1] for p in points])
    return {"counts": counts, "fd": means, "fd_inf": fd_inf, "fd_inf_se": se, "c": c, "points": points}


def table(results: dict[str, dict[str, Any]], variants: dict[str, str]) -> list[str]:
    counts = sorted({n for r in results.values() for n in r["counts"]})
    ldm = [name for name in results if variants[name] == "standard_ldm"]
    lines = ["| run | variant | " + " | ".join(f"FD n={n:,}" for n in counts) + " | FD_∞ ± se | c |",
             "|---|---|" + "---|" * len(counts) + "---|---|"]
    for name, r in results.items():
        by_n = dict(zip(r["counts"], r["fd"]))
        lines.append(f"| {name} | {variants[name]} | " + " | ".join(
            f"{by_n[n]:.3f}" if n in by_n else "–" for n in counts) + f" | {r['fd_inf']:.3f} ± {r['fd_inf_se']:.3f} | {r['c']:.0f} |")
    if ldm:
        lines += ["", "Ratio to the best `standard_ldm` run at the same n (best: lowest FD at that n):", "",
                  "| run | " + " | ".join(f"n={n:,}" for n in counts) + " | n = ∞ |",
                  "|---|" + "---|" * len(counts) + "---|"]
        for name, r in results.items():
            if variants[name] == "standard_ldm":
                continue
            by_n = dict(zip(r["counts"], r["fd"]))
            cells = []
            for n in counts:
                base = [dict(zip(results[b]["counts"], results[b]["fd"])).get(n) for b in ldm]
                base = [b for b in base if b is not None]
                cells.append(f"{by_n[n] / min(base):.2f}×" if n in by_n and base else "–")
            inf = min(results[b]["fd_inf"] for b in ldm)
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['fd_inf'] / inf:.2f}× |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "config.yaml")
    parser.add_argument("--experiment", default="default")
    parser.add_argument("--runs", nargs="*", default=None, help="sampling runs (default: every run of the config)")
    parser.add_argument("--subsets", type=int, default=5, help="random subsets per count below a run's size")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    exp = Experiment.from_config_file(args.config, args.experiment, args.threads)
    runs = {r["name"]: r["variant"] for r in exp.cfg["sampling"]["runs"]}
    names = args.runs or list(runs)
    results = {}
    for name in names:
        path = exp.base / "samples" / name / "samples.h5"
        if not path.is_file():
            logger.warning("%s has no samples at %s; skipped", name, path)
            continue
        results[name] = run_scores(exp, read_samples(path)["images"], args.subsets)
        logger.info("%s: %s", name, json.dumps(results[name]))
    lines = [f"# FD against the number of samples: {args.experiment}", "",
             f"`.venv/bin/python benchmarks/fd_sample_size.py --config {args.config.relative_to(REPO) if args.config.is_relative_to(REPO) else args.config} "
             f"--experiment {args.experiment} --subsets {args.subsets}`, code of commit {(collect_versions().get('git_commit') or 'unknown')[:7]}; "
             f"samples of `results/{args.experiment}/samples/<run>/samples.h5`; FD at n: the mean over "
             f"{args.subsets} seeded random subsets of n samples (all samples at a run's own size). "
             "FD_∞ ± its standard error and c: least squares of FD_n = FD_∞ + c/n through every subset's FD.", ""]
    lines += table(results, runs)
    out = REPO / "benchmarks" / "results" / f"fd_sample_size_{args.experiment}"
    write_json({"experiment": args.experiment, "runs": results, "versions": collect_versions()},
               out.with_suffix(".json"))
    write_text("\n".join(lines) + "\n", out.with_suffix(".md"))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
