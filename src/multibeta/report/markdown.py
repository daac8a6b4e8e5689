"""``report.md``: the comparison tables of one experiment, from its ``metrics.json`` document."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

#: Level-metric columns shown when present: (key in levels.json, header, format).
LEVEL_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("t", "t", "{:.3f}"),
    ("beta", "β", "{:.3g}"),
    ("sigma", "σ_t", "{:.3f}"),
    ("mse", "MSE", "{:.4f}"),
    ("psnr", "PSNR dB", "{:.2f}"),
    ("lpips", "LPIPS", "{:.4f}"),
    ("mig", "MIG", "{:.3f}"),
    ("dci_disentanglement", "DCI-D", "{:.3f}"),
    ("dci_completeness", "DCI-C", "{:.3f}"),
    ("dci_informativeness", "DCI-I", "{:.3f}"),
    ("factorvae_score", "FactorVAE", "{:.3f}"),
    ("sap", "SAP", "{:.3f}"),
    ("pca_mig", "MIG (PCA)", "{:.3f}"),
    ("pca_factorvae_score", "FactorVAE (PCA)", "{:.3f}"),
    ("tad", "TAD", "{:.3f}"),
    ("tad_attributes", "TAD attrs", "{:.1f}"),
)
#: Disentanglement keys used to pick the "best level" (first present wins).
BEST_LEVEL_KEYS = ("factorvae_score", "mig", "pca_factorvae_score", "pca_mig", "tad")


def _fmt(value: Any, fmt: str) -> str:
    if value is None:
        return "–"
    try:
        return fmt.format(value)
    except (TypeError, ValueError):
        return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def generation_table(generation: dict[str, Any]) -> str:
    """One row per sampling run: variant, solver, steps, η, start prior, then FD/KID per space."""
    spaces = sorted({k for doc in generation.values() for k in ("factor_classifier", "inception") if k in doc})
    headers = ["run", "variant", "solver", "steps", "η", "prior", "samples"]
    for space in spaces:
        label = "domain" if space == "factor_classifier" else "Inception"
        headers += [f"{label} FD ↓", f"{label} KID ↓"]
    headers += ["samples/s"]
    rows = []
    for name, doc in generation.items():
        run = doc["run"]
        prior = "exact" if run["variant"] == "standard_ldm" else run.get("prior", "standard")
        row = [name, run["variant"], run["solver"], str(run["steps"]), f"{run['eta']:g}", prior,
               str(doc["n_samples"])]
        for space in spaces:
            m = doc.get(space, {})
            row += [_fmt(m.get("fid"), "{:.3f}"), _fmt(m.get("kid_mean"), "{:.4f}")]
        row.append(_fmt(doc.get("timing", {}).get("samples_per_s"), "{:.1f}"))
        rows.append(row)
    return table(headers, rows)


def level_table(levels: list[dict[str, Any]]) -> str:
    present = [c for c in LEVEL_COLUMNS if any(c[0] in lvl for lvl in levels)]
    return table([c[1] for c in present], ([_fmt(lvl.get(c[0]), c[2]) for c in present] for lvl in levels))


def best_levels(levels: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """For each disentanglement score present, the level where it is highest."""
    out = []
    for key in BEST_LEVEL_KEYS:
        scored = [lvl for lvl in levels if lvl.get(key) is not None]
        if scored:
            out.append((key, max(scored, key=lambda lvl: lvl[key])))
    return out


def best_level(levels: list[dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    """The level with the highest score of the first disentanglement metric present."""
    found = best_levels(levels)
    return found[0] if found else None


def baseline_table(baselines: dict[str, Any]) -> str:
    keys = [c for c in LEVEL_COLUMNS[3:] if any(c[0] in b["fixed_beta"] for b in baselines.values())]
    headers = ["β", "model"] + [c[1] for c in keys]
    rows = []
    for beta, doc in sorted(baselines.items(), key=lambda kv: float(kv[0])):
        for model in ("fixed_beta", "multibeta"):
            label = "β-VAE (fixed β)" if model == "fixed_beta" else f"multi-β VAE at t={doc['multibeta_t']:.3f}"
            rows.append([beta, label] + [_fmt(doc[model].get(c[0]), c[2]) for c in keys])
    return table(headers, rows)


def timing_table(timings: dict[str, dict[str, float]]) -> str:
    rows = [[name, f"{t['seconds']:.1f}", _fmt(t.get("max_rss_mb"), "{:.0f}")] for name, t in sorted(timings.items())]
    return table(["job", "wall s", "peak RSS MB"], rows)


def _rel(path: str | os.PathLike, start: Path) -> str:
    return os.path.relpath(Path(path), start)


def render_report(doc: dict[str, Any], *, out_path: str | os.PathLike, figures: dict[str, str]) -> str:
    """The Markdown report. ``figures`` maps captions to image paths (made relative to the report)."""
    here = Path(out_path).parent
    parts = [
        f"# Experiment `{doc['experiment']}`",
        "",
        f"Config hash `{doc['config_hash']}`; multibeta {doc['versions'].get('multibeta')}, "
        f"torch {doc['versions'].get('torch')}, git {str(doc['versions'].get('git_commit'))[:10]}. "
        "Every number below was computed by this run; all of them are in `metrics.json`.",
        "",
        "## Generation",
        "",
        "FD/KID of each sampling run against the prepared training images"
        + (" (domain = the pipeline's factor classifier's feature space, no download)"
           if any("factor_classifier" in run for run in doc["generation"].values()) else "")
        + ".",
        "",
        generation_table(doc["generation"]),
    ]
    clf = doc.get("factor_classifier")
    if clf:
        parts += ["", f"Factor classifier held-out accuracy: {clf['accuracy']['accuracy']:.3f} "
                  "(mean over factors)."]
    levels = doc["levels"]["levels"]
    parts += ["", "## Reconstruction and disentanglement per level", "", level_table(levels)]
    best = best_levels(levels)
    if best:
        parts += ["", "| score | best level t | β there | best value | value at t = 0 |", "|---|---|---|---|---|"]
        parts += [f"| {key} | {lvl['t']:.3f} | {lvl['beta']:.3g} | {lvl[key]:.3f} | {_fmt(levels[0].get(key), '{:.3f}')} |"
                  for key, lvl in best]
    if doc.get("baselines"):
        parts += ["", "## Multi-β VAE against fixed-β VAEs", "", baseline_table(doc["baselines"])]
    if figures:
        parts += ["", "## Figures", ""]
        for caption, path in figures.items():
            parts += [f"**{caption}**", "", f"![{caption}]({_rel(path, here)})", ""]
    if doc.get("timings"):
        parts += ["## Time per job", "", "From Snakemake's benchmark files.", "", timing_table(doc["timings"])]
    return "\n".join(parts) + "\n"
