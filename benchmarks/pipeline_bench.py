"""The method's claims, measured side by side in one pipeline run (issue "Performance").

Runs the default experiment (``config.yaml``) extended with what the claims need, through
Snakemake, then summarises Snakemake's benchmark files and the experiment's ``metrics.json``:

1. Amortisation: one multi-β VAE vs ``--baselines`` fixed-β VAEs (same architecture and
   steps): training time, and per β reconstruction error and disentanglement of both.
2. Sampler steps vs quality: domain FD/KID for 10..1000 steps, deterministic Euler
   (η = 0), Heun and ancestral (η = 1), each over ``--seeds``, from the fitted start (and from
   the standard N(0, σ_1² I) start at 10, 50 and 1000 steps); speed-up and quality ratio of the
   best ≤ 50-step setting against 1000-step ancestral.
3. Δ ablation: multibeta vs noise_only vs standard_ldm (same VAE and cache), over ``--seeds``.
4. Throughput of each stage on this machine (VAE images/s, cache images/s, diffusion
   steps/s, samples/s).
5. Workflow overhead: ``snakemake -n`` on the finished run, and the time from a
   ``metrics.*`` change to a refreshed report.

    .venv/bin/python benchmarks/pipeline_bench.py [--config config.yaml] [--cores 2]

Writes ``benchmarks/results/pipeline.json`` and ``benchmarks/results/pipeline.md``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "benchmarks" / "results"
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
STEPS = (10, 20, 50, 100, 250, 1000)
SOLVERS = (("euler", 0.0), ("heun", 0.0), ("ancestral", 1.0))
STANDARD_PRIOR_STEPS = (10, 50, 1000)  # also sampled from the standard N(0, σ_1² I) start

sys.path.insert(0, str(REPO / "src"))
from multibeta.report.collect import read_benchmark  # noqa: E402
from multibeta.utils.io import write_json, write_text  # noqa: E402
from multibeta.utils.versions import collect_versions  # noqa: E402
from multibeta.workflow.config import resolve_config  # noqa: E402


def run_name(setting: str, seed: int) -> str:
    return f"{setting}_s{seed}"


def sampler_settings() -> dict[str, dict[str, Any]]:
    """Setting name -> sampler options (without seed): the step grid with the fitted start, a
    subset with the standard N(0, σ_1² I) start, and the Δ ablation."""
    settings: dict[str, dict[str, Any]] = {}
    for solver, eta in SOLVERS:
        for steps in STEPS:
            base = {"variant": "multibeta", "steps": steps, "eta": eta,
                    "solver": "euler" if solver == "ancestral" else solver}
            settings[f"{solver}_{steps}"] = {**base, "prior": "fitted"}
            if steps in STANDARD_PRIOR_STEPS:
                settings[f"{solver}_{steps}_standard"] = {**base, "prior": "standard"}
    for variant in ("noise_only", "standard_ldm"):
        for steps, eta in ((50, 0.0), (1000, 1.0)):
            settings[f"{variant}_{steps}_eta{eta:g}"] = {"variant": variant, "steps": steps, "eta": eta,
                                                        "prior": "fitted"}
    return settings


def bench_config(base: dict[str, Any], *, experiment: str, baselines: list[float], n_samples: int,
                 seeds: list[int]) -> dict:
    """The default config plus fixed-β baselines and the sampler grid (every setting per seed)."""
    cfg = copy.deepcopy(base)
    cfg["experiment"] = experiment
    cfg.setdefault("vae", {})["baseline_betas"] = baselines
    runs = [{"name": run_name(name, seed), **opts, "seed": seed, "n_samples": n_samples,
             "batch_size": n_samples}
            for name, opts in sampler_settings().items() for seed in seeds]
    cfg.setdefault("sampling", {})["runs"] = runs
    return cfg


def run(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return time.perf_counter() - start


def seconds(bench_dir: Path, name: str) -> float:
    return read_benchmark(bench_dir / f"{name}.tsv")["seconds"]


def summarise(doc: dict[str, Any], cfg: dict[str, Any], bench_dir: Path, seeds: list[int]) -> dict[str, Any]:
    vae, diff, cache = cfg["vae"], cfg["diffusion"], cfg["cache"]
    multi_s = seconds(bench_dir, "train_vae")
    base_s = {b: seconds(bench_dir, f"train_vae_baseline_{b:g}") for b in vae["baseline_betas"]}
    amort = {
        "multibeta_train_s": multi_s,
        "fixed_beta_train_s": base_s,
        "fixed_beta_total_s": sum(base_s.values()),
        "compute_ratio": sum(base_s.values()) / multi_s,
        "per_beta": doc["baselines"],
    }
    gen = doc["generation"]
    settings = sampler_settings()
    per_setting: dict[str, dict[str, Any]] = {}
    for name in settings:
        docs = [gen[run_name(name, seed)] for seed in seeds]
        fds = np.array([d["factor_classifier"]["fid"] for d in docs])
        kids = np.array([d["factor_classifier"]["kid_mean"] for d in docs])
        per_setting[name] = {
            "fd_mean": float(fds.mean()), "fd_std": float(fds.std(ddof=1)) if len(fds) > 1 else 0.0,
            "fd": fds.tolist(), "kid_mean": float(kids.mean()),
            "samples_per_s": float(np.median([d["timing"]["samples_per_s"] for d in docs])),
            **settings[name],
        }
    fd = {name: v["fd_mean"] for name, v in per_setting.items()}
    rate = {name: v["samples_per_s"] for name, v in per_setting.items()}
    ref = "ancestral_1000"
    few = {n: fd[n] for n, v in per_setting.items()
           if v["variant"] == "multibeta" and v["prior"] == "fitted" and v["steps"] <= 50}
    best_few = min(few, key=few.get)
    samplers = {
        "seeds": seeds, "settings": per_setting, "reference": ref, "best_le_50": best_few,
        "quality_ratio": fd[best_few] / fd[ref], "speedup": rate[best_few] / rate[ref],
        "standard_prior_reference": f"{ref}_standard",
        "quality_ratio_vs_standard_reference": fd[best_few] / fd[f"{ref}_standard"],
    }
    throughput = {
        "vae_train_images_per_s": vae["steps"] * vae["batch_size"] / multi_s,
        "diffusion_steps_per_s": {v: diff["steps"] / seconds(bench_dir, f"train_diffusion_{v}")
                                  for v in diff["variants"]},
        "cache_seconds": seconds(bench_dir, "cache_latents"),
        "cache_levels": cache["levels"],
        "samples_per_s": rate,
    }
    return {"amortisation": amort, "samplers": samplers, "throughput": throughput}


def markdown(result: dict[str, Any]) -> str:
    a, s, t, w = result["amortisation"], result["samplers"], result["throughput"], result["workflow"]
    lines = ["# Pipeline benchmarks", "", f"Machine: {result['machine']}; command: `{result['command']}`.", "",
             "## 1. Amortisation: one multi-β VAE vs fixed-β VAEs", "",
             f"Training time: multi-β {a['multibeta_train_s']:.0f} s; {len(a['fixed_beta_train_s'])} fixed-β VAEs "
             f"{a['fixed_beta_total_s']:.0f} s in total (ratio {a['compute_ratio']:.2f}×).", "",
             "| β | model | MSE | MIG | FactorVAE | DCI-D |", "|---|---|---|---|---|---|"]
    for beta, doc in sorted(a["per_beta"].items(), key=lambda kv: float(kv[0])):
        for key in ("fixed_beta", "multibeta"):
            m = doc[key]
            lines.append(f"| {beta} | {key} | {m.get('mse', float('nan')):.4f} | {m.get('mig', float('nan')):.3f} | "
                         f"{m.get('factorvae_score', float('nan')):.3f} | {m.get('dci_disentanglement', float('nan')):.3f} |")
    lines += ["", "## 2–3. Samplers and the Δ ablation", "",
              f"Domain FD ↓ (mean ± sd over seeds {', '.join(map(str, s['seeds']))}; "
              f"{result['n_samples']} samples each), KID ↓ (mean), samples/s (median). Start prior: "
              "`fitted` = Gaussian matched to the cached z_1, `standard` = N(0, σ_1² I); standard_ldm's "
              "own start is exact.", "",
              "| setting | variant | solver | steps | η | prior | FD | KID | samples/s |",
              "|---|---|---|---|---|---|---|---|---|"]

    def order(item: tuple[str, dict]) -> tuple:
        name, v = item
        return (v["variant"] != "multibeta", v["variant"], name.split("_")[0], v["prior"], v["steps"])

    for name, v in sorted(s["settings"].items(), key=order):
        solver = "ancestral" if v.get("eta") == 1.0 and v.get("solver", "euler") == "euler" else v.get("solver", "euler")
        lines.append(f"| {name} | {v['variant']} | {solver} | {v['steps']} | {v['eta']:g} | "
                     f"{'exact' if v['variant'] == 'standard_ldm' else v['prior']} | "
                     f"{v['fd_mean']:.3f} ± {v['fd_std']:.3f} | {v['kid_mean']:.4f} | {v['samples_per_s']:.0f} |")
    lines += ["", f"Best ≤ 50-step setting: `{s['best_le_50']}`: FD ratio to `{s['reference']}` "
              f"{s['quality_ratio']:.3f} (to `{s['standard_prior_reference']}`, the paper's sampler: "
              f"{s['quality_ratio_vs_standard_reference']:.3f}), speed-up {s['speedup']:.1f}×.", "",
              "## 4. Throughput", "",
              f"VAE training {t['vae_train_images_per_s']:.0f} images/s; latent cache {t['cache_seconds']:.1f} s "
              f"for {t['cache_levels']} levels; diffusion steps/s: "
              + ", ".join(f"{k} {v:.1f}" for k, v in t["diffusion_steps_per_s"].items()) + ".", "",
              "## 5. Workflow overhead", "",
              f"`snakemake -n` on the finished run: {w['dry_run_s']:.2f} s. A `metrics.*` change to a "
              f"refreshed report: {w['metrics_change_to_report_s']:.1f} s.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "config.yaml"))
    parser.add_argument("--experiment", default=None,
                        help="experiment name (default: the config's own, so finished steps are reused)")
    parser.add_argument("--cores", default="2")
    parser.add_argument("--baselines", type=float, nargs="+", default=[0.3, 3.0, 10.0, 30.0])
    parser.add_argument("--n-samples", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="sampler seeds per setting (FD of 1000 samples varies by ~0.1-0.2 between seeds)")
    args = parser.parse_args()
    base = yaml.safe_load(Path(args.config).read_text())
    args.experiment = args.experiment or resolve_config(base)["experiment"]
    cfg = bench_config(base, experiment=args.experiment, baselines=args.baselines, n_samples=args.n_samples,
                       seeds=args.seeds)
    resolved = resolve_config(cfg)
    cfg_path = OUT_DIR / f"{args.experiment}.config.yaml"
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    smk = [SNAKEMAKE, "--cores", args.cores, "--resources", "gpu=1", "--configfile", str(cfg_path)]
    total = run(smk, REPO)
    exp_dir = REPO / resolved["results_dir"] / args.experiment
    doc = json.loads((exp_dir / "report" / "metrics.json").read_text())
    result = summarise(doc, resolved, exp_dir / "benchmarks", args.seeds)
    result["n_samples"] = args.n_samples
    dry = run([SNAKEMAKE, "-n", "--configfile", str(cfg_path)], REPO)
    edited = copy.deepcopy(cfg)
    edited.setdefault("metrics", {}).setdefault("mig", {})["num_bins"] = 19
    edited_path = OUT_DIR / f"{args.experiment}.metrics-edit.yaml"
    edited_path.write_text(yaml.safe_dump(edited, sort_keys=False))
    refresh = run([*smk[:-1], str(edited_path)], REPO)
    run([*smk], REPO)  # back to the benchmark config's metrics
    result["workflow"] = {"pipeline_total_s": total, "dry_run_s": dry, "metrics_change_to_report_s": refresh}
    result["machine"] = f"{os.cpu_count()} CPU cores, load {os.getloadavg()[0]:.2f}"
    result["command"] = "python benchmarks/pipeline_bench.py " + " ".join(sys.argv[1:])
    result["versions"] = collect_versions()
    write_json(result, OUT_DIR / "pipeline.json")
    write_text(markdown(result), OUT_DIR / "pipeline.md")
    print(markdown(result))


if __name__ == "__main__":
    main()
