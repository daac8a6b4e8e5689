"""Rule generation_metrics: FID/KID of one sampling run in each configured feature space; on
dSprites also render consistency (valid shapes) and factor coverage of the samples (other data
with factors record why these do not apply, under ``not_applicable``)."""

import json
import logging

from multibeta.data.h5io import ImageDataset, read_metadata
from multibeta.metrics.config import MetricsConfig
from multibeta.metrics.factor_classifier import load_factor_classifier
from multibeta.metrics.render_consistency import not_applicable, score_images
from multibeta.workflow.config import section_defaults
from multibeta.metrics.fidelity import compute_fidelity, feature_space
from multibeta.sampling.store import read_samples
from multibeta.utils.io import write_json
from multibeta.workflow.jobs import start_job

logger = logging.getLogger("multibeta.rules.generation_metrics")


def main(smk) -> None:
    runtime = start_job(smk)
    cfg = MetricsConfig.from_section(section_defaults("metrics", smk.params.metrics))
    images = read_samples(smk.input.samples)["images"]
    with open(smk.input.timing) as fh:
        timing = json.load(fh)
    result = {"run": smk.params.run, "timing": timing, "n_samples": int(len(images))}
    for name in cfg.generation.feature_spaces:
        space = feature_space(name, cfg, factor_classifier_path=smk.input.get("classifier"))
        result[name] = compute_fidelity(
            images, None, space, runtime, cfg.generation, seed=cfg.seed,
            reference_cache=smk.input[f"reference_{name}"],
        )
    if smk.input.get("classifier"):
        reason = not_applicable(read_metadata(smk.input.dataset))
        if reason:  # Shapes3D, MPI3D, an image folder: no renderer to redraw their factors
            logger.info("%s; not computed", reason)
            result["not_applicable"] = {"render": reason}
        else:  # dSprites: are the samples valid shapes, and do they cover the factor distribution?
            classifier, _ = load_factor_classifier(smk.input.classifier, runtime.device)
            train = ImageDataset(smk.input.dataset, split="train", max_memory_bytes=0)
            result["render"] = score_images(classifier, images, device=runtime.device,
                                            reference_classes=train.factor_classes(), seed=cfg.seed)
    logger.info("generation metrics: %s", result)
    write_json(result, smk.output.metrics)


main(snakemake)  # noqa: F821 - injected by Snakemake's script directive
