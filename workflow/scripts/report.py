"""Rule report: gather every metric of the experiment into metrics.json and report.md."""

import logging
from pathlib import Path

from multibeta.report.collect import collect_report
from multibeta.report.markdown import render_report
from multibeta.report.plots import plot_level_curves
from multibeta.utils.io import write_json, write_text
from multibeta.utils.logs import setup_logging

logger = logging.getLogger("multibeta.rules.report")


def main(smk) -> None:
    setup_logging(smk.log[0])
    benchmarks = sorted(Path(smk.params.benchmarks).glob("*.tsv"))
    # the dataset's shared jobs (data preparation, factor classifier) count towards this run
    benchmarks += [Path(p) for p in smk.params.shared_benchmarks if Path(p).is_file()]
    doc = collect_report(
        experiment=smk.wildcards.exp, config=smk.params.config,
        generation=smk.input.generation, levels=smk.input.levels, baselines=smk.input.baselines,
        classifier=smk.input.get("classifier"), vae_levels=smk.input.vae_levels,
        sharpen=smk.input.sharpen_metrics, edits=(smk.input.edits or [None])[0], benchmarks=benchmarks,
    )
    primary = smk.params.config["metrics"]["primary_basis"]
    plot_level_curves(doc["levels"]["levels"], smk.output.curves, basis=primary)
    figures = {f"Metrics against β (disentanglement in the {primary} basis)": smk.output.curves}
    figures.update({f"Samples: {Path(p).parent.name}": p for p in smk.input.sample_grids})
    sharpening, *traversals = smk.input.figures
    figures["Sharpening: input | decoded at t_b | denoised from t_b to 0"] = sharpening
    captions = {"dims": "latent dimensions", "pca": "PCA directions", "ica": "ICA directions"}
    # the primary basis first
    for path in sorted(traversals, key=lambda p: not Path(p).stem.endswith(f"_{primary}")):
        basis = Path(path).stem.split("_", 1)[1]
        figures[f"Traversal along {captions.get(basis, basis)}" + (" (primary basis)" if basis == primary else "")] = path
    vae_captions = ("VAE losses", "σ_t against β", "KL and reconstruction against β", "Reconstructions at 8 β")
    figures.update(dict(zip(vae_captions, smk.input.vae_plots)))
    figures.update({f"Diffusion losses: {Path(p).parent.name}": p for p in smk.input.diffusion_losses})
    edit_captions = {"edit_scores": "Edit selectivity per factor and direction family"}
    figures.update({edit_captions.get(Path(p).stem, f"Edits along {Path(p).stem.removeprefix('edits_')} "
                    "directions"): p for p in smk.input.edit_figures})
    write_json(doc, smk.output.metrics)
    write_text(render_report(doc, out_path=smk.output.markdown, figures=figures), smk.output.markdown)
    logger.info("report written to %s", smk.output.markdown)


main(snakemake)  # noqa: F821 - injected by Snakemake's script directive
