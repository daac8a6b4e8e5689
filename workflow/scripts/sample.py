"""Rule sample: one sampling.runs entry -> latents, decoded images, a PNG grid and timing."""

import logging

import torch

from multibeta.cache.latent_cache import LatentCache
from multibeta.core.config import from_section, to_dict
from multibeta.sampling.config import GridConfig, SampleRunConfig
from multibeta.sampling.grids import save_sample_grid
from multibeta.sampling.loading import load_sampling_models
from multibeta.sampling.samplers import GaussianPrior, sample_run, start_mismatch
from multibeta.sampling.store import write_samples
from multibeta.utils.io import write_json
from multibeta.workflow.jobs import start_job

logger = logging.getLogger("multibeta.rules.sample")


def main(smk) -> None:
    runtime = start_job(smk)
    run = from_section(SampleRunConfig, smk.params.run, f"sampling.runs[{smk.wildcards.run}]")
    grid = from_section(GridConfig, smk.params.grid, "sampling.grid")
    models = load_sampling_models(smk.input.vae, smk.input.diffusion, runtime.device)
    prior, mismatch = None, {}
    if run.variant != "standard_ldm":  # its prior is N(0, I) in normalised t=0 latent space
        cache = LatentCache(smk.input.cache)
        mu_1 = torch.as_tensor(cache.level(cache.num_levels - 1))
        sigma_1 = cache.sigma_1
        mismatch = start_mismatch(mu_1, sigma_1)
        if run.uses_fitted_prior:
            prior = GaussianPrior.from_cache(cache)
    output = sample_run(
        run, models.denoiser, models.sigma, device=runtime, decoder=models.decoder,
        decode_batch_size=smk.params.decode_batch_size, prior=prior,
    )
    timing = {**output.timing, **mismatch}
    write_samples(smk.output.samples, latents=output.latents.numpy(), images=output.images.numpy(),
                  run=to_dict(run), extra=timing)
    save_sample_grid(output.images[: grid.n_images], smk.output.grid, n_cols=grid.n_cols,
                     title=f"{run.name}: {run.variant}, {run.solver}, {run.steps} steps, eta={run.eta:g}")
    write_json(timing, smk.output.timing)
    logger.info("run %s: %s", run.name, timing)


main(snakemake)  # noqa: F821 - injected by Snakemake's script directive
