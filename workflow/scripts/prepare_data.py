"""Rule prepare_data: generate (or read) the dataset and write it as one HDF5 file."""

import logging

from multibeta.data.prepare import prepare_dataset
from multibeta.utils.logs import setup_logging

logger = logging.getLogger("multibeta.rules.prepare_data")


def main(smk) -> None:
    setup_logging(smk.log[0])
    summary = prepare_dataset(smk.params.data, smk.output.dataset, workers=smk.threads)
    logger.info("dataset written to %s: %s", smk.output.dataset, summary)


main(snakemake)  # noqa: F821 - injected by Snakemake's script directive
