"""Rule export_bundle: the experiment's trained models and tables as one verifiable folder."""

import logging

from multibeta.bundle.export import export_bundle
from multibeta.workflow.jobs import start_job

logger = logging.getLogger("multibeta.rules.export_bundle")


def main(smk) -> None:
    start_job(smk, needs_runtime=False)
    names = list(smk.input.keys())
    variants = [n.removeprefix("denoiser_") for n in names if n.startswith("denoiser_")]
    training = {"vae_train_log.csv": smk.input.vae_log}
    for v in variants:
        training[f"{v}_train_log.csv"] = smk.input[f"log_{v}"]
        training[f"{v}_loss_curves.png"] = smk.input[f"losses_{v}"]
    directions = smk.params.config["sampling"]["directions"]
    export_bundle(
        smk.output.bundle,
        experiment=smk.wildcards.exp,
        vae_path=smk.input.vae,
        denoiser_paths={v: smk.input[f"denoiser_{v}"] for v in variants},
        cache_path=smk.input.cache,
        config=smk.params.config,
        metrics_path=smk.input.metrics,
        training_files=training,
        directions_t_b=directions["t_b"],
        n_directions=directions["n_components"],
        orientation=directions["orientation"],
    )


main(snakemake)  # noqa: F821 - injected by Snakemake's script directive
