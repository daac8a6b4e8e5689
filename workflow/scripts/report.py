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
    doc = collect_report(
        experiment=smk.wildcards.exp, config=smk.params.config,
        generation=smk.input.generation, levels=smk.input.levels, baselines=smk.input.baselines,
        classifier=smk.input.get("classifier"), vae_levels=smk.input.vae_levels, benchmarks=benchmarks,
    )
    plot_level_curves(doc["levels"]["levels"], smk.output.curves)
    figures = {"Metrics against β": smk.output.curves}
    figures.update({f"Samples: {Path(p).parent.name}": p for p in smk.input.sample_grids})
    captions = ("Sharpening", "Traversal along latent dimensions", "Traversal along PCA directions")
    figures.update(dict(zip(captions, smk.input.figures)))
    vae_captions = ("VAE losses", "σ_t against β", "KL and reconstruction against β", "Reconstructions at 8 β")
    figures.update(dict(zip(vae_captions, smk.input.vae_plots)))
    figures.update({f"Diffusion losses: {Path(p).parent.name}": p for p in smk.input.diffusion_losses})
    write_json(doc, smk.output.metrics)
    write_text(render_report(doc, out_path=smk.output.markdown, figures=figures), smk.output.markdown)
    logger.info("report written to %s", smk.output.markdown)


main(snakemake)  # noqa: F821 - injected by Snakemake's script directive
