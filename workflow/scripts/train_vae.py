"""Rules train_vae and train_vae_baseline: train the multi-beta VAE (or a fixed-beta baseline).

An interrupted run resumes from the partial state beside the checkpoint. A partial state
left by a run with another config is kept (renamed ``*.stale``, with a warning naming the
differing keys) and training starts afresh.
"""

import logging
from pathlib import Path

from multibeta.training.resume import default_state_path
from multibeta.vae.config import VAEConfig
from multibeta.vae.trainer import train_vae
from multibeta.workflow.config import section_defaults
from multibeta.workflow.jobs import start_job

logger = logging.getLogger("multibeta.rules.train_vae")


def main(smk) -> None:
    runtime = start_job(smk)
    section = section_defaults("vae", dict(smk.params.vae))
    if "beta" in smk.wildcards.keys():  # train_vae_baseline: the same architecture at one beta
        section["fixed_beta"] = float(smk.wildcards.beta)
    cfg = VAEConfig.from_section(section)
    model = Path(smk.output.model)
    result = train_vae(cfg, smk.input.dataset, checkpoint_path=model, log_csv=smk.output.log_csv,
                       runtime=runtime, state_path=default_state_path(model))
    logger.info("VAE training finished: %s", result)


main(snakemake)  # noqa: F821 - injected by Snakemake's script directive
