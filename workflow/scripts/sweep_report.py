"""Rule sweep_report: one table comparing the experiments of a sweep."""

from multibeta.report.collect import read_json
from multibeta.report.sweep import render_sweep
from multibeta.utils.io import write_text
from multibeta.utils.logs import setup_logging


def main(smk) -> None:
    setup_logging(smk.log[0])
    write_text(render_sweep([read_json(p) for p in smk.input.metrics]), smk.output.markdown)


main(snakemake)  # noqa: F821 - injected by Snakemake's script directive
