"""Profile of each compute stage's hot path: throughput, data-loading share, CPU use, top ops.

Each stage runs the library code the rule runs, with the default config's settings (batch
sizes, architectures, threads as the rules set them), on a procedurally generated dSprites
set, after a warm-up:

- ``vae_train``: ``VAETrainer.train_step`` (images/s; time spent fetching batches);
- ``cache_encode``: the cache's per-batch encoding at every level (image-levels/s);
- ``diffusion_train``: ``DiffusionTrainer.train_step`` on a cache built by the VAE above;
- ``sample``: ``sample_latents``, 50-step deterministic Euler (samples/s);
- ``decode``: ``decode_latents`` at t = 0 (images/s).

For each stage it records wall time per iteration, the share of it spent loading data, the
CPU utilisation (process CPU time / wall time / torch threads) and the torch profiler's top
operators by self CPU time.

    .venv/bin/python benchmarks/stage_profile.py --label after
    # the same measurements of another checkout (e.g. the code before an optimisation):
    .venv/bin/python benchmarks/stage_profile.py --label before --src /path/to/old/src
    # before/after table:
    .venv/bin/python benchmarks/stage_profile.py --compare before after

Writes ``benchmarks/results/stage_profile_<label>.json`` and, with ``--compare``,
``benchmarks/results/stage_profile.md``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "benchmarks" / "results"

STAGES = ("vae_train", "cache_encode", "diffusion_train", "sample", "decode")
UNITS = {
    "vae_train": "images/s",
    "cache_encode": "image-levels/s",
    "diffusion_train": "steps/s",
    "sample": "samples/s",
    "decode": "images/s",
}


def measure(
    step: Callable[[], Any], *, iters: int, warmup: int, threads: int, profile_iters: int = 3
) -> dict[str, Any]:
    """Time ``iters`` calls of ``step`` after ``warmup`` calls, then profile a few more.

    Returns wall seconds per iteration, CPU utilisation (process CPU time over wall time and
    threads) and the top operators of the torch profiler (self CPU share, percent).
    """
    import torch
    from torch.profiler import ProfilerActivity, profile

    for _ in range(warmup):
        step()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    blocks = []  # three timed blocks; their median resists a noisy neighbour on the machine
    for size in (iters // 3, iters // 3, iters - 2 * (iters // 3)):
        start = time.perf_counter()
        for _ in range(size):
            step()
        blocks.append((time.perf_counter() - start) / max(size, 1))
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(profile_iters):
            step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:8]
    return {
        "seconds_per_iter": sorted(blocks)[1],
        "seconds_per_iter_blocks": blocks,
        "cpu_utilisation": cpu / wall / threads,
        "threads": threads,
        "torch_threads": torch.get_num_threads(),
        "top_ops": [
            {"op": e.key, "self_cpu_pct": round(100.0 * e.self_cpu_time_total / total, 1)}
            for e in top
        ],
    }


def profile_stages(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    from multibeta.cache.config import CacheConfig
    from multibeta.cache.latent_cache import LatentCache, _encode_levels, cache_latents
    from multibeta.data.h5io import ImageDataset
    from multibeta.data.prepare import prepare_dataset
    from multibeta.diffusion.config import DiffusionConfig
    from multibeta.diffusion.trainer import DiffusionTrainer
    from multibeta.models.vae import load_vae
    from multibeta.sampling.samplers import decode_latents, sample_latents
    from multibeta.sampling.settings import SamplerSettings
    from multibeta.utils.device import select_runtime
    from multibeta.utils.versions import collect_versions
    from multibeta.vae.config import VAEConfig
    from multibeta.vae.trainer import VAETrainer, as_source
    from multibeta.workflow.config import section_defaults

    import multibeta

    results: dict[str, Any] = {"label": args.label, "versions": collect_versions(), "stages": {},
                               "package": str(Path(multibeta.__file__).parent)}
    work = Path(tempfile.mkdtemp(prefix="stage_profile_"))
    data_path = work / "dataset.h5"
    prepare_dataset(section_defaults("data", {"name": "dsprites", "size": args.images}), data_path)
    gpu_threads = args.threads

    # --- VAE training ------------------------------------------------------------------
    runtime = select_runtime(args.device, "auto", threads=gpu_threads)
    results["device"] = str(runtime.device)
    vae_cfg = VAEConfig.from_section(section_defaults("vae", {"steps": 1500}))
    source = as_source(data_path)
    trainer = VAETrainer(vae_cfg, source, runtime=runtime, checkpoint_path=work / "vae.pt",
                         log_csv=None, progress=False)
    data_time = [0.0]
    fetch = source.batch

    def timed_fetch(idx: np.ndarray) -> torch.Tensor:
        start = time.perf_counter()
        out = fetch(idx)
        data_time[0] += time.perf_counter() - start
        return out

    source.batch = timed_fetch  # type: ignore[method-assign]
    warmup = 5
    stats = measure(trainer.train_step, iters=args.vae_steps, warmup=warmup, threads=gpu_threads)
    n_calls = args.vae_steps + warmup + 3
    stats["data_share"] = data_time[0] / n_calls / stats["seconds_per_iter"]
    stats["throughput"] = vae_cfg.batch_size / stats["seconds_per_iter"]
    results["stages"]["vae_train"] = stats
    trainer.save_final()

    # --- latent cache ------------------------------------------------------------------
    cache_cfg = CacheConfig.from_section(section_defaults("cache", {}))
    vae, _ = load_vae(work / "vae.pt", map_location=runtime.device)
    dataset = ImageDataset(data_path)
    grid = cache_cfg.grid()
    positions = np.arange(min(cache_cfg.batch_size, len(dataset)))
    data_time[0] = 0.0

    def encode_step() -> None:
        start = time.perf_counter()
        x = dataset.tensor_batch(positions, runtime.device)
        data_time[0] += time.perf_counter() - start
        _encode_levels(vae, x, grid, cache_cfg.delta == "jvp")

    stats = measure(encode_step, iters=args.cache_batches, warmup=1, threads=gpu_threads,
                    profile_iters=1)
    stats["data_share"] = data_time[0] / (args.cache_batches + 2) / stats["seconds_per_iter"]
    stats["throughput"] = len(positions) * len(grid) / stats["seconds_per_iter"]
    results["stages"]["cache_encode"] = stats
    cache_path = cache_latents(work / "vae.pt", data_path, work / "latents.h5", cfg=cache_cfg,
                               runtime=runtime)

    # --- diffusion training (the rule runs it on one thread) ---------------------------
    diff_runtime = select_runtime(args.device, "auto", threads=1)
    diff_cfg = DiffusionConfig.from_section(section_defaults("diffusion", {"steps": 3000}))
    cache = LatentCache(cache_path)
    diff = DiffusionTrainer(diff_cfg, variant="multibeta", cache=cache,
                            model_path=work / "diffusion" / "model.pt", log_csv=None, runtime=diff_runtime)
    sample_time = [0.0]
    draw = diff.sample_batch

    def timed_batch():  # noqa: ANN202 - returns the trainer's Batch
        start = time.perf_counter()
        out = draw()
        sample_time[0] += time.perf_counter() - start
        return out

    diff.sample_batch = timed_batch  # type: ignore[method-assign]
    stats = measure(diff.train_step, iters=args.diffusion_steps, warmup=20, threads=1)
    stats["data_share"] = sample_time[0] / (args.diffusion_steps + 23) / stats["seconds_per_iter"]
    stats["throughput"] = 1.0 / stats["seconds_per_iter"]
    results["stages"]["diffusion_train"] = stats

    # --- sampling and decoding ---------------------------------------------------------
    runtime = select_runtime(args.device, "auto", threads=gpu_threads)
    model = diff.ema.copy_to(copy.deepcopy(diff.model)).eval()
    sigma = cache.sigma_table()

    def sample_step() -> torch.Tensor:
        settings = SamplerSettings(variant="multibeta", steps=50, eta=0.0, solver="euler",
                                   spacing="uniform", seed=0, batch_size=args.samples)
        return sample_latents(model, sigma, settings, n=args.samples, device=runtime,
                              progress=False)

    stats = measure(sample_step, iters=6, warmup=1, threads=gpu_threads, profile_iters=1)
    stats["data_share"] = 0.0
    stats["throughput"] = args.samples / stats["seconds_per_iter"]
    results["stages"]["sample"] = stats
    z = sample_step()

    def decode_step() -> torch.Tensor:
        return decode_latents(vae.decode_image, z, batch_size=250, device=runtime,
                              as_uint8=True, progress=False)

    stats = measure(decode_step, iters=6, warmup=1, threads=gpu_threads, profile_iters=1)
    stats["data_share"] = 0.0
    stats["throughput"] = len(z) / stats["seconds_per_iter"]
    results["stages"]["decode"] = stats
    return results


def compare(labels: list[str]) -> str:
    runs = [json.loads((OUT_DIR / f"stage_profile_{lab}.json").read_text()) for lab in labels]
    lines = [
        "# Stage profiles",
        "",
        "Command: `.venv/bin/python benchmarks/stage_profile.py --label <label> [--src <checkout>/src]`,"
        f" then `--compare {' '.join(labels)}`. Device: {runs[0].get('device', 'cpu')}; "
        f"torch {runs[0]['versions'].get('torch', '?')}.",
        "",
        "| stage | unit | " + " | ".join(labels) + " | change | data share | CPU use |",
        "|---|---|" + "---|" * len(labels) + "---|---|---|",
    ]
    for stage in STAGES:
        values = [r["stages"][stage]["throughput"] for r in runs]
        last = runs[-1]["stages"][stage]
        change = f"{values[-1] / values[0]:.2f}×" if values[0] else "n/a"
        lines.append(
            f"| {stage} | {UNITS[stage]} | " + " | ".join(f"{v:,.0f}" for v in values)
            + f" | {change} | {100 * last['data_share']:.1f}% | {100 * last['cpu_utilisation']:.0f}% |"
        )
    lines += ["", f"Top operators by self CPU time ({labels[-1]}):", ""]
    for stage in STAGES:
        ops = ", ".join(f"{o['op']} {o['self_cpu_pct']}%" for o in runs[-1]["stages"][stage]["top_ops"][:5])
        lines.append(f"- {stage}: {ops}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", default="current", help="name of this measurement")
    parser.add_argument("--src", type=Path, default=REPO / "src",
                        help="the multibeta sources to measure (default: this checkout)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the GPU rules")
    parser.add_argument("--images", type=int, default=4000, help="generated dSprites images")
    parser.add_argument("--vae-steps", type=int, default=60)
    parser.add_argument("--cache-batches", type=int, default=6)
    parser.add_argument("--diffusion-steps", type=int, default=600)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--compare", nargs="+", metavar="LABEL",
                        help="write the before/after table of these saved labels and exit")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    from multibeta.utils.io import write_json, write_text

    if args.compare:
        write_text(compare(args.compare), OUT_DIR / "stage_profile.md")
        print((OUT_DIR / "stage_profile.md").read_text())
        return
    # measure the requested sources (imported fresh: drop this checkout's multibeta)
    for name in [m for m in sys.modules if m == "multibeta" or m.startswith("multibeta.")]:
        del sys.modules[name]
    sys.path.insert(0, str(args.src.resolve()))
    results = profile_stages(args)
    results["src"] = str(args.src)
    write_json(results, OUT_DIR / f"stage_profile_{args.label}.json")
    for stage, stats in results["stages"].items():
        print(f"{stage}: {stats['throughput']:,.1f} {UNITS[stage]}, data {100 * stats['data_share']:.1f}%, "
              f"CPU {100 * stats['cpu_utilisation']:.0f}%")


if __name__ == "__main__":
    main()
