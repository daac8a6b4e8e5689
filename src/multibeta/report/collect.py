"""Gather every number of an experiment into one ``metrics.json`` document.

Inputs are the JSON files the metric rules write (shapes below) and Snakemake's
``benchmark:`` TSV files. Nothing is recomputed here.

- ``generation/<run>.json``: ``{"run": {settings}, "n_samples", "samples_per_s", ...metrics}``
- ``levels.json``: ``{"levels": [{"t", "beta", "sigma", ...metrics}, ...]}``
- ``baselines/beta<β>.json``: ``{"beta", ...metrics}``
- ``accuracy.json`` of the dataset's factor classifier: ``{"accuracy": {...}}`` (data with factors only)
- ``sharpen.json``: ``{"levels": [{"t_b", "decoded": {...}, "denoised": {...}}], "n_images"}``
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterable

from multibeta.utils.io import config_hash
from multibeta.utils.versions import collect_versions


def read_json(path: str | Path) -> dict[str, Any]:
    with open(path) as fh:
        return json.load(fh)


def read_benchmark(path: str | Path) -> dict[str, float]:
    """Wall seconds, peak RSS (MB) and CPU seconds of one job from a Snakemake benchmark TSV
    (the last two only when recorded)."""
    with open(path) as fh:
        row = next(csv.DictReader(fh, delimiter="\t"))
    out = {"seconds": float(row["s"])}
    for column, key in (("max_rss", "max_rss_mb"), ("cpu_time", "cpu_s")):
        try:
            out[key] = float(row[column])
        except (KeyError, ValueError):
            pass
    return out


def benchmark_name(path: str | Path) -> str:
    """Job name of a benchmark file (``<rule>[_<wildcards>].tsv`` or ``<rule>.benchmark.tsv``)."""
    return Path(path).name.removesuffix(".tsv").removesuffix(".benchmark")


def collect_report(
    *,
    experiment: str,
    config: dict[str, Any],
    generation: Iterable[str | Path],
    levels: str | Path,
    baselines: Iterable[str | Path] = (),
    classifier: str | Path | None = None,
    vae_levels: str | Path | None = None,
    sharpen: str | Path | None = None,
    edits: str | Path | None = None,
    benchmarks: Iterable[str | Path] = (),
) -> dict[str, Any]:
    """Build the ``metrics.json`` document (every number, config hash, versions, counts)."""
    runs = {}
    for path in generation:
        doc = read_json(path)
        runs[doc["run"]["name"]] = doc
    return {
        "experiment": experiment,
        "config_hash": config_hash(config),
        "config": config,
        "versions": collect_versions(),
        "generation": runs,
        "levels": read_json(levels),
        "baselines": {f"{read_json(p)['beta']:g}": read_json(p) for p in baselines},
        "factor_classifier": read_json(classifier) if classifier else None,
        "vae_levels": read_json(vae_levels) if vae_levels else None,
        "sharpen": read_json(sharpen) if sharpen else None,
        "edits": read_json(edits) if edits else None,
        "timings": {benchmark_name(p): read_benchmark(p) for p in benchmarks},
    }
