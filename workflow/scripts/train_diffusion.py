"""Rule train_diffusion: train one latent denoiser variant on the latent cache.

The checkpoint, log and loss-curve paths are the rule's outputs. An interrupted run resumes
from ``resume.pt`` beside the checkpoint (same config and cache); one left by another config
or cache is kept as ``resume.stale`` and training starts again.
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
    model_path = train_diffusion(
        cfg,
        variant=smk.wildcards.variant,
        cache=smk.input.cache,
        model_path=smk.output.model,
        log_csv=smk.output.log_csv,
        state_path=Path(smk.output.model).with_name("resume.pt"),
        runtime=runtime,
    )
    logger.info("denoiser written to %s", model_path)
    plot_training_curves({smk.wildcards.variant: smk.output.log_csv}, smk.output.losses)


main(snakemake)  # noqa: F821 - injected by Snakemake's script directive
