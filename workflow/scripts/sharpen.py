"""Rule sharpen: input | decode of mu_{t_b} at t_b | denoised from t_b to 0, for held-out images."""

import logging

from multibeta.data.h5io import ImageDataset
from multibeta.sampling.config import SharpenConfig
from multibeta.sampling.edit import save_sharpening_grid, sharpen
from multibeta.sampling.loading import load_sampling_models
from multibeta.workflow.jobs import start_job

logger = logging.getLogger("multibeta.rules.sharpen")


def main(smk) -> None:
    runtime = start_job(smk)
    cfg = SharpenConfig.from_section(smk.params.sharpen)
    models = load_sampling_models(smk.input.vae, smk.input.diffusion, runtime.device)
    dataset = ImageDataset(smk.input.dataset, split=cfg.split)
    images = dataset.tensor_batch(list(range(min(cfg.n_images, len(dataset)))))
    result = sharpen(models.encoder, models.decoder, models.denoiser, models.sigma, images,
                     levels=cfg.levels, device=runtime, **cfg.sampler_kwargs())
    save_sharpening_grid(result, smk.output.grid)
    logger.info("sharpening grid written to %s", smk.output.grid)


main(snakemake)  # noqa: F821 - injected by Snakemake's script directive
