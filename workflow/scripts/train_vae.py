"""Rules train_vae and train_vae_baseline: train the multi-beta VAE (or a fixed-beta baseline).

An interrupted run resumes from the partial state beside the checkpoint. A partial state
left by a run with another config is kept (renamed ``*.stale``) and training starts afresh.
"""

import logging
from pathlib import Path

from multibeta.utils.checkpoint import CheckpointMismatchError
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
    partial = model.with_name(f".{model.stem}.partial.pt")

    def run():
        return train_vae(cfg, smk.input.dataset, checkpoint_path=model, log_csv=smk.output.log_csv,
                         runtime=runtime, state_path=partial)

    try:
        result = run()
    except CheckpointMismatchError as exc:
        stale = partial.with_suffix(".stale")
        logger.warning("partial state %s is from another config (%s); kept as %s, starting afresh",
                       partial, exc, stale)
        partial.rename(stale)
        result = run()
    logger.info("VAE training finished: %s", result)


main(snakemake)  # noqa: F821 - injected by Snakemake's script directive
