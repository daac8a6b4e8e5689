"""Cost of β-conditioning: one training step of the multi-β VAE vs the same network at a fixed β.

Both trainers (default ``vae`` config unless overridden) are built in the same process and
stepped alternately (A, B, A, B, ...) on dSprites images, so load from other processes hits
both alike. After a warm-up, the median time of a step is reported for each mode and for each
thread count; overhead = median(multi) / median(fixed) − 1 (target ≤ 10 %). Steps/s of the
multi-β trainer doubles as the throughput estimate used to size ``vae.steps``.

    python benchmarks/vae_conditioning.py [--threads 1 2] [--steps 30] [--batch-size 64]

Writes ``benchmarks/results/vae_conditioning.json``.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from multibeta.data.dsprites import generate_dsprites
from multibeta.utils.device import select_runtime
from multibeta.utils.io import write_json
from multibeta.utils.versions import collect_versions
from multibeta.vae.config import VAEConfig
from multibeta.vae.trainer import TensorSource, VAETrainer
from multibeta.workflow.config import section_defaults

logger = logging.getLogger("benchmarks.vae_conditioning")
OUT = Path(__file__).resolve().parent / "results" / "vae_conditioning.json"


def machine_info() -> dict:
    """CPU model, core count and the 1-minute load average (other processes share the CPU)."""
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cpu_count": os.cpu_count(), "loadavg_1m": os.getloadavg()[0],
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def time_modes(cfg: VAEConfig, images: torch.Tensor, *, threads: int, device: str, steps: int,
               warmup: int) -> dict:
    """Alternate steps of the multi-β and fixed-β trainers; median seconds per step of each."""
    runtime = select_runtime(device, "auto", threads)
    fixed_beta = (cfg.beta_min * cfg.beta_max) ** 0.5
    trainers = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode, c in (("multi_beta", cfg), ("fixed_beta", cfg.with_fixed_beta(fixed_beta))):
            trainers[mode] = VAETrainer(c, TensorSource(images), runtime=runtime,
                                        checkpoint_path=Path(tmp) / f"{mode}.pt", log_csv=None,
                                        progress=False)
        times: dict[str, list[float]] = {m: [] for m in trainers}
        for i in range(warmup + steps):
            for mode, trainer in trainers.items():
                if runtime.is_cuda:
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                trainer.train_step()  # ends with a host sync (the logged values)
                if i >= warmup:
                    times[mode].append(time.perf_counter() - t0)
    med = {m: statistics.median(v) for m, v in times.items()}
    return {
        "threads": torch.get_num_threads(),
        "device": str(runtime.device),
        "median_step_s": med,
        "steps_per_s": {m: 1.0 / v for m, v in med.items()},
        "all_step_s": times,
        "overhead": med["multi_beta"] / med["fixed_beta"] - 1.0,
        "fixed_beta": fixed_beta,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    load_start = os.getloadavg()[0]
    cfg = VAEConfig.from_section(section_defaults("vae", {"batch_size": args.batch_size}))
    images = torch.from_numpy(generate_dsprites(4096, seed=0, progress=False).images)
    runs = []
    for threads in args.threads:
        r = time_modes(cfg, images, threads=threads, device=args.device, steps=args.steps,
                       warmup=args.warmup)
        logger.info("threads=%d: multi %.1f ms, fixed %.1f ms, overhead %+.1f%%, %.2f steps/s",
                    threads, 1e3 * r["median_step_s"]["multi_beta"], 1e3 * r["median_step_s"]["fixed_beta"],
                    100 * r["overhead"], r["steps_per_s"]["multi_beta"])
        runs.append(r)
    write_json({
        "benchmark": "vae_conditioning",
        "description": "median seconds per training step, multi-beta vs fixed-beta, same network, "
                       "alternating steps in one process",
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "arch": cfg.vae_arch(1).to_dict(),
        "runs": runs,
        "machine": {**machine_info(), "loadavg_1m_start": load_start},
        "versions": collect_versions(),
    }, args.out)
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
