"""Rule vae_plots: Stage 1 diagnostics on held-out images (losses, sigma vs beta, trade-off, grid)."""

import logging
from pathlib import Path

from multibeta.models.vae import load_vae
from multibeta.utils.io import write_json
from multibeta.vae.config import VAEConfig
from multibeta.vae.evaluation import rec_metric_for
from multibeta.vae.plots import write_vae_plots
from multibeta.workflow.config import section_defaults
from multibeta.workflow.jobs import start_job

logger = logging.getLogger("multibeta.rules.vae_plots")


def main(smk) -> None:
    runtime = start_job(smk)
    cfg = VAEConfig.from_section(section_defaults("vae", dict(smk.params.vae)))
    model, _ = load_vae(smk.input.model, map_location=runtime.device)
    result = write_vae_plots(
        model, smk.input.dataset, smk.input.log_csv, Path(smk.output.sigma).parent, cfg.evaluation,
        metric=rec_metric_for(cfg.reconstruction), device=runtime.device,
    )
    write_json({"levels": result["levels"], "prior_gap": result["prior_gap"]}, smk.output.levels)
    logger.info("VAE plots: %s", result["plots"])


main(snakemake)  # noqa: F821 - injected by Snakemake's script directive
