"""Rule fetch_weights (local): download every pretrained file into metrics.weights_dir."""

import logging
from pathlib import Path

from multibeta.models.pretrained import fetch_weights
from multibeta.utils.io import write_json
from multibeta.utils.logs import setup_logging

logger = logging.getLogger("multibeta.rules.fetch_weights")


def main(smk) -> None:
    setup_logging(smk.log[0])
    metrics = smk.params.metrics
    paths = fetch_weights(metrics["weights_dir"], timeout_s=metrics["download_timeout_s"])
    for name, path in paths.items():
        logger.info("%s: %s", name, path)
    write_json({name: str(Path(p).resolve()) for name, p in paths.items()}, smk.output.marker)


main(snakemake)  # noqa: F821 - injected by Snakemake's script directive
