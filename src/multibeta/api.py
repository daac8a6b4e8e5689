"""Use a trained experiment from Python: encode, decode, sample, sharpen, interpolate, edit.

    from multibeta.api import MultiBeta

    mb = MultiBeta.load("results/default/bundle")      # checks every file's SHA-256 first
    x = mb.load_images(["a.png", "b.png"])               # [2, C, S, S] in [0, 1]
    z = mb.encode(x, t=0.75)                             # [2, d] encoder means at level 0.75
    sharp = mb.sharpen(x, t_b=0.75)                      # blurred at 0.75, denoised to t = 0
    samples = mb.sample(16)                              # [16, C, S, S]
    path = mb.interpolate(x[0], x[1], t_b=0.75, n=8)     # [8, C, S, S]
    mb.save_grid(samples, "samples.png", n_cols=8)

Images are float tensors ``[N, C, S, S]`` in [0, 1], S the VAE's image size
(:attr:`MultiBeta.image_size`, recorded in its checkpoint: 64 unless the experiment set
``data.image_size``); uint8 tensors and image files (resized to S) are converted; latents are ``[N, d]`` in the VAE's real units. Every method runs on the device and
precision chosen at load time (``auto``: CUDA when available), exactly as the pipeline's rules
do, so on the CPU a bundle reproduces the pipeline's samples bit for bit.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence, cast

import numpy as np
import torch

from multibeta.bundle.load import Bundle
from multibeta.core.config import ConfigError, from_section
from multibeta.sampling.config import SampleRunConfig
from multibeta.sampling.edit import denoise_to_zero, encode_images
from multibeta.sampling.grids import save_sample_grid
from multibeta.sampling.samplers import StartMode, decode_latents, sample_latents
from multibeta.sampling.settings import SamplerSettings
from multibeta.utils.device import Runtime, select_runtime

ImagesLike = torch.Tensor | np.ndarray | Sequence[str | os.PathLike]


class MultiBeta:
    """A trained multi-β VAE and one of its latent denoisers, loaded from a bundle.

    Build with :meth:`load`. Methods not given sampler settings use :attr:`settings` (drawing
    samples: the experiment's first sampling run of this variant) or :attr:`edit_settings`
    (denoising encoded images: the experiment's sharpening settings).
    """

    def __init__(self, bundle: Bundle, *, variant: str = "multibeta", runtime: Runtime) -> None:
        self.bundle = bundle
        self.variant = variant
        self.runtime = runtime
        self.vae = bundle.load_vae(runtime.device)
        self.denoiser, self.denoiser_checkpoint = bundle.load_denoiser(variant, runtime.device)
        self.sigma = getattr(self.denoiser, "sigma_table", None)
        self.prior = bundle.prior() if variant != "standard_ldm" else None
        #: Sampler settings, start prior and final_mean of :meth:`sample` (by default those of
        #: the experiment's first run of this variant, so its samples are reproduced exactly).
        self.settings, self.sample_prior, self.sample_final_mean = self._default_run()
        #: Sampler settings of the methods that denoise encoded images (``sampling.sharpen``'s).
        self.edit_settings = self._edit_defaults() if variant != "standard_ldm" else self.settings
        #: Show progress bars for the reverse process (the CLI turns them on).
        self.progress = False

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        variant: str = "multibeta",
        device: str = "auto",
        precision: str = "auto",
        threads: int | None = None,
        verify: bool = True,
    ) -> "MultiBeta":
        """Open and check a bundle (rule ``export_bundle``), load the VAE and one denoiser.

        Args:
            path: the bundle folder (``results/<experiment>/bundle``).
            variant: which denoiser (``multibeta``, ``noise_only``, ``standard_ldm``).
            device, precision, threads: as ``compute.device`` / ``compute.precision`` of the
                config (``auto``: CUDA when available; bf16 autocast where native).
            verify: check every file's SHA-256 against the manifest first.

        Raises:
            BundleError: no bundle, another format version, a damaged file (named), or no
                such variant.
        """
        bundle = Bundle.open(path, verify=verify)
        return cls(bundle, variant=variant, runtime=select_runtime(device, precision, threads))

    # ----------------------------------------------------------------------------- settings

    def _default_run(self) -> tuple[SamplerSettings, str, bool]:
        """Settings, start prior and ``final_mean`` of the experiment's first sampling run of
        this variant (else its sharpening settings, the fitted prior and the last sample)."""
        sampling = self.bundle.config.get("sampling", {})
        for entry in sampling.get("runs", []):
            if entry.get("variant") == self.variant:
                run = from_section(SampleRunConfig, entry, f"sampling.runs[{entry.get('name')}]")
                return run.sampler(), run.prior, run.final_mean
        return self._edit_defaults(), "fitted", False

    def _edit_defaults(self) -> SamplerSettings:
        """The experiment's ``sampling.sharpen`` settings with this variant: how the pipeline
        denoises encoded images (deterministic, η = 0 by default)."""
        sharpen = dict(self.bundle.config.get("sampling", {}).get("sharpen", {}))
        return SamplerSettings(**{**{k: sharpen[k] for k in SamplerSettings.__dataclass_fields__},
                                  "variant": self.variant})

    def with_settings(self, kind: str = "sample", **changes: Any) -> SamplerSettings:
        """Default settings with some keys changed, e.g. ``with_settings(steps=10)``.

        Args:
            kind: ``sample`` (:attr:`settings`, for :meth:`sample`) or ``edit``
                (:attr:`edit_settings`, for :meth:`sharpen`, :meth:`interpolate`, :meth:`edit`).

        Raises:
            ConfigError: an unknown key, another variant, or a value out of range.
        """
        unknown = sorted(set(changes) - set(SamplerSettings.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"unknown sampler settings {unknown}; known: "
                              f"{sorted(SamplerSettings.__dataclass_fields__)}")
        if kind not in ("sample", "edit"):
            raise ValueError(f"kind must be 'sample' or 'edit', got {kind!r}")
        if "variant" in changes and changes["variant"] != self.variant:
            raise ConfigError(f"this MultiBeta holds the {self.variant} denoiser; load the bundle with "
                              f"variant={changes['variant']!r} to use another")
        settings = replace(self.settings if kind == "sample" else self.edit_settings, **changes)
        return self._own(settings)

    def _own(self, settings: SamplerSettings) -> SamplerSettings:
        """``settings`` checked: this instance's variant, steps ≥ 1, 0 ≤ η ≤ 1, batch_size ≥ 1."""
        if settings.variant != self.variant:
            raise ConfigError(f"settings.variant is {settings.variant!r}, but this MultiBeta holds the "
                              f"{self.variant} denoiser (MultiBeta.load(..., variant=...))")
        if settings.steps < 1 or not 0.0 <= settings.eta <= 1.0 or settings.batch_size < 1:
            raise ConfigError(f"sampler settings out of range: steps {settings.steps} (>= 1), eta "
                              f"{settings.eta} (0 to 1), batch_size {settings.batch_size} (>= 1)")
        return settings

    # ------------------------------------------------------------------------------- images

    @property
    def image_channels(self) -> int:
        return int(self.vae.image_channels)

    @property
    def image_size(self) -> int:
        """Side S of the images the VAE encodes and decodes (its checkpoint's ``arch.image_size``)."""
        return int(self.vae.image_size)

    def load_images(self, images: ImagesLike) -> torch.Tensor:
        """Images as float32 ``[N, C, S, S]`` in [0, 1] (S = :attr:`image_size`).

        Accepts a float tensor/array in [0, 1], a uint8 one in [0, 255] (either ``[N, C, S, S]``
        or one image ``[C, S, S]``), or a list of image files (resized to S×S, converted to
        the model's channels).

        Raises:
            ValueError: wrong shape, channels or value range, or an unreadable file (named).
        """
        if isinstance(images, (list, tuple)) and images and isinstance(images[0], (str, os.PathLike)):
            return torch.stack([self._read_file(Path(p)) for p in images])
        x = torch.as_tensor(np.asarray(images) if isinstance(images, np.ndarray) else images)
        if x.ndim == 3:
            x = x.unsqueeze(0)
        size = self.image_size
        if x.ndim != 4 or x.shape[1] != self.image_channels or tuple(x.shape[2:]) != (size, size):
            raise ValueError(f"images must be [N, {self.image_channels}, {size}, {size}] (the model's "
                             f"image size), got shape {tuple(x.shape)}")
        if x.dtype == torch.uint8:
            return x.float() / 255.0
        x = x.float()
        if x.numel() and (not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1):
            raise ValueError("float images must be finite and lie in [0, 1] (uint8 images in [0, 255])")
        return x

    def _read_file(self, path: Path) -> torch.Tensor:
        from PIL import Image, UnidentifiedImageError  # noqa: PLC0415

        try:
            with Image.open(path) as img:
                img = img.convert("L" if self.image_channels == 1 else "RGB")
                size = self.image_size
                if img.size != (size, size):
                    img = img.resize((size, size), Image.Resampling.BILINEAR)
                arr = np.asarray(img, dtype=np.float32) / 255.0
        except (OSError, UnidentifiedImageError) as exc:
            raise ValueError(f"cannot read image {path}: {exc}") from exc
        return torch.from_numpy(arr.reshape(size, size, -1).transpose(2, 0, 1).copy())

    @staticmethod
    def save_grid(images: torch.Tensor, path: str | os.PathLike, *, n_cols: int = 8,
                  title: str | None = None) -> Path:
        """Write images ``[N, C, H, W]`` as one PNG grid (atomically); returns the path."""
        save_sample_grid(images, path, n_cols=n_cols, title=title)
        return Path(path)

    # ------------------------------------------------------------------------------ methods

    def encode(self, images: ImagesLike, t: float) -> torch.Tensor:
        """Encoder means μ_t(x) ``[N, d]`` at level ``t`` ∈ [0, 1]."""
        x = self.load_images(images)
        return encode_images(self.vae.encode, x, _level(t, "t"), batch_size=self.settings.batch_size,
                             device=self.runtime)

    def decode(self, z: torch.Tensor, t: float) -> torch.Tensor:
        """Images ``[N, C, S, S]`` in [0, 1] decoded from latents ``[N, d]`` at level ``t``."""
        return decode_latents(self.vae.decode_image, torch.as_tensor(z, dtype=torch.float32),
                              t=_level(t, "t"), batch_size=self.settings.batch_size,
                              device=self.runtime, progress=self.progress)

    def denoise(self, z: torch.Tensor, t_b: float, settings: SamplerSettings | None = None, *,
                start: StartMode = "noise_free", inversion_steps: int = 1) -> torch.Tensor:
        """Latents ``[N, d]`` at level ``t_b`` denoised to t = 0 (``[N, d]``); ``start`` as
        ``sampling.sharpen.start`` (noise_free, forward or inversion)."""
        return denoise_to_zero(self.denoiser, self.sigma, torch.as_tensor(z, dtype=torch.float32),
                               self._own(settings or self.edit_settings), t_b=_level(t_b, "t_b"),
                               start=start, inversion_steps=inversion_steps,
                               device=self.runtime, progress=self.progress)

    def sharpen_start(self) -> tuple[StartMode, int]:
        """Where the experiment's sharpening chains start: (``sampling.sharpen.start``,
        ``inversion_steps``); configs written before the option had the noise-free start (or
        ``add_noise: true``, a forward draw)."""
        section = self.bundle.config.get("sampling", {}).get("sharpen", {})
        default = "forward" if section.get("add_noise") else "noise_free"
        return cast(StartMode, str(section.get("start", default))), int(section.get("inversion_steps", 1))

    def sharpen(self, images: ImagesLike, t_b: float, settings: SamplerSettings | None = None) -> torch.Tensor:
        """Encode at ``t_b`` (blurred, high β), denoise to t = 0 from the experiment's sharpening
        start (:meth:`sharpen_start`), decode: ``[N, C, S, S]``."""
        start, steps = self.sharpen_start()
        return self.decode(self.denoise(self.encode(images, t_b), t_b, settings, start=start,
                                        inversion_steps=steps), 0.0)

    def sample(self, n: int, settings: SamplerSettings | None = None, *, prior: str | None = None,
               final_mean: bool | None = None) -> torch.Tensor:
        """``n`` new images ``[n, C, S, S]``: the reverse process from t = 1, decoded at t = 0.

        Args:
            n: how many.
            settings: sampler settings (default :attr:`settings`); ``settings.seed`` fixes them.
            prior: ``fitted`` (the bundle's moment-matched start, as ``prior: fitted`` runs) or
                ``standard`` (N(0, σ_1² I)); default :attr:`sample_prior`; ignored by
                ``standard_ldm``.
            final_mean: return the final mean prediction instead of the last sample (default
                :attr:`sample_final_mean`).
        """
        return self.decode(self.sample_latents(n, settings, prior=prior, final_mean=final_mean), 0.0)

    def sample_latents(self, n: int, settings: SamplerSettings | None = None, *,
                       prior: str | None = None, final_mean: bool | None = None) -> torch.Tensor:
        """The t = 0 latents ``[n, d]`` that :meth:`sample` decodes."""
        prior = self.sample_prior if prior is None else prior
        final_mean = self.sample_final_mean if final_mean is None else final_mean
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive number of samples, got {n!r}")
        settings = self._own(settings or self.settings)
        if prior not in ("fitted", "standard"):
            raise ValueError(f"prior must be 'fitted' or 'standard', got {prior!r}")
        use_prior = self.prior if prior == "fitted" and self.variant != "standard_ldm" else None
        return sample_latents(self.denoiser, self.sigma, settings, n=n,
                              device=self.runtime, final_mean=final_mean, prior=use_prior,
                              progress=self.progress)

    def interpolate(self, a: ImagesLike, b: ImagesLike, t_b: float, n: int,
                    settings: SamplerSettings | None = None) -> torch.Tensor:
        """``n`` images from ``a`` to ``b``: spherical interpolation of their latents at ``t_b``,
        each point denoised to t = 0 and decoded. ``[n, C, S, S]``."""
        if n < 2:
            raise ValueError(f"n must be at least 2 (the two ends), got {n}")
        za, zb = self.encode(a, t_b), self.encode(b, t_b)
        if len(za) != 1 or len(zb) != 1:
            raise ValueError(f"interpolate takes one image at each end, got {len(za)} and {len(zb)}")
        alphas = torch.linspace(0.0, 1.0, n)
        path = torch.cat([slerp(za, zb, float(w)) for w in alphas])
        start, steps = self.sharpen_start()  # the end points are the images' sharpenings
        return self.decode(self.denoise(path, t_b, settings, start=start, inversion_steps=steps), 0.0)

    def edit(self, images: ImagesLike, direction: torch.Tensor, amount: float, t_b: float,
             settings: SamplerSettings | None = None) -> torch.Tensor:
        """Move each image's latent at ``t_b`` by ``amount × direction`` (``[d]``, real latent
        units), denoise to t = 0 and decode: ``[N, C, S, S]``."""
        direction = torch.as_tensor(direction, dtype=torch.float32).reshape(-1)
        z = self.encode(images, t_b)
        if direction.shape != (z.shape[1],):
            raise ValueError(f"direction must have {z.shape[1]} entries, got {tuple(direction.shape)}")
        return self.decode(self.denoise(z + float(amount) * direction, t_b, settings), 0.0)


def slerp(a: torch.Tensor, b: torch.Tensor, w: float) -> torch.Tensor:
    """Spherical interpolation between rows ``a`` and ``b`` ``[N, d]`` at ``w`` ∈ [0, 1].

    Interpolates the direction on the sphere and the norm linearly; falls back to linear
    interpolation for (nearly) parallel or opposite vectors, where the great circle is not
    defined (opposite latents then pass through 0 at w = 0.5). Exact at w = 0 and w = 1.
    """
    if w == 0.0:
        return a.clone()
    if w == 1.0:
        return b.clone()
    na, nb = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    ua, ub = a / na.clamp_min(1e-12), b / nb.clamp_min(1e-12)
    omega = torch.arccos((ua * ub).sum(1, keepdim=True).clamp(-1.0, 1.0))
    so = torch.sin(omega)
    linear = (1 - w) * ua + w * ub
    spherical = (torch.sin((1 - w) * omega) * ua + torch.sin(w * omega) * ub) / so.clamp_min(1e-12)
    unit = torch.where(so < 1e-6, linear, spherical)
    return unit * ((1 - w) * na + w * nb)


def _level(t: float, name: str) -> float:
    t = float(t)
    if not 0.0 <= t <= 1.0 or math.isnan(t):
        raise ValueError(f"{name} must lie in [0, 1], got {t}")
    return t
