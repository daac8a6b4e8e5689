"""Before/after of the one optimisation kept in the metric jobs: DCI's random forests on all cores.

level_metrics is the slowest job of the default run, and DCI's random forests were ~75% of
it (cProfile of one level). This times compute_dci on synthetic dSprites-sized codes with
the forests on one core (before) and on every available core (after), alternating, and
checks the scores are identical (trees are seeded before they are built).

    .venv/bin/python benchmarks/dci_threads.py [--repeats 3]

Writes ``benchmarks/results/dci_threads.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from multibeta.metrics import dci
from multibeta.metrics.config import MetricsConfig
from multibeta.utils.io import write_json
from multibeta.utils.versions import collect_versions
from multibeta.workflow.config import section_defaults

OUT = Path(__file__).resolve().parent / "results" / "dci_threads.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = 20000
    sizes = (3, 6, 40, 32, 32)
    classes = np.stack([rng.integers(0, k, n) for k in sizes], axis=1)
    codes = (classes / np.array(sizes)) @ rng.normal(size=(5, 10)) + 0.3 * rng.normal(size=(n, 10))
    cfg = MetricsConfig.from_section(section_defaults("metrics", {})).dci
    cores = dci.available_cores()
    times: dict[str, list[float]] = {"1": [], str(cores): []}
    scores = {}
    original = dci.available_cores
    for _ in range(args.repeats):
        for jobs in times:
            dci.available_cores = lambda j=int(jobs): j
            start = time.perf_counter()
            scores[jobs] = dci.compute_dci(codes.astype(np.float32), classes, cfg, seed=0)["dci_disentanglement"]
            times[jobs].append(time.perf_counter() - start)
    dci.available_cores = original
    result = {
        "benchmark": "dci_threads", "cores": cores, "loadavg_1m": os.getloadavg()[0],
        "median_s": {k: statistics.median(v) for k, v in times.items()}, "all_s": times,
        "identical_scores": len(set(scores.values())) == 1, "dci_disentanglement": scores,
        "versions": collect_versions(),
    }
    write_json(result, OUT)
    print(result["median_s"], "identical:", result["identical_scores"])


if __name__ == "__main__":
    main()
