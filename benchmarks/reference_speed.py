"""The machine's speed today: images/s of one fixed reference workload.

These 2-core machines differ by up to 2x from day to day (the same default run took 8 min 19 s
on one day and 20 min 27 s on another, idle). Every wall time this project reports is therefore
quoted next to the reference speed measured in the same session: images/s of a plain β-VAE
training step (the default ``vae`` architecture at fixed β = 1, batch 64, fp32, on procedural
dSprites), the median of ``--steps`` timed steps after ``--warmup`` untimed ones.

    .venv/bin/python benchmarks/reference_speed.py [--threads 2] [--steps 40]

Appends one line to ``benchmarks/results/reference_speed.jsonl`` (time, speed, threads, load).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
from multibeta.data.dsprites import NUM_IMAGES, factor_grid, render  # noqa: E402
from multibeta.utils.device import select_runtime  # noqa: E402
from multibeta.vae.config import VAEConfig  # noqa: E402
from multibeta.vae.trainer import TensorSource, VAETrainer  # noqa: E402
from multibeta.workflow.config import section_defaults  # noqa: E402

LOG = REPO / "benchmarks" / "results" / "reference_speed.jsonl"
BATCH = 64


def reference_speed(threads: int | None = None, *, steps: int = 40, warmup: int = 10) -> dict[str, float]:
    """Images/s of a plain β-VAE training step on the CPU (see the module docstring)."""
    runtime = select_runtime("cpu", "fp32", threads)
    rows = np.random.default_rng(0).choice(NUM_IMAGES, 2048, replace=False)
    images = torch.from_numpy(render(factor_grid(rows)[0]))
    cfg = VAEConfig.from_section(section_defaults("vae", {"fixed_beta": 1.0, "batch_size": BATCH,
                                                          "steps": steps + warmup}))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = VAETrainer(cfg, TensorSource(images), runtime=runtime, checkpoint_path=Path(tmp) / "m.pt",
                             log_csv=None, progress=False)
        times = []
        for i in range(steps + warmup):
            start = time.perf_counter()
            trainer.train_step()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    return {"images_per_s": BATCH / step_s, "step_s": step_s, "threads": torch.get_num_threads(),
            "loadavg_1m": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--note", default="", help="recorded with the measurement")
    args = parser.parse_args()
    result = reference_speed(args.threads, steps=args.steps)
    result.update(time=datetime.now(timezone.utc).isoformat(timespec="seconds"), note=args.note)
    LOG.parent.mkdir(parents=True, exist_ok=True)
    with open(LOG, "a") as fh:
        fh.write(json.dumps(result) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
