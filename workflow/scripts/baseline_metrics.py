"""Rule baseline_metrics: a fixed-beta VAE against the multi-beta VAE at the same beta."""

import logging

from multibeta.metrics.config import MetricsConfig
from multibeta.metrics.factor_classifier import load_factor_classifier
from multibeta.workflow.config import section_defaults
from multibeta.metrics.levels import evaluate_vae_at
from multibeta.models.vae import load_vae
from multibeta.utils.io import write_json
from multibeta.workflow.jobs import start_job

logger = logging.getLogger("multibeta.rules.baseline_metrics")


def main(smk) -> None:
    runtime = start_job(smk)
    cfg = MetricsConfig.from_section(section_defaults("metrics", smk.params.metrics))
    beta = float(smk.wildcards.beta)
    baseline, _ = load_vae(smk.input.baseline, map_location=runtime.device)
    multibeta, _ = load_vae(smk.input.vae, map_location=runtime.device)
    n_codes = max(cfg.mig.n_train, cfg.tad.n_images)
    classifier = None
    if smk.input.get("classifier"):
        classifier, _ = load_factor_classifier(smk.input.classifier, runtime.device)
    t_multi = float(multibeta.t_of_beta(beta))
    result = {
        "beta": beta,
        "fixed_beta": evaluate_vae_at(baseline.eval(), float(baseline.fixed_t), smk.input.dataset,
                                      cfg, runtime, n_codes=n_codes, seed=cfg.seed,
                                      classifier=classifier),
        "multibeta": evaluate_vae_at(multibeta.eval(), t_multi, smk.input.dataset, cfg, runtime,
                                     n_codes=n_codes, seed=cfg.seed, classifier=classifier),
        "multibeta_t": t_multi,
    }
    logger.info("baseline beta=%g: %s", beta, result)
    write_json(result, smk.output.metrics)


main(snakemake)  # noqa: F821 - injected by Snakemake's script directive
