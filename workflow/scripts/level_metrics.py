"""Rule level_metrics: reconstruction and disentanglement of mu_t at every cached level."""

import logging

from multibeta.cache.latent_cache import LatentCache
from multibeta.metrics.config import MetricsConfig
from multibeta.metrics.factor_classifier import load_factor_classifier
from multibeta.workflow.config import section_defaults
from multibeta.metrics.levels import evaluate_cache_levels
from multibeta.models.vae import load_vae
from multibeta.utils.io import file_sha256, write_json
from multibeta.workflow.jobs import start_job

logger = logging.getLogger("multibeta.rules.level_metrics")


def main(smk) -> None:
    runtime = start_job(smk)
    cfg = MetricsConfig.from_section(section_defaults("metrics", smk.params.metrics))
    cache = LatentCache(smk.input.cache)
    cache.check_vae(file_sha256(smk.input.vae))
    vae, _ = load_vae(smk.input.vae, map_location=runtime.device)
    classifier = None
    if smk.input.get("classifier"):
        classifier, _ = load_factor_classifier(smk.input.classifier, runtime.device)
    result = evaluate_cache_levels(cache, vae.eval(), smk.input.dataset, cfg, runtime, classifier=classifier)
    write_json(result, smk.output.metrics)


main(snakemake)  # noqa: F821 - injected by Snakemake's script directive
