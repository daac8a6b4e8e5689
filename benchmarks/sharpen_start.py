"""Where should the sharpening chain start? Noise-free μ_{t_b}, a forward draw μ_{t_b} + σ_{t_b} ξ, or the inversion μ_{t_b} + σ_{t_b} ε*.

Sharpening encodes a held-out image at level t_b, denoises from t_b to 0 and decodes. The
denoiser was trained on z_t = μ_t(x) + σ_t ε, so the noise-free μ_{t_b} is a point it never saw
at t_b (it lies at the centre of the training distribution, not on its shell); a forward draw
is in distribution but adds noise that the chain must remove again; the inversion
μ_{t_b} + σ_{t_b} ε*, ε* the fixed point of ε ↦ ε̂(μ_{t_b} + σ_{t_b} ε) after 1 or 3 iterations,
is on the shell and keeps μ_{t_b} as the predicted mean. This script scores the starts, for one or more denoiser checkpoints and sampler settings, with the pipeline's
sharpening scores (IoU of the binarised image to the input, valid fraction), over seeds of the
forward draw, beside the plain decode D(μ_{t_b}, t_b).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sharpen_start.py \
        --denoiser results/default/diffusion/multibeta/model.pt --label default --threads 1

Writes ``benchmarks/results/sharpen_start/<label>.json`` and, with ``--summarise``, the table
``benchmarks/results/sharpen_start.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))
from generation_gap import Experiment  # noqa: E402
from multibeta.core.config import from_section  # noqa: E402
from multibeta.metrics.sharpening import score_sharpening  # noqa: E402
from multibeta.models.loading import load_denoiser  # noqa: E402
from multibeta.sampling.config import SharpenConfig  # noqa: E402
from multibeta.sampling.edit import sharpen, spread_images  # noqa: E402
from multibeta.utils.io import write_json, write_text  # noqa: E402
from multibeta.utils.versions import collect_versions  # noqa: E402
from multibeta.workflow.config import section_defaults  # noqa: E402

logger = logging.getLogger("benchmarks.sharpen_start")
OUT_DIR = REPO / "benchmarks" / "results" / "sharpen_start"
#: column -> (sampling.sharpen.start, inversion_steps)
STARTS = {"noise_free": ("noise_free", 0), "forward": ("forward", 0), "inversion1": ("inversion", 1),
          "inversion3": ("inversion", 3)}


def sharpen_scores(exp: Experiment, model: torch.nn.Module, cfg: SharpenConfig, images: torch.Tensor) -> dict[str, Any]:
    """The pipeline's sharpening scores of ``images`` sharpened by ``model`` with ``cfg``
    (its levels, start and inversion steps)."""
    result = sharpen(exp.vae.encode, exp.vae.decode_image, model, model.sigma_table, images, cfg,
                     levels=cfg.levels, start=cfg.start, inversion_steps=cfg.inversion_steps, device=exp.runtime,
                     progress=False)
    return score_sharpening(result, classifier=exp.classifier, device=exp.runtime.device)


def run(exp: Experiment, denoiser: Path, overrides: dict[str, Any], seeds: list[int]) -> dict[str, Any]:
    section = section_defaults("sampling", exp.cfg["sampling"])["sharpen"]
    model, _ = load_denoiser(denoiser, map_location=exp.runtime.device)
    images = None
    out: dict[str, Any] = {"denoiser": str(denoiser), "overrides": overrides, "starts": {}}
    for key, (start, iterations) in STARTS.items():
        for seed in seeds if start == "forward" else seeds[:1]:
            cfg = from_section(SharpenConfig, {**section, **overrides, "seed": seed, "start": start,
                                               "inversion_steps": iterations}, "sampling.sharpen")
            if images is None:
                images = spread_images(exp.dataset, cfg.split, cfg.n_metric_images)
            scores = sharpen_scores(exp, model, cfg, images)
            out["starts"].setdefault(key, []).append(scores)
            logger.info("%s seed %d: %s", key, seed, [(lv["t_b"], round(lv["decoded"]["iou_to_input"], 3),
                                                       round(lv["denoised"]["iou_to_input"], 3))
                                                      for lv in scores["levels"]])
    return out


def summarise() -> str:
    lines = ["# Sharpening: where the chain starts", "",
             "IoU to the input of the binarised image (mean over seeds of the forward draw ± sd); "
             "`decoded` is D(μ_{t_b}, t_b), the others D(z_0, 0) after denoising from t_b.", "",
             "| label | settings | t_b | decoded | noise-free start | forward draw | inversion, 1 step | inversion, 3 steps |",
             "|---|---|---|---|---|---|---|---|"]
    for path in sorted(OUT_DIR.glob("*.json")):
        r = json.loads(path.read_text())
        first = r["starts"]["noise_free"][0]
        for k, level in enumerate(first["levels"]):
            cells = []
            for key in STARTS:
                runs = r["starts"].get(key)
                if not runs:
                    cells.append("–")
                    continue
                vals = [run["levels"][k]["denoised"]["iou_to_input"] for run in runs]
                sd = f" ± {np.std(vals, ddof=1):.3f}" if len(vals) > 1 else ""
                cells.append(f"{np.mean(vals):.3f}{sd}")
            lines.append(f"| {path.stem} | `{json.dumps(r['overrides'])}` | {level['t_b']:g} | "
                         f"{level['decoded']['iou_to_input']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "config.yaml")
    parser.add_argument("--experiment", default="default")
    parser.add_argument("--denoiser", type=Path)
    parser.add_argument("--label")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="sampling.sharpen overrides, e.g. spacing=cosine steps=50")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--summarise", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.denoiser:
        import yaml

        exp = Experiment.from_config_file(args.config, args.experiment, args.threads)
        overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
        result = run(exp, args.denoiser, overrides, args.seeds)
        result["versions"] = collect_versions()
        write_json(result, OUT_DIR / f"{args.label or args.denoiser.parent.name}.json")
    text = summarise()
    write_text(text, OUT_DIR.with_suffix(".md"))
    print(text)


if __name__ == "__main__":
    main()
