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
    ("recon_iou_to_input", "IoU to input", "{:.3f}"),
    ("recon_accuracy.shape", "shape acc.", "{:.3f}"),
    ("recon_valid_fraction", "valid", "{:.3f}"),
    ("psnr", "PSNR dB", "{:.2f}"),
    ("lpips", "LPIPS", "{:.4f}"),
    # disentanglement from here on (RECON_COLUMNS)
    ("mig", "MIG", "{:.3f}"),
    ("dci_disentanglement", "DCI-D (RF)", "{:.3f}"),
    ("dci_completeness", "DCI-C (RF)", "{:.3f}"),
    ("dci_informativeness_test", "DCI-I test (RF)", "{:.3f}"),
    ("factorvae_score", "FactorVAE", "{:.3f}"),
    ("sap", "SAP", "{:.3f}"),
    ("pca_mig", "MIG (PCA)", "{:.3f}"),
    ("pca_factorvae_score", "FactorVAE (PCA)", "{:.3f}"),
    ("ica_mig", "MIG (ICA)", "{:.3f}"),
    ("ica_factorvae_score", "FactorVAE (ICA)", "{:.3f}"),
    ("tad", "TAD", "{:.3f}"),
    ("tad_attributes", "TAD attrs", "{:.1f}"),
    ("pca_tad", "TAD (PCA)", "{:.3f}"),
    ("ica_tad", "TAD (ICA)", "{:.3f}"),
)
#: The first columns are the reconstruction table, the rest (after t and β) disentanglement.
RECON_COLUMNS = 9
#: Disentanglement scores reported per basis at the best level (key without basis prefix).
BASIS_SCORES: tuple[tuple[str, str], ...] = (
    ("factorvae_score", "FactorVAE"), ("mig", "MIG"), ("dci_disentanglement", "DCI-D (RF)"), ("sap", "SAP"),
    ("tad", "TAD"),
)
BASIS_NAMES = {"identity": "latent axes", "pca": "PCA", "ica": "ICA"}
#: Disentanglement keys used to pick the "best level" (first present wins).
BEST_LEVEL_KEYS = ("factorvae_score", "mig", "pca_factorvae_score", "pca_mig", "tad")
#: Few-step sampling runs: at most this many network evaluations per sample.
FEW_STEP_NFE = 50


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
    """One row per sampling run: variant, solver, steps, η, start prior, then FD/KID per space,
    and on dSprites the fraction of valid samples, their render IoU and the worst factor TV."""
    spaces = sorted({k for doc in generation.values() for k in ("factor_classifier", "inception") if k in doc})
    render = any(render_scores(doc) for doc in generation.values())
    headers = ["run", "variant", "solver", "steps", "η", "prior", "samples"]
    for space in spaces:
        label = "domain" if space == "factor_classifier" else "Inception"
        headers += [f"{label} FD ↓", f"{label} KID ↓"]
    if render:
        headers += ["valid ↑", "render IoU ↑", "max TV ↓"]
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
        if render:
            r = render_scores(doc) or {}
            row += [_fmt(r.get("valid_fraction"), "{:.3f}"), _fmt(r.get("render_iou"), "{:.3f}"),
                    _fmt(r.get("tv_max"), "{:.3f}")]
        row.append(_fmt(doc.get("timing", {}).get("samples_per_s"), "{:.1f}"))
        rows.append(row)
    return table(headers, rows)


def coverage_table(generation: dict[str, Any]) -> str:
    """Total variation distance of each run's factor distribution from the data's, per factor,
    with the floor that sampling noise alone gives at the same sample count."""
    factors = ("shape", "scale", "orientation", "posX", "posY")
    headers = ["run"] + [f"TV {f}" for f in factors] + ["valid square", "valid ellipse", "valid heart"]
    rows = []
    for name, doc in generation.items():
        r = render_scores(doc)
        if not r:
            continue
        row = [name] + [f"{r[f'tv.{f}']:.3f} ({r[f'tv_floor.{f}']:.3f})" for f in factors]
        row += [_fmt(r.get(f"valid_fraction.{shape}"), "{:.3f}") for shape in ("square", "ellipse", "heart")]
        rows.append(row)
    return table(headers, rows)


def render_scores(run: dict[str, Any]) -> dict[str, Any] | None:
    """A generation run's render-consistency scores (dSprites), None where there are none or
    they did not apply (``{"not_applicable": reason}`` on other data)."""
    r = run.get("render")
    return r if r and "not_applicable" not in r else None


def classifier_table(accuracy: dict[str, Any]) -> str:
    """Held-out accuracy of the factor classifier, exact and within one class, per factor."""
    from multibeta.data.dsprites import FACTOR_NAMES

    names = [k.split(".", 1)[1] for k in accuracy if k.startswith("accuracy.")]
    names.sort(key=lambda n: FACTOR_NAMES.index(n) if n in FACTOR_NAMES else len(FACTOR_NAMES))
    rows = [[n, _fmt(accuracy.get(f"accuracy.{n}"), "{:.4f}"), _fmt(accuracy.get(f"within_one.{n}"), "{:.4f}")]
            for n in names]
    return table(["factor", "accuracy", "within one class"], rows)


def sharpening_table(sharpen: dict[str, Any]) -> str:
    """Per level t_b: the decoded-at-t_b and the denoised images against the input."""
    levels = sharpen["levels"]
    keys = [("iou_to_input", "IoU to input"), ("valid_fraction", "valid"), ("mse", "MSE")]
    keys = [k for k in keys if all(k[0] in lvl["decoded"] for lvl in levels)]
    headers = ["t_b"] + [f"{label}: {which}" for key, label in keys for which in ("decoded", "denoised")]
    rows = [[f"{lvl['t_b']:.2f}"] + [f"{lvl[which][key]:.3f}" for key, _ in keys for which in ("decoded", "denoised")]
            for lvl in levels]
    return table(headers, rows)


def edits_table(edits: dict[str, Any]) -> str:
    """Per direction family: the edit-disentanglement score of each factor (and the change of the
    edited factor itself), and their means."""
    metrics, families, factors = edits["metrics"], edits["families"], edits["factors"]
    headers = ["family", "mean score", "mean target change"] + [f"{f}: score (change)" for f in factors]
    rows = []
    for fam in families:
        cells = [fam, f"{metrics[f'{fam}.score']:.3f}", f"{metrics[f'{fam}.target_change']:.3f}"]
        cells += [f"{metrics[f'{fam}.score.{f}']:.3f} ({metrics[f'{fam}.target_change.{f}']:.2f})"
                  if f"{fam}.score.{f}" in metrics else "–" for f in factors]
        rows.append(cells)
    return table(headers, rows)


def level_table(levels: list[dict[str, Any]], columns: Sequence[tuple[str, str, str]] = LEVEL_COLUMNS) -> str:
    present = [c for c in columns if any(c[0] in lvl for lvl in levels)]
    return table([c[1] for c in present], ([_fmt(lvl.get(c[0]), c[2]) for c in present] for lvl in levels))


def scored_levels(levels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The levels at which disentanglement was evaluated."""
    keys = [c[0] for c in LEVEL_COLUMNS[RECON_COLUMNS:]]
    return [lvl for lvl in levels if any(k in lvl for k in keys)]


def basis_prefix(basis: str) -> str:
    """Key prefix of the disentanglement scores in ``basis`` (``""`` for the latent axes)."""
    return "" if basis == "identity" else f"{basis}_"


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


def best_level_in(levels: list[dict[str, Any]], basis: str) -> dict[str, Any] | None:
    """The level with the highest FactorVAE score (TAD on attribute data) in ``basis``."""
    for score in ("factorvae_score", "tad"):
        key = basis_prefix(basis) + score
        scored = [lvl for lvl in levels if lvl.get(key) is not None]
        if scored:
            return max(scored, key=lambda lvl: lvl[key])
    return None


def basis_table(levels: list[dict[str, Any]], bases: Sequence[str], primary: str) -> str:
    """Per basis: the best level (highest FactorVAE score in that basis) and its scores."""
    present = [(key, label) for key, label in BASIS_SCORES
               if any(basis_prefix(b) + key in lvl for b in bases for lvl in levels)]
    headers = ["basis", "best level t", "β there"] + [label for _, label in present]
    rows = []
    for basis in bases:
        lvl = best_level_in(levels, basis)
        if lvl is None:
            continue
        name = BASIS_NAMES.get(basis, basis) + (" (primary)" if basis == primary else "")
        rows.append([name, f"{lvl['t']:.3f}", f"{lvl['beta']:.3g}"]
                    + [_fmt(lvl.get(basis_prefix(basis) + key), "{:.3f}") for key, _ in present])
    return table(headers, rows)


def ica_fit_text(levels: list[dict[str, Any]], optima: dict[str, Any] | None) -> list[str]:
    """How the ICA basis was fitted: per scored level whether the chosen start converged, and the
    distinct optima of the starts at the best level with their scores (the spread over restarts)."""
    fitted = [lvl for lvl in levels if "ica_fit_converged" in lvl]
    if not fitted:
        return []
    unconverged = [f"{lvl['t']:.3f}" for lvl in fitted if not lvl["ica_fit_converged"]]
    restarts = fitted[0].get("ica_fit_restarts")
    parts = [f"ICA basis: best of {restarts} FastICA starts per level by the ICA objective; "
             + (f"**no start converged at t = {', '.join(unconverged)}** (metrics.ica.max_iter), "
                "so the ica_ scores there come from an unconverged basis."
                if unconverged else "the chosen start converged at every scored level ("
                + ", ".join(f"t = {lvl['t']:.3f}: {lvl.get('ica_fit_restarts_converged')}/{restarts} starts"
                            for lvl in fitted) + " converged).")]
    if optima and optima.get("optima"):
        keys = [("factorvae_score", "FactorVAE"), ("mig", "MIG")]  # metrics.levels.SPREAD_SCORES
        rows = [[str(i + 1), f"{1e3 * o['objective']:.3f}", str(o["starts"])]
                + [f"{o[k]:.3f}" for k, _ in keys] for i, o in enumerate(optima["optima"])]
        rows.append(["range", "", ""] + [f"{optima['range'][k][0]:.3f} – {optima['range'][k][1]:.3f}"
                                         for k, _ in keys])
        parts += ["", f"The distinct optima the starts reached at the best ICA level (t = {optima['t']:.3f}), "
                  "best objective first (the first is the basis scored above); how far the ica_ scores would "
                  "move with another optimum:", "",
                  table(["optimum", "objective ×1e3", "starts"] + [label for _, label in keys], rows)]
    return [""] + parts


def best_dci_table(best: dict[str, Any]) -> str:
    """DCI at the best level with the published estimator, per basis."""
    rows = []
    for basis in ("ica", "pca", "identity"):
        if basis in best:
            r = best[basis]
            rows.append([BASIS_NAMES.get(basis, basis), f"{r['dci_disentanglement']:.3f}",
                         f"{r['dci_completeness']:.3f}", f"{r['dci_informativeness_test']:.3f}"])
    return table(["basis", "D", "C", "I (test)"], rows)


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
    from multibeta.report.checks import checks_table, method_checks

    here = Path(out_path).parent
    metrics_cfg = doc.get("config", {}).get("metrics", {})
    primary = metrics_cfg.get("primary_basis", "identity")
    bases = list(metrics_cfg.get("rotations", ["identity"]))
    parts = [
        f"# Experiment `{doc['experiment']}`",
        "",
        f"Config hash `{doc['config_hash']}`; multibeta {doc['versions'].get('multibeta')}, "
        f"torch {doc['versions'].get('torch')}, git {str(doc['versions'].get('git_commit'))[:10]}. "
        "Every number below was computed by this run; all of them are in `metrics.json`.",
    ]
    dataset = doc.get("config", {}).get("data", {}).get("name", "dsprites")
    # the thresholds are dSprites' (multibeta.report.checks); other data get no verdicts
    checks = method_checks(doc, primary_basis=primary) if dataset == "dsprites" else []
    if checks:
        parts += ["", "## Checks of the method", "",
                  "Does this run show what the method claims? Thresholds: `multibeta.report.checks`.", "",
                  checks_table(checks)]
    parts += [
        "",
        "## Generation",
        "",
        "FD/KID of each sampling run against the prepared training images"
        + (" (domain = the pipeline's factor classifier's feature space, no download)"
           if any("factor_classifier" in run for run in doc["generation"].values()) else "")
        + ("; valid = fraction of samples within IoU 0.9 of the rendering of their predicted factors, "
           "max TV = largest total variation distance of the shape, scale, x or y distribution from the data's"
           if any(render_scores(run) for run in doc["generation"].values()) else "")
        + ".",
        "",
        generation_table(doc["generation"]),
    ]
    # rule generation_metrics records why the rulers did not apply under not_applicable.render
    not_applicable = sorted({run["not_applicable"]["render"] for run in doc["generation"].values()
                             if "render" in run.get("not_applicable", {})})
    if not_applicable:
        parts += ["", f"Valid fraction and factor coverage: not computed ({not_applicable[0]})."]
    if any(render_scores(run) for run in doc["generation"].values()):
        parts += ["", "Factor coverage of the samples: TV distance from the data per factor (in brackets: "
                  "what sampling noise alone gives at the same number of images; orientation folded by "
                  "each shape's symmetry), and the valid fraction per predicted shape.", "",
                  coverage_table(doc["generation"])]
    clf = doc.get("factor_classifier")
    if clf:
        acc = clf["accuracy"]
        parts += ["", f"Factor classifier (the rulers' reader) held-out accuracy on {int(acc.get('n_heldout', 0))} "
                  "images" + (" (orientation modulo each shape's symmetry)" if dataset == "dsprites" else "")
                  + ":", "", classifier_table(acc)]
    if doc.get("sharpen"):
        parts += ["", "## Sharpening", "",
                  f"Held-out images encoded at t_b, decoded there directly or denoised to t = 0 first "
                  f"({doc['sharpen']['n_images']} images).", "", sharpening_table(doc["sharpen"])]
    if doc.get("edits"):
        cfg = doc["edits"]["config"]
        parts += ["", "## Edit directions", "",
                  f"Held-out images ({doc['edits']['n_images']}) moved by {cfg['amounts']} standard "
                  f"deviations along one direction per factor at t_b = {cfg['t_b']:g} (attribute_t0: at "
                  "t = 0, no denoiser), denoised to t = 0 and read by the factor classifier. Score = "
                  "change of the edited factor / (that + mean change of the others): 1 only the target "
                  "moves, 0.5 no selectivity (or no change: see the change in brackets, relative to the "
                  "difference between two images).", "", edits_table(doc["edits"])]
    levels = doc["levels"]["levels"]
    parts += ["", "## Reconstruction and disentanglement per level", "",
              "Reconstructions of held-out images decoded from the cached μ_t"
              + (" (IoU of the binarised reconstruction and input; shape accuracy = the factor classifier "
                 "reads the input's shape in the reconstruction; valid = render consistency ≥ 0.9)"
                 if any("recon_iou_to_input" in lvl for lvl in levels) else "") + ":",
              "", level_table(levels, LEVEL_COLUMNS[:RECON_COLUMNS]), "",
              "Disentanglement of μ_t of the training images at the levels `metrics.levels` selects "
              "(RF = random-forest DCI, for the curve):", "",
              level_table(scored_levels(levels), LEVEL_COLUMNS[:2] + LEVEL_COLUMNS[RECON_COLUMNS:])]
    if any(basis_prefix(b) + "factorvae_score" in lvl for b in bases for lvl in levels):
        parts += ["", f"Best level per basis (primary: {BASIS_NAMES.get(primary, primary)}):", "",
                  basis_table(levels, bases, primary)]
    else:
        best = best_levels(levels)
        if best:
            parts += ["", "| score | best level t | β there | best value | value at t = 0 |", "|---|---|---|---|---|"]
            parts += [f"| {key} | {lvl['t']:.3f} | {lvl['beta']:.3g} | {lvl[key]:.3f} | "
                      f"{_fmt(levels[0].get(key), '{:.3f}')} |" for key, lvl in best]
    parts += ica_fit_text(scored_levels(levels), doc["levels"].get("ica_optima"))
    best_dci = doc["levels"].get("best_level_dci")
    if best_dci:
        parts += ["", f"DCI at the best level (t = {best_dci['t']:.3f}, β = {best_dci['beta']:.3g}) with "
                  f"the published estimator ({best_dci['estimator']}, as disentanglement_lib):", "",
                  best_dci_table(best_dci)]
    if doc.get("baselines"):
        parts += ["", "## Multi-β VAE against fixed-β VAEs", "", baseline_table(doc["baselines"])]
    if figures:
        parts += ["", "## Figures", ""]
        for caption, path in figures.items():
            parts += [f"**{caption}**", "", f"![{caption}]({_rel(path, here)})", ""]
    if doc.get("timings"):
        parts += ["## Time per job", "", "From Snakemake's benchmark files.", "", timing_table(doc["timings"])]
    return "\n".join(parts) + "\n"
