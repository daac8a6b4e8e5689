"""Per-rule times of a finished run, from Snakemake's ``benchmark:`` files.

    .venv/bin/python benchmarks/run_times.py [--experiment default] [--wall SECONDS]

Reads ``results/<experiment>/benchmarks/*.tsv`` and ``results/datasets/**/*.benchmark.tsv``
(wall seconds, peak RSS, CPU seconds; jobs in the order they finished) and writes
``benchmarks/results/<experiment>_run_times.md``. ``--wall`` adds the measured end-to-end wall
time of the ``snakemake`` command (e.g. from ``/usr/bin/time``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
from multibeta.report.collect import read_benchmark  # noqa: E402
from multibeta.utils.io import write_text  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="default")
    parser.add_argument("--results", type=Path, default=REPO / "results")
    parser.add_argument("--wall", type=float, default=None, help="end-to-end wall seconds")
    args = parser.parse_args()
    files = sorted((args.results / args.experiment / "benchmarks").glob("*.tsv"))
    files += sorted(args.results.glob("datasets/*/**/*.benchmark.tsv"))
    if not files:
        raise SystemExit(f"no benchmark files under {args.results / args.experiment}; run the pipeline first")
    jobs = sorted(((p, read_benchmark(p)) for p in files), key=lambda item: item[0].stat().st_mtime)
    lines = ["| job | wall s | CPU s | peak RSS MB |", "|---|---|---|---|"]
    for path, row in jobs:
        name = path.name.removesuffix(".benchmark.tsv").removesuffix(".tsv")
        lines.append(f"| {name} | {row['seconds']:.1f} | {row['cpu_s']:.1f} | {row['max_rss_mb']:.0f} |")
    total = sum(row["seconds"] for _, row in jobs)
    lines.append(f"| **sum of jobs** | **{total:.0f}** | **{sum(r['cpu_s'] for _, r in jobs):.0f}** | |")
    if args.wall is not None:
        lines.append(f"| **end-to-end wall** | **{args.wall:.0f}** | | |")
    out = REPO / "benchmarks" / "results" / f"{args.experiment}_run_times.md"
    write_text("\n".join(lines) + "\n", out)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
