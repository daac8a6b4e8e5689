"""Rule edit_directions: direction families per factor, the selectivity of their edits, figures."""

import logging

import numpy as np
import torch

from multibeta.cache.latent_cache import LatentCache
from multibeta.core.config import from_section, to_dict
from multibeta.data.h5io import ImageDataset, spread_positions
from multibeta.metrics.edit_study import run_edit_study
from multibeta.metrics.factor_classifier import load_factor_classifier
from multibeta.sampling.config import DirectionsConfig
from multibeta.sampling.direction_plots import direction_grid_title, save_direction_grid, save_edit_score_plot
from multibeta.sampling.loading import load_sampling_models
from multibeta.utils.bases import IcaSettings
from multibeta.utils.io import write_json
from multibeta.workflow.jobs import start_job

logger = logging.getLogger("multibeta.rules.edit_directions")


def main(smk) -> None:
    runtime = start_job(smk)
    cfg = from_section(DirectionsConfig, smk.params.directions, "sampling.directions")
    models = load_sampling_models(smk.input.vae, smk.input.diffusion, runtime.device)
    classifier, _ = load_factor_classifier(smk.input.classifier, runtime.device)
    cache = LatentCache(smk.input.cache)
    train = cache.rows("train")  # in factor-grid order: spread the fitted rows over it
    rows = train[spread_positions(len(train), cfg.n_fit)]
    fit_labels = np.asarray(cache.metadata("factor_classes"))[rows]

    def latents_at(t: float) -> torch.Tensor:
        return cache.mu_at_level(rows, t)

    data = ImageDataset(smk.input.dataset, split=cfg.split)
    positions = spread_positions(len(data), cfg.n_images)
    images = data.tensor_batch(positions)
    image_labels = data.factor_classes(data.rows[positions])
    names, sizes = list(data.metadata["factor_names"]), [int(s) for s in data.metadata["factor_sizes"]]
    results, metrics = run_edit_study(models, classifier, latents_at, fit_labels, images, image_labels,
                                      names, sizes, cfg, runtime=runtime, seed=smk.params.seed,
                                      ica=from_section(IcaSettings, smk.params.ica, "metrics.ica"))
    for family, res in results.items():
        save_direction_grid(res.grid, res.directions, cfg.grid_amounts, smk.output[f"grid_{family}"],
                            title=direction_grid_title(family, res.t, res.denoised))
    save_edit_score_plot({f: ([names[k] for k in r.scores.targets], r.scores.score, r.scores.target_change)
                          for f, r in results.items()}, smk.output.scores)
    write_json({"metrics": metrics, "families": list(results), "factors": list(names), "config": to_dict(cfg),
                "n_images": int(len(images)), "n_fit": int(len(rows))}, smk.output.metrics)


main(snakemake)  # noqa: F821 - injected by Snakemake's script directive
