"""Rule cache_latents: encode every image at every cached level with the trained VAE."""

import logging

from multibeta.cache.config import CacheConfig
from multibeta.cache.latent_cache import cache_latents
from multibeta.workflow.jobs import start_job

logger = logging.getLogger("multibeta.rules.cache_latents")


def main(smk) -> None:
    runtime = start_job(smk)
    cfg = CacheConfig.from_section(smk.params.cache)
    path = cache_latents(smk.input.model, smk.input.dataset, smk.output.cache, cfg=cfg, runtime=runtime)
    logger.info("latent cache written to %s", path)


main(snakemake)  # noqa: F821 - injected by Snakemake's script directive
