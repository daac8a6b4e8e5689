"""Rule reference_features: features of the training images in one feature space, computed once."""

import logging

from multibeta.metrics.config import MetricsConfig
from multibeta.workflow.config import section_defaults
from multibeta.metrics.fidelity import build_reference_features, feature_space, reference_images
from multibeta.workflow.jobs import start_job

logger = logging.getLogger("multibeta.rules.reference_features")


def main(smk) -> None:
    runtime = start_job(smk)
    cfg = MetricsConfig.from_section(section_defaults("metrics", smk.params.metrics))
    space = feature_space(
        smk.wildcards.space, cfg, factor_classifier_path=smk.input.get("classifier")
    )
    images, reference_id = reference_images(
        smk.input.dataset, cfg.generation.n_reference, seed=cfg.seed
    )
    features = build_reference_features(
        images, space, runtime, smk.output.features,
        batch_size=cfg.generation.batch_size, reference_id=reference_id,
    )
    logger.info("reference features %s: %s", smk.wildcards.space, tuple(features.shape))


main(snakemake)  # noqa: F821 - injected by Snakemake's script directive
