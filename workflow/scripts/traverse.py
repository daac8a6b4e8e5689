"""Rule traverse: move a t_b latent along latent dimensions, PCA and ICA directions, denoise, decode."""

import logging

from multibeta.core.config import from_section
from multibeta.sampling.config import TraverseConfig
from multibeta.sampling.edit import (
    basis_directions, encode_images, save_traversal_grid, spread_images, traversal_values, traverse,
)
from multibeta.sampling.loading import load_sampling_models
from multibeta.utils.bases import IcaSettings
from multibeta.workflow.jobs import start_job

logger = logging.getLogger("multibeta.rules.traverse")


def main(smk) -> None:
    runtime = start_job(smk)
    cfg = from_section(TraverseConfig, smk.params.traverse, "sampling.traverse")
    models = load_sampling_models(smk.input.vae, smk.input.diffusion, runtime.device)
    images = spread_images(smk.input.dataset, cfg.split, cfg.pca_samples)
    latents = encode_images(models.encoder, images, cfg.t_b, batch_size=cfg.batch_size, device=runtime)
    base = latents.mean(0) if cfg.base == "mean" else latents[min(cfg.base_index, len(images) - 1)]
    values = traversal_values(cfg.span, cfg.n_values)
    for directions, path in (
        (basis_directions(latents, "dims", cfg.max_dims), smk.output.dims),
        (basis_directions(latents, "pca", cfg.n_pca), smk.output.pca),
        # the ICA basis is fitted with the metrics' seed and starts, as the disentanglement scores are
        (basis_directions(latents, "ica", cfg.n_pca, seed=smk.params.seed,
                          ica=from_section(IcaSettings, smk.params.ica, "metrics.ica")), smk.output.ica),
    ):
        grid = traverse(models.denoiser, models.sigma, models.decoder, base, directions, values, cfg,
                        t_b=cfg.t_b, device=runtime)
        save_traversal_grid(grid, directions, values, path, t_b=cfg.t_b)
        logger.info("%s traversal (%d directions) written to %s", directions.name,
                    len(directions.labels), path)


main(snakemake)  # noqa: F821 - injected by Snakemake's script directive
