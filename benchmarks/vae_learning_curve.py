"""Learning curve of the VAE on dSprites: does it resolve shapes at t = 0 within the budget?

For each variant (a name and ``vae`` overrides: the multi-β VAE under several recipes, and the
same network as a fixed-β VAE at β_min), train step by step and, every ``--eval-every`` steps,
reconstruct ``--n-eval`` held-out (validation) images, evenly spread over the split (it is in
factor-grid order), at t = 0 (the fixed-β model at its own β) with the EMA weights, and score
the reconstructions with the dSprites rulers
(:func:`multibeta.metrics.render_consistency.score_images`): mean IoU to the binarised input,
the factor classifier's shape accuracy, the fraction of valid shapes. Training time excludes
the evaluations. The machine's reference speed (``reference_speed.py``) is measured in the same
process first, so wall times can be compared across days.

    .venv/bin/python benchmarks/vae_learning_curve.py --variants multi_p2 fixed \\
        --dataset results/datasets/<id>/dataset.h5 --classifier results/datasets/<id>/factor_classifier-<h>/model.pt

Variants are defined in :data:`VARIANTS`; each run writes
``benchmarks/results/vae_learning_curve/<variant>.json``; ``--summarise`` gathers them into
``vae_learning_curve.md`` and ``vae_learning_curve.png`` (IoU and shape accuracy against steps
and against training time). Two variants may run side by side in two processes with
``OMP_NUM_THREADS=1 --threads 1``; the speed recorded with each run says how fast its core was.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))
from reference_speed import reference_speed  # noqa: E402

from multibeta.data.h5io import ImageDataset, spread_positions  # noqa: E402
from multibeta.metrics.factor_classifier import load_factor_classifier  # noqa: E402
from multibeta.metrics.render_consistency import score_images  # noqa: E402
from multibeta.utils.device import select_runtime  # noqa: E402
from multibeta.utils.io import write_json, write_text  # noqa: E402
from multibeta.utils.versions import collect_versions  # noqa: E402
from multibeta.vae.config import VAEConfig  # noqa: E402
from multibeta.vae.trainer import H5Source, VAETrainer  # noqa: E402
from multibeta.workflow.config import section_defaults  # noqa: E402

logger = logging.getLogger("benchmarks.vae_learning_curve")
OUT = REPO / "benchmarks" / "results" / "vae_learning_curve"

#: name -> vae overrides (on top of the schema defaults, ``steps`` from --steps).
VARIANTS: dict[str, dict[str, Any]] = {
    "multi_p1": {"t_power": 1.0},  # t uniform on [0, 1] (the previous default)
    "multi_p2": {"t_power": 2.0},  # half of the examples below t = 0.25
    "multi_p3": {"t_power": 3.0},
    "multi_p4": {"t_power": 4.0},
    "multi_p2_lr2e-3": {"t_power": 2.0, "lr": 0.002},
    "multi_p2_b32": {"t_power": 2.0, "batch_size": 32},
    "fixed": {"fixed_beta": 0.1},  # the same network as a plain VAE at beta_min
}


def evaluate(model: torch.nn.Module, t: float, images: torch.Tensor, labels: np.ndarray,
             classifier: torch.nn.Module) -> dict[str, float]:
    """Rulers of the t-level reconstructions of ``images`` [N, 1, 64, 64] in [0, 1]."""
    model.eval()
    with torch.no_grad():
        tt = torch.full((1,), t)
        recon = model.decode_image(model.encode(images, tt), tt)
    model.train()
    scores = score_images(classifier, recon, labels=labels, originals=images)
    return {k: scores[k] for k in ("iou_to_input", "accuracy.shape", "within_one.scale", "valid_fraction",
                                   "render_iou")}


def ema_copy(trainer: VAETrainer) -> torch.nn.Module:
    """A copy of the trainer's model with its EMA weights (what the pipeline uses downstream)."""
    model = copy.deepcopy(trainer.model)
    if trainer.ema is not None:
        state = model.state_dict()
        state.update(trainer.ema.shadow)
        model.load_state_dict(state)
    return model


def run_variant(name: str, *, dataset: Path, classifier_path: Path, steps: int, eval_every: int,
                n_eval: int, threads: int | None, precision: str = "auto") -> dict[str, Any]:
    overrides = dict(VARIANTS[name], steps=steps, checkpoint_every=10**9)
    cfg = VAEConfig.from_section(section_defaults("vae", overrides))
    speed = reference_speed(threads)
    logger.info("%s: reference speed %.0f images/s", name, speed["images_per_s"])
    runtime = select_runtime("cpu", precision, threads)
    amp = "fp32" if runtime.amp_dtype is None else str(runtime.amp_dtype).removeprefix("torch.")
    val = ImageDataset(dataset, split="val")
    positions = spread_positions(len(val), n_eval)  # the split is in factor-grid order
    images = val.tensor_batch(positions)
    labels = val.factor_classes()[positions]
    classifier, _ = load_factor_classifier(classifier_path)
    out_dir = OUT / name
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer = VAETrainer(cfg, H5Source(dataset, "train"), runtime=runtime, checkpoint_path=out_dir / "model.pt",
                         log_csv=None, progress=False)
    t_eval = trainer.fixed_t if trainer.fixed_t is not None else 0.0
    rows, train_s = [], 0.0
    while trainer.step < steps:
        start = time.perf_counter()
        for _ in range(min(eval_every, steps - trainer.step)):
            trainer.train_step()
        train_s += time.perf_counter() - start
        row = {"step": trainer.step, "train_s": train_s, "images": trainer.step * cfg.batch_size}
        row.update(evaluate(ema_copy(trainer), t_eval, images, labels, classifier))
        rows.append(row)
        logger.info("%s %s", name, json.dumps({k: round(v, 4) for k, v in row.items()}))
    trainer.save_final()  # benchmarks/results/vae_learning_curve/<variant>/model.pt (git-ignored)
    result = {"variant": name, "overrides": VARIANTS[name], "precision": amp, "steps": steps, "t_eval": t_eval,
              "n_eval": len(images), "reference_speed": speed, "rows": rows, "versions": collect_versions()}
    write_json(result, OUT / f"{name}.json")
    return result


def summarise() -> None:
    """Table and figure from every ``<variant>.json`` present."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [json.loads(p.read_text()) for p in sorted(OUT.glob("*.json"))]
    if not runs:
        raise SystemExit(f"no results in {OUT}; run some variants first")
    lines = ["| variant | overrides | precision | steps | train s | ref. images/s | t=0 IoU | shape acc. | valid |",
             "|---|---|---|---|---|---|---|---|---|"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for run in runs:
        ref = run["reference_speed"]["images_per_s"]
        for row in run["rows"]:
            lines.append(f"| {run['variant']} | `{json.dumps(run['overrides'])}` | {run['precision']} | {row['step']} | "
                         f"{row['train_s']:.0f} | {ref:.0f} | {row['iou_to_input']:.3f} | "
                         f"{row['accuracy.shape']:.3f} | {row['valid_fraction']:.3f} |")
        steps = [r["step"] for r in run["rows"]]
        # training time at a common reference speed: seconds x (this run's speed / 1000 img/s)
        norm = [r["train_s"] * ref / 1000.0 for r in run["rows"]]
        for col, key in enumerate(("iou_to_input", "accuracy.shape")):
            axes[0, col].plot(steps, [r[key] for r in run["rows"]], marker="o", label=run["variant"])
            axes[1, col].plot(norm, [r[key] for r in run["rows"]], marker="o", label=run["variant"])
    for col, (label, target) in enumerate((("mean IoU to the input, t = 0", 0.92), ("shape accuracy, t = 0", 0.95))):
        for row in range(2):
            ax = axes[row, col]
            ax.axhline(target, color="gray", ls="--", lw=0.8)
            ax.set(ylabel=label, xlabel="VAE steps" if row == 0 else
                   "training seconds at a reference speed of 1000 images/s")
            ax.legend(fontsize=8)
    fig.suptitle("held-out dSprites reconstructions during VAE training (EMA weights)")
    fig.tight_layout()
    fig.savefig(OUT.parent / "vae_learning_curve.png", dpi=100)
    write_text("\n".join(lines) + "\n", OUT.parent / "vae_learning_curve.md")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="*", default=[], choices=sorted(VARIANTS))
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="compute.precision of the training steps (auto: as the pipeline)")
    parser.add_argument("--dataset", type=Path)
    parser.add_argument("--classifier", type=Path)
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--n-eval", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--summarise", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in args.variants:
        if args.dataset is None or args.classifier is None:
            parser.error("--dataset and --classifier are needed to run variants")
        run_variant(name, dataset=args.dataset, classifier_path=args.classifier, steps=args.steps,
                    eval_every=args.eval_every, n_eval=args.n_eval, threads=args.threads,
                    precision=args.precision)
    if args.summarise:
        summarise()


if __name__ == "__main__":
    main()
