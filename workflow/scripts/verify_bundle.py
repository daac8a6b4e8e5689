"""Rule verify_bundle: check a bundle's files against its manifest before any job reads them."""

import logging

from multibeta.bundle.load import Bundle
from multibeta.utils.io import write_json
from multibeta.workflow.jobs import start_job

logger = logging.getLogger("multibeta.rules.verify_bundle")


def main(smk) -> None:
    start_job(smk, needs_runtime=False)
    bundle = Bundle.open(smk.params.bundle)  # raises BundleError naming each bad file
    write_json({"bundle": str(smk.params.bundle), "files": len(bundle.manifest["files"]),
                "experiment": bundle.experiment, "version_warnings": bundle.version_warnings},
               smk.output.stamp)
    logger.info("bundle %s verified (%d files)", smk.params.bundle, len(bundle.manifest["files"]))


main(snakemake)  # noqa: F821 - injected by Snakemake's script directive
