"""Rule prepare_data: generate (or read) the dataset and write it as one HDF5 file."""

import logging

from multibeta.data.prepare import prepare_dataset
from multibeta.utils.logs import setup_logging
from multibeta.workflow.config import section_defaults

logger = logging.getLogger("multibeta.rules.prepare_data")


def main(smk) -> None:
    setup_logging(smk.log[0])
    # the rule passes the section without the keys that hold defaults added later; refill them
    section = section_defaults("data", dict(smk.params.data))
    summary = prepare_dataset(section, smk.output.dataset, workers=smk.threads)
    logger.info("dataset written to %s: %s", smk.output.dataset, summary)


main(snakemake)  # noqa: F821 - injected by Snakemake's script directive
