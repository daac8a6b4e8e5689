"""multibeta: use a trained experiment's bundle without the pipeline.

    multibeta info results/default/bundle
    multibeta sample results/default/bundle -n 32 --out samples.png
    multibeta sharpen results/default/bundle img1.png img2.png --t-b 0.75 --out sharp.png
    multibeta interpolate results/default/bundle a.png b.png --t-b 0.75 -n 8 --out path.png
    multibeta edit results/default/bundle img.png --direction attribute:scale \\
        --amounts -2 -1 0 1 2 --out scale.png
    multibeta convert-bundle OLD NEW --trust-pickle

Every command checks the bundle first (names inside its folder, no symlinks, sizes within the
format's bounds, every file's SHA-256, every tensor file's header) and stops with a message
naming the bundle, the file and the reason (exit status 2). A bundle holds no code: nothing in
it is unpickled or run. ``convert-bundle`` turns a bundle of format version 1 (pickled
checkpoints) into the current format; it reads pickles and so needs --trust-pickle.
``multibeta <command> --help`` lists each one's options.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

import torch

from multibeta.bundle.manifest import BundleError
from multibeta.core.config import ConfigError
from multibeta.sampling.settings import SPACINGS

logger = logging.getLogger("multibeta.cli")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help="bundle folder (results/<experiment>/bundle)")
    parser.add_argument("--variant", default="multibeta",
                        help="denoiser: multibeta (default), noise_only or standard_ldm")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto (CUDA when available, the default), cpu or cuda")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the SHA-256 check of the bundle's files (faster on large bundles)")


def _sampler(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "sampler (default: sample uses the experiment's first run of the variant; sharpen, "
        "interpolate and edit its sampling.sharpen settings)")
    group.add_argument("--steps", type=_positive_int, help="reverse steps over [0, 1]")
    group.add_argument("--eta", type=float, help="step noise, 0 deterministic to 1 ancestral")
    group.add_argument("--solver", choices=["euler", "heun"])
    group.add_argument("--spacing", choices=list(SPACINGS))
    group.add_argument("--seed", type=int)


def _png(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() != ".png":
        raise argparse.ArgumentTypeError(f"the grid is written as PNG: give a .png file, got {text!r}")
    return path


def _out(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--out", type=_png, default=Path(default), help=f"PNG grid to write (default {default})")
    parser.add_argument("--tensor", type=Path, default=None,
                        help="also save the images as a torch tensor file ([N, C, S, S] in [0, 1])")


def build_parser() -> argparse.ArgumentParser:
    """The ``multibeta`` argument parser (one subcommand per API method)."""
    parser = argparse.ArgumentParser(
        prog="multibeta", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="A bundle is written by the pipeline's rule export_bundle "
               "(snakemake results/<experiment>/bundle).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is loaded")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="check a bundle and print its model card")
    p.add_argument("bundle", type=Path)

    p = sub.add_parser("convert-bundle", help="convert a format-1 bundle (pickled checkpoints) to the "
                                              "current format (safetensors + JSON)")
    p.add_argument("old", type=Path, help="the format-1 bundle folder")
    p.add_argument("new", type=Path, help="the folder to write the converted bundle to")
    p.add_argument("--trust-pickle", action="store_true",
                   help="required: confirm that you trust the old bundle's source (its checkpoints "
                        "are pickles, read with torch's weights-only unpickler)")

    p = sub.add_parser("sample", help="draw new images (reverse process from t = 1, decoded at t = 0)")
    _common(p), _sampler(p), _out(p, "samples.png")
    p.add_argument("-n", type=_positive_int, default=16, help="how many images (default 16)")
    p.add_argument("--prior", choices=["fitted", "standard"], default=None,
                   help="start distribution of z_1 (default: that of the experiment's run)")
    p.add_argument("--cols", type=_positive_int, default=8, help="images per grid row")

    p = sub.add_parser("sharpen", help="encode images at t_b (blurred), denoise to t = 0, decode")
    _common(p), _sampler(p), _out(p, "sharpened.png")
    p.add_argument("images", nargs="+", type=Path, help="image files (any size; resized to the model's image size)")
    p.add_argument("--t-b", type=float, default=0.75, help="level to start from (default 0.75)")

    p = sub.add_parser("interpolate", help="a path between two images through the t_b latent space")
    _common(p), _sampler(p), _out(p, "interpolation.png")
    p.add_argument("a", type=Path), p.add_argument("b", type=Path)
    p.add_argument("--t-b", type=float, default=0.75, help="level of the interpolation (default 0.75)")
    p.add_argument("-n", type=_positive_int, default=8,
                   help="images on the path, both ends included (default 8, at least 2)")

    p = sub.add_parser("edit", help="move images along a latent direction at t_b, then denoise")
    _common(p), _sampler(p), _out(p, "edit.png")
    p.add_argument("images", nargs="+", type=Path, help="image files")
    p.add_argument("--direction", required=True,
                   help="FAMILY:NAME from the bundle's directions (e.g. attribute:scale, pca:0; "
                        "`multibeta info` lists them), or a .pt/.npy file holding one [d] vector")
    p.add_argument("--amounts", type=float, nargs="+", default=[-2.0, -1.0, 0.0, 1.0, 2.0],
                   help="steps along the direction, in standard deviations of the latents' "
                        "projection for bundle directions, raw units for a file (default -2 -1 0 1 2)")
    p.add_argument("--t-b", type=float, default=None,
                   help="level of the edit (default: the level the bundle's directions were fitted at)")
    return parser


def _settings(mb, args: argparse.Namespace):
    changes = {k: getattr(args, k) for k in ("steps", "eta", "solver", "spacing", "seed")
               if getattr(args, k, None) is not None}
    if changes.get("solver") == "heun":
        changes.setdefault("eta", 0.0)  # deterministic Heun unless --eta asks for noise
    if "eta" in changes and not 0.0 <= changes["eta"] <= 1.0:
        raise ValueError(f"--eta must lie in [0, 1], got {changes['eta']}")
    return mb.with_settings("sample" if args.command == "sample" else "edit", **changes)


def _save(mb, images: torch.Tensor, args: argparse.Namespace, *, n_cols: int, title: str) -> None:
    mb.save_grid(images, args.out, n_cols=n_cols, title=title)
    print(f"wrote {args.out} ({len(images)} images)")
    if args.tensor is not None:
        args.tensor.parent.mkdir(parents=True, exist_ok=True)
        torch.save(images, args.tensor)
        print(f"wrote {args.tensor}")


def run(args: argparse.Namespace) -> None:
    """Execute one parsed command (raises BundleError/ConfigError/ValueError on bad input)."""
    from multibeta.api import MultiBeta  # noqa: PLC0415  (torch-heavy; --help stays fast)
    from multibeta.bundle.load import Bundle  # noqa: PLC0415

    if args.command == "convert-bundle":
        from multibeta.bundle.convert import convert_bundle  # noqa: PLC0415

        out = convert_bundle(args.old, args.new, trust_pickle=args.trust_pickle)
        bundle = Bundle.open(out)
        print(f"converted {args.old} to {out} (format version {bundle.manifest['format_version']}, "
              f"{len(bundle.manifest['files'])} files, checked)")
        return
    if args.command == "info":
        bundle = Bundle.open(args.bundle)
        print(bundle.model_card)
        print(f"files: {len(bundle.manifest['files'])}, all SHA-256 verified; variants: {bundle.variants}")
        for family, names in bundle.direction_names().items():
            print(f"directions {family} (fitted at t_b={bundle.directions[family]['t_b']:g}): "
                  f"{', '.join(names)}")
        for line in bundle.version_warnings:
            print(f"note: {line}")
        return
    if args.command != "sample" and args.variant == "standard_ldm":
        raise ValueError(f"{args.command} denoises encoded images from t_b, which needs "
                         "--variant multibeta or noise_only (standard_ldm models t = 0 latents only)")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but no CUDA GPU is visible to torch; use --device auto or cpu")
    if args.command == "interpolate" and args.n < 2:
        raise ValueError(f"-n must be at least 2 (the two ends), got {args.n}")
    mb = MultiBeta.load(args.bundle, variant=args.variant, device=args.device, verify=not args.no_verify)
    mb.progress = True
    settings = _settings(mb, args)
    what = f"{args.variant}, {settings.solver}, {settings.steps} steps, eta={settings.eta:g}"
    if args.command == "sample":
        images = mb.sample(args.n, settings, prior=args.prior)
        _save(mb, images, args, n_cols=args.cols, title=f"samples: {what}")
    elif args.command == "sharpen":
        x = mb.load_images(args.images)
        blurred = mb.decode(mb.encode(x, args.t_b), args.t_b)
        sharp = mb.sharpen(x, args.t_b, settings)
        rows = torch.stack([x, blurred, sharp], 1).flatten(0, 1)
        _save(mb, rows, args, n_cols=3,
              title=f"input | decoded at t_b={args.t_b:g} | denoised to 0 ({what})")
    elif args.command == "interpolate":
        images = mb.interpolate([args.a], [args.b], args.t_b, args.n, settings)
        _save(mb, images, args, n_cols=args.n, title=f"interpolation at t_b={args.t_b:g} ({what})")
    elif args.command == "edit":
        direction, scale, fitted_at = _direction(mb, args.direction)
        if args.t_b is None:
            if fitted_at is None:
                raise ValueError("--t-b is needed with a direction from a file")
            args.t_b = fitted_at
        elif fitted_at is not None and abs(args.t_b - fitted_at) > 1e-9:
            print(f"note: {args.direction} was fitted at t_b={fitted_at:g}; editing at {args.t_b:g}",
                  file=sys.stderr)
        x = mb.load_images(args.images)
        edited = [mb.edit(x, direction, a * scale, args.t_b, settings) for a in args.amounts]
        rows = torch.stack(edited, 1).flatten(0, 1)
        _save(mb, rows, args, n_cols=len(args.amounts),
              title=f"{args.direction}: amounts {args.amounts} at t_b={args.t_b:g}")


def _direction(mb, spec: str) -> tuple[torch.Tensor, float, float | None]:
    """A direction ``[d]``, the scale of one amount unit and the level it was fitted at (None
    for a file), from the bundle or a ``.pt`` / ``.npy`` file holding one vector."""
    path = Path(spec)
    if path.suffix in (".pt", ".npy"):
        if not path.is_file():
            raise ValueError(f"direction file {path} not found")
        import numpy as np  # noqa: PLC0415

        try:
            vec = torch.load(path, weights_only=True) if path.suffix == ".pt" else torch.from_numpy(np.load(path))
            vec = torch.as_tensor(vec, dtype=torch.float32).reshape(-1)
        except Exception as exc:  # unpickling, wrong type: say which file
            raise ValueError(f"direction file {path} does not hold one vector of numbers ({exc})") from exc
        return vec, 1.0, None
    vector, scale = mb.bundle.direction(spec)
    return vector, scale, float(mb.bundle.directions[spec.partition(":")[0]]["t_b"])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``multibeta`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        run(args)
    except (BundleError, ConfigError, ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"multibeta {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
