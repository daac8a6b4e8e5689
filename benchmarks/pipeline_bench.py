"""The method's claims, measured side by side in one pipeline run (issue "Performance").

Runs the default experiment (``config.yaml``) extended with what the claims need, through
Snakemake, then summarises Snakemake's benchmark files and the experiment's ``metrics.json``:

1. Amortisation: one multi-β VAE vs ``--baselines`` fixed-β VAEs (same architecture and
   steps): training time, and per β reconstruction error and disentanglement of both.
2. Sampler steps vs quality: domain FD/KID for 10..1000 steps, deterministic Euler
   (η = 0), Heun and ancestral (η = 1); speed-up and quality ratio of the best ≤ 50-step
   setting against 1000-step ancestral.
3. Δ ablation: multibeta vs noise_only vs standard_ldm (same VAE and cache).
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
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "benchmarks" / "results"
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
STEPS = (10, 20, 50, 100, 250, 1000)
SOLVERS = (("euler", 0.0), ("heun", 0.0), ("ancestral", 1.0))

sys.path.insert(0, str(REPO / "src"))
from multibeta.utils.io import write_json, write_text  # noqa: E402
from multibeta.utils.versions import collect_versions  # noqa: E402
from multibeta.workflow.config import resolve_config  # noqa: E402


def bench_config(base: dict[str, Any], *, experiment: str, baselines: list[float], n_samples: int) -> dict:
    """The default config plus fixed-β baselines and the sampler grid."""
    cfg = copy.deepcopy(base)
    cfg["experiment"] = experiment
    cfg.setdefault("vae", {})["baseline_betas"] = baselines
    runs = []
    for solver, eta in SOLVERS:
        for steps in STEPS:
            runs.append({"name": f"{solver}_{steps}", "variant": "multibeta", "steps": steps, "eta": eta,
                         "solver": "euler" if solver == "ancestral" else solver,
                         "n_samples": n_samples, "batch_size": n_samples})
    for variant in ("noise_only", "standard_ldm"):
        for steps, eta in ((50, 0.0), (1000, 1.0)):
            runs.append({"name": f"{variant}_{steps}_eta{eta:g}", "variant": variant, "steps": steps,
                         "eta": eta, "n_samples": n_samples, "batch_size": n_samples})
    cfg.setdefault("sampling", {})["runs"] = runs
    return cfg


def run(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return time.perf_counter() - start


def seconds(bench_dir: Path, name: str) -> float:
    with open(bench_dir / f"{name}.tsv") as fh:
        return float(next(csv.DictReader(fh, delimiter="\t"))["s"])


def summarise(doc: dict[str, Any], cfg: dict[str, Any], bench_dir: Path) -> dict[str, Any]:
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
    fd = {name: r["factor_classifier"]["fid"] for name, r in gen.items()}
    rate = {name: r["timing"]["samples_per_s"] for name, r in gen.items()}
    ref = "ancestral_1000"
    few = {n: fd[n] for n in fd if n.split("_")[0] in ("euler", "heun", "ancestral") and int(n.split("_")[1]) <= 50}
    best_few = min(few, key=few.get)
    samplers = {
        "fd": fd, "kid": {n: r["factor_classifier"]["kid_mean"] for n, r in gen.items()}, "samples_per_s": rate,
        "reference": ref, "best_le_50": best_few,
        "quality_ratio": fd[best_few] / fd[ref], "speedup": rate[best_few] / rate[ref],
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
    lines += ["", "## 2–3. Samplers and the Δ ablation (domain FD ↓, KID ↓, samples/s)", "",
              "| run | FD | KID | samples/s |", "|---|---|---|---|"]
    def order(name: str) -> tuple:
        parts = name.split("_")
        steps = next((int(p) for p in parts if p.isdigit()), 0)
        return (parts[0], steps, name)

    for name in sorted(s["fd"], key=order):
        lines.append(f"| {name} | {s['fd'][name]:.3f} | {s['kid'][name]:.4f} | {s['samples_per_s'][name]:.1f} |")
    lines += ["", f"Best ≤ 50-step setting: `{s['best_le_50']}`: FD ratio to `{s['reference']}` "
              f"{s['quality_ratio']:.3f}, speed-up {s['speedup']:.1f}×.", "",
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
    args = parser.parse_args()
    base = yaml.safe_load(Path(args.config).read_text())
    args.experiment = args.experiment or resolve_config(base)["experiment"]
    cfg = bench_config(base, experiment=args.experiment, baselines=args.baselines, n_samples=args.n_samples)
    resolved = resolve_config(cfg)
    cfg_path = OUT_DIR / f"{args.experiment}.config.yaml"
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    smk = [SNAKEMAKE, "--cores", args.cores, "--resources", "gpu=1", "--configfile", str(cfg_path)]
    total = run(smk, REPO)
    exp_dir = REPO / resolved["results_dir"] / args.experiment
    doc = json.loads((exp_dir / "report" / "metrics.json").read_text())
    result = summarise(doc, resolved, exp_dir / "benchmarks")
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
