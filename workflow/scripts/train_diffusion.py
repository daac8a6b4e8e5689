"""Rule train_diffusion: train one latent denoiser variant on the latent cache.

An interrupted run resumes from ``resume.pt`` in the output folder (same config and cache).
"""

import logging
from pathlib import Path

from multibeta.diffusion.config import DiffusionConfig
from multibeta.diffusion.plots import plot_training_curves
from multibeta.diffusion.trainer import train_diffusion
from multibeta.workflow.jobs import start_job

logger = logging.getLogger("multibeta.rules.train_diffusion")


def main(smk) -> None:
    runtime = start_job(smk)
    cfg = DiffusionConfig.from_section(smk.params.diffusion)
    out_dir = Path(smk.output.model).parent
    model_path = train_diffusion(
        cfg, variant=smk.wildcards.variant, cache=smk.input.cache, out_dir=out_dir, runtime=runtime
    )
    logger.info("denoiser written to %s", model_path)
    plot_training_curves({smk.wildcards.variant: smk.output.log_csv}, smk.output.losses)


main(snakemake)  # noqa: F821 - injected by Snakemake's script directive
