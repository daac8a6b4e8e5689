"""Rule sharpen: input | decode of mu_{t_b} at t_b | denoised from t_b to 0, for held-out images,
with scores of both against the input (metrics/sharpen.json)."""

import logging

from multibeta.core.config import from_section
from multibeta.data.h5io import read_metadata, spread_positions
from multibeta.metrics.factor_classifier import load_factor_classifier
from multibeta.metrics.render_consistency import not_applicable
from multibeta.metrics.sharpening import score_sharpening
from multibeta.sampling.config import SharpenConfig
from multibeta.sampling.edit import save_sharpening_grid, sharpen, spread_images
from multibeta.sampling.loading import load_sampling_models
from multibeta.utils.io import write_json
from multibeta.workflow.jobs import start_job

logger = logging.getLogger("multibeta.rules.sharpen")


def main(smk) -> None:
    runtime = start_job(smk)
    cfg = from_section(SharpenConfig, smk.params.sharpen, "sampling.sharpen")
    models = load_sampling_models(smk.input.vae, smk.input.diffusion, runtime.device)
    images = spread_images(smk.input.dataset, cfg.split, max(cfg.n_images, cfg.n_metric_images))
    result = sharpen(models.encoder, models.decoder, models.denoiser, models.sigma, images, cfg,
                     levels=cfg.levels, start=cfg.start, inversion_steps=cfg.inversion_steps, device=runtime)
    n = len(images)
    save_sharpening_grid(result.select(spread_positions(n, cfg.n_images)), smk.output.grid)
    logger.info("sharpening grid written to %s", smk.output.grid)
    classifier, reason = None, None
    if smk.input.get("classifier"):
        reason = not_applicable(read_metadata(smk.input.dataset))
        if reason:
            logger.info("%s; sharpening is scored by MSE only", reason)
        else:  # dSprites: IoU to the input and render consistency too
            classifier, _ = load_factor_classifier(smk.input.classifier, runtime.device)
    scores = score_sharpening(result.select(spread_positions(n, cfg.n_metric_images)), classifier=classifier,
                              device=runtime.device)
    if reason:
        scores["not_applicable"] = {"render": reason}
    for level in scores["levels"]:
        logger.info("t_b=%.2f decoded %s | denoised %s", level["t_b"], level["decoded"], level["denoised"])
    write_json(scores, smk.output.metrics)


main(snakemake)  # noqa: F821 - injected by Snakemake's script directive
