"""Rule train_factor_classifier: a CNN predicting the ground-truth factors, the domain feature space."""

import logging

from multibeta.data.h5io import ImageDataset
from multibeta.metrics.config import MetricsConfig
from multibeta.workflow.config import section_defaults
from multibeta.metrics.factor_classifier import train_factor_classifier
from multibeta.utils.io import write_json
from multibeta.workflow.jobs import start_job

logger = logging.getLogger("multibeta.rules.train_factor_classifier")


def main(smk) -> None:
    runtime = start_job(smk)
    cfg = MetricsConfig.from_section(section_defaults("metrics", smk.params.metrics))
    dataset = ImageDataset(smk.input.dataset, split="train")
    meta = dataset.metadata
    summary = train_factor_classifier(
        dataset, dataset.factor_classes(), meta["factor_sizes"], cfg.factor_classifier, runtime,
        smk.output.model, seed=cfg.seed, factor_names=meta["factor_names"],
    )
    logger.info("factor classifier held-out accuracy: %s", summary)
    write_json({"accuracy": summary}, smk.output.summary)


main(snakemake)  # noqa: F821 - injected by Snakemake's script directive
