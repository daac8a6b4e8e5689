"""The shared σ_t against a per-dimension schedule (``vae.sigma_stagger``), run for run.

    .venv/bin/python benchmarks/sigma_stagger.py \
        [--shared results/default] [--staggered results/dsprites_stagger] \
        [--out benchmarks/results/sigma_stagger.md]

Reads two finished runs of the same data, seeds and budgets (``config.yaml`` and
``configs/dsprites_stagger.yaml``): their ``metrics/levels.json`` (per-level disentanglement in
the latent axes, PCA and ICA bases, TAD with every factor binarised "above its median", t = 0
reconstructions) and, where present, ``report/metrics.json`` (generation: domain FD and valid
fraction of each sampling run). Writes one Markdown page with a table per part and the checks
of the issue that asks for disentanglement rising with β. Nothing is trained here.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from typing import Any

#: (column, key in a level entry, format)
SCORES = (
    ("FactorVAE axes", "factorvae_score"), ("MIG axes", "mig"),
    ("FactorVAE PCA", "pca_factorvae_score"), ("MIG PCA", "pca_mig"),
    ("FactorVAE ICA", "ica_factorvae_score"), ("MIG ICA", "ica_mig"),
    ("DCI-D axes", "dci_disentanglement"), ("SAP axes", "sap"),
    ("TAD axes", "tad"), ("TAD PCA", "pca_tad"), ("TAD ICA", "ica_tad"),
)


def load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def level_table(levels: list[dict[str, Any]]) -> list[str]:
    """Markdown rows: one per level that carries the disentanglement scores."""
    head = "| t | β | σ (RMS over dims) | " + " | ".join(name for name, _ in SCORES) + " |"
    rows = [head, "|" + "---|" * (3 + len(SCORES))]
    for lv in levels:
        if "factorvae_score" not in lv:
            continue
        cells = [f"{lv['t']:.3f}", f"{lv['beta']:.3g}", f"{lv['sigma']:.3f}"]
        cells += [f"{lv[key]:.3f}" if isinstance(lv.get(key), (int, float)) else "–" for _, key in SCORES]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def checks(levels: list[dict[str, Any]]) -> dict[str, float]:
    """The numbers the issue's targets read."""
    scored = [lv for lv in levels if "factorvae_score" in lv]
    t0 = next(lv for lv in levels if lv["t"] == 0.0)
    high_beta = [lv for lv in scored if lv["beta"] >= 1.0]
    return {
        "best FactorVAE, axes": max(lv["factorvae_score"] for lv in scored),
        "best MIG, axes": max(lv["mig"] for lv in scored),
        "best FactorVAE, ICA": max(lv["ica_factorvae_score"] for lv in scored),
        "best MIG, ICA": max(lv["ica_mig"] for lv in scored),
        "MIG axes at t = 0": t0["mig"],
        "best MIG axes over β ≥ 1": max((lv["mig"] for lv in high_beta), default=float("nan")),
        "t = 0 shape accuracy": t0["recon_accuracy.shape"] if "recon_accuracy.shape" in t0
        else t0["recon_accuracy"]["shape"] if isinstance(t0.get("recon_accuracy"), dict) else float("nan"),
        "t = 0 IoU to input": t0["recon_iou_to_input"] if isinstance(t0["recon_iou_to_input"], float)
        else float("nan"),
    }


def flat_levels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Level entries with nested per-factor tables flattened to ``key.factor``."""
    out = []
    for lv in doc["levels"]:
        flat: dict[str, Any] = {}
        for key, value in lv.items():
            if isinstance(value, dict):
                for sub, v in value.items():
                    flat[f"{key}.{sub}"] = v
            else:
                flat[key] = value
        out.append(flat)
    return out


def generation(metrics: dict[str, Any] | None) -> dict[str, tuple[float, float]]:
    """``{run: (domain FD, valid fraction)}`` from a report's metrics.json."""
    if metrics is None:
        return {}
    runs = metrics.get("generation", {})
    out = {}
    for name, entry in runs.items():
        fd = entry.get("factor_classifier", {}).get("fid")  # FD in the factor classifier's features
        valid = entry.get("render", {}).get("valid_fraction")
        if isinstance(fd, (int, float)):
            out[name] = (float(fd), float(valid) if isinstance(valid, (int, float)) else float("nan"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", type=Path, default=Path("results/default"))
    ap.add_argument("--staggered", type=Path, default=Path("results/dsprites_stagger"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/sigma_stagger.md"))
    args = ap.parse_args()
    runs = {"shared σ_t": args.shared, "staggered": args.staggered}
    lines = ["# Shared σ_t against a per-dimension schedule (`vae.sigma_stagger`)", "",
             "`.venv/bin/python benchmarks/sigma_stagger.py` at commit "
             + subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
             + f"; runs {args.shared} and {args.staggered}.", ""]
    summary: dict[str, dict[str, float]] = {}
    gens: dict[str, dict[str, tuple[float, float]]] = {}
    for label, folder in runs.items():
        doc = load(folder / "metrics" / "levels.json")
        if doc is None:
            raise SystemExit(f"{folder}/metrics/levels.json is missing: run that experiment first")
        levels = flat_levels(doc)
        lines += [f"## {label} ({folder})", ""] + level_table(levels) + [""]
        summary[label] = checks(levels)
        gens[label] = generation(load(folder / "report" / "metrics.json"))
    lines += ["## Checks", "", "| | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]
    for key in next(iter(summary.values())):
        lines.append(f"| {key} | " + " | ".join(f"{summary[r][key]:.3f}" for r in runs) + " |")
    names = sorted(set().union(*[g.keys() for g in gens.values()]))
    if names:
        lines += ["", "## Generation (domain FD / valid fraction)", "",
                  "| run | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]
        for name in names:
            cells = [f"{gens[r][name][0]:.3f} / {gens[r][name][1]:.3f}" if name in gens[r] else "–" for r in runs]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(args.out)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
