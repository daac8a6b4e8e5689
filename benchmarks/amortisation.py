"""Does one multi-β VAE replace a sweep of fixed-β VAEs? The amortisation claim on today's recipe.

Adds ``--betas`` fixed-β VAEs (``vae.baseline_betas``: the same network, data, steps and
optimiser as the multi-β VAE, t fixed at t(β)) to a finished run of ``--config`` (the same
experiment, so its multi-β VAE, cache and factor classifier are reused) and runs Snakemake for
their ``baseline_metrics``: each fixed-β VAE and the multi-β VAE at the same β, scored by the
pipeline's own rulers on the same images (reconstruction MSE, IoU to the input, shape accuracy;
FactorVAE, MIG, DCI (random forest), SAP in the latent axes and in the PCA and ICA bases). The
training times come from Snakemake's benchmark files.

    .venv/bin/python benchmarks/amortisation.py --cores 2          # train + score (about 50 min)
    .venv/bin/python benchmarks/amortisation.py --summarise-only   # tables from finished files

The baselines train with ``compute.cpu_threads`` / ``gpu_threads`` = 1, two side by side on two
cores (``--cores 2``); the multi-β VAE's time is the one its own run recorded.

Writes ``benchmarks/results/amortisation.{json,md}``.
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

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
from multibeta.report.collect import read_benchmark  # noqa: E402
from multibeta.utils.io import write_json, write_text  # noqa: E402
from multibeta.utils.versions import collect_versions  # noqa: E402
from multibeta.workflow.config import resolve_config  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "amortisation"
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
BASES = (("identity", "", "axes"), ("pca", "pca_", "PCA"), ("ica", "ica_", "ICA"))
RECON = (("mse", "MSE", "{:.4f}"), ("recon_iou_to_input", "IoU", "{:.3f}"),
         ("recon_accuracy.shape", "shape acc.", "{:.3f}"))
SCORES = (("factorvae_score", "FactorVAE"), ("mig", "MIG"), ("dci_disentanglement", "DCI-D"), ("sap", "SAP"),
          ("tad", "TAD"))


def amortisation_config(base: dict[str, Any], betas: list[float]) -> dict[str, Any]:
    """``base`` with the fixed-β baselines and one thread per training job."""
    cfg = copy.deepcopy(base)
    cfg.setdefault("vae", {})["baseline_betas"] = betas
    cfg.setdefault("compute", {}).update({"cpu_threads": 1, "gpu_threads": 1})
    return cfg


def _fmt(value: Any, fmt: str) -> str:
    return "–" if value is None else fmt.format(value)


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# One multi-β VAE against fixed-β VAEs", "",
        f"Experiment `{result['experiment']}` (`{result['config']}`), commit {result['commit']}; command: "
        f"`{result['command']}`. Machine: {result['machine']}.", "",
        f"Training time: multi-β VAE {result['multibeta_train_s']:.0f} s (its own run); the "
        f"{len(result['betas'])} fixed-β VAEs {result['fixed_beta_total_s']:.0f} s in total "
        f"({', '.join(f'β {b}: {s:.0f} s' for b, s in result['fixed_beta_train_s'].items())}), "
        f"{result['fixed_beta_total_s'] / result['multibeta_train_s']:.2f}× the multi-β VAE. "
        "Baselines trained two side by side with one thread each.", "",
        "## Reconstruction", "",
        "| β | model | " + " | ".join(label for _, label, _ in RECON) + " |", "|---|---|" + "---|" * len(RECON),
    ]
    for beta, doc in result["per_beta"].items():
        for model in ("fixed_beta", "multibeta"):
            name = "fixed-β VAE" if model == "fixed_beta" else f"multi-β VAE (t = {doc['multibeta_t']:.3f})"
            lines.append(f"| {beta} | {name} | " + " | ".join(_fmt(doc[model].get(k), f) for k, _, f in RECON) + " |")
    for basis, prefix, label in BASES:
        lines += ["", f"## Disentanglement, {label}", "",
                  "| β | model | " + " | ".join(name for _, name in SCORES) + " |", "|---|---|" + "---|" * len(SCORES)]
        for beta, doc in result["per_beta"].items():
            for model in ("fixed_beta", "multibeta"):
                name = "fixed-β VAE" if model == "fixed_beta" else "multi-β VAE"
                lines.append(f"| {beta} | {name} | "
                             + " | ".join(_fmt(doc[model].get(prefix + k), "{:.3f}") for k, _ in SCORES) + " |")
    lines += ["", "## Multi-β minus fixed-β", "",
              "| β | " + " | ".join(f"{name} ({label})" for _, prefix, label in BASES for k, name in SCORES[:2]) + " |",
              "|---|" + "---|" * (2 * len(BASES))]
    for beta, doc in result["per_beta"].items():
        cells = []
        for _, prefix, _ in BASES:
            for k, _ in SCORES[:2]:
                a, b = doc["multibeta"].get(prefix + k), doc["fixed_beta"].get(prefix + k)
                cells.append("–" if a is None or b is None else f"{a - b:+.3f}")
        lines.append(f"| {beta} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summarise(cfg_path: Path, betas: list[float], command: str) -> dict[str, Any]:
    resolved = resolve_config(yaml.safe_load(cfg_path.read_text()))
    exp_dir = REPO / resolved["results_dir"] / resolved["experiment"]
    bench = exp_dir / "benchmarks"
    per_beta = {}
    for b in betas:
        per_beta[f"{b:g}"] = json.loads((exp_dir / "metrics" / "baselines" / f"beta{b:g}.json").read_text())
    base_s = {f"{b:g}": read_benchmark(bench / f"train_vae_baseline_{b:g}.tsv")["seconds"] for b in betas}
    return {
        "experiment": resolved["experiment"], "config": str(cfg_path.relative_to(REPO)), "betas": betas,
        "multibeta_train_s": read_benchmark(bench / "train_vae.tsv")["seconds"],
        "fixed_beta_train_s": base_s, "fixed_beta_total_s": sum(base_s.values()), "per_beta": per_beta,
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                 text=True).stdout.strip(),
        "command": command, "machine": f"{os.cpu_count()} CPU cores, load {os.getloadavg()[0]:.2f}",
        "versions": collect_versions(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--betas", type=float, nargs="+", default=[0.3, 3.0, 10.0, 30.0])
    parser.add_argument("--cores", default="2")
    parser.add_argument("--summarise-only", action="store_true")
    args = parser.parse_args()
    base = yaml.safe_load((REPO / args.config).read_text())
    cfg = amortisation_config(base, args.betas)
    cfg_path = OUT.with_suffix(".config.yaml")
    cfg_path.parent.mkdir(parents=True, exist_ok=True)
    if not args.summarise_only:
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        resolved = resolve_config(cfg)
        exp_dir = Path(resolved["results_dir"]) / resolved["experiment"]
        targets = [str(exp_dir / "metrics" / "baselines" / f"beta{b:g}.json") for b in args.betas]
        start = time.perf_counter()
        subprocess.run([SNAKEMAKE, *targets, "--cores", args.cores, "--resources", f"gpu={args.cores}",
                        "--configfile", str(cfg_path),
                        # the finished run is reused as it is (a later edit of a rule script alone
                        # does not retrain its VAE here)
                        "--rerun-triggers", "mtime", "params", "input"], cwd=REPO, check=True)
        print(f"snakemake: {time.perf_counter() - start:.0f} s")
    command = "python benchmarks/amortisation.py " + " ".join(sys.argv[1:])
    result = summarise(cfg_path, args.betas, command)
    write_json(result, OUT.with_suffix(".json"))
    write_text(markdown(result), OUT.with_suffix(".md"))
    print(markdown(result))


if __name__ == "__main__":
    main()
