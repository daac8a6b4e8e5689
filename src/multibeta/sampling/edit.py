"""Sharpening and latent traversals (METHOD.md, "Sampling").

- Sharpening: encode x at level t_b, run the sampler from t_b to 0, decode with D(·, 0).
  Decoding μ_{t_b} directly at t_b is blurry; the denoised decode should be sharp.
- Traversals: move a t_b latent along a latent dimension or a principal direction of the
  t_b latents (in units of that direction's std), denoise to 0 and decode.

The encoder, decoder and denoiser are passed in as callables:
``encoder(x [N, C, H, W], t [N]) -> mu [N, d]``, ``decoder(z [N, d], t [N]) -> images in [0, 1]``,
``model(z [N, d], t [N]) -> (eps_hat, delta_hat | None)``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch

from multibeta.data.h5io import ImageDataset, spread_positions
from multibeta.sampling.grids import save_image_grid
from multibeta.sampling.samplers import (
    Decoder,
    Denoiser,
    SigmaFn,
    StartMode,
    as_runtime,
    decode_latents,
    eval_context,
    sample_latents,
)
from multibeta.sampling.settings import SamplerSettings
from multibeta.sampling.spacing import level_steps
from multibeta.utils.bases import DEFAULT_ICA, IcaSettings, fit_basis
from multibeta.utils.device import Runtime

logger = logging.getLogger(__name__)

Encoder = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``encoder(x [N, C, H, W], t [N]) -> mu [N, d]``."""


def spread_images(dataset: str | os.PathLike, split: str, n: int) -> torch.Tensor:
    """``min(n, len(split))`` images of a dataset file's split, evenly spread over it, as float32
    ``[n, C, H, W]`` in [0, 1].

    Splits keep the factor-grid order of dSprites (the first images are all squares), so the
    images for figures and scores are spread over the split: deterministic, covering every factor.
    """
    source = ImageDataset(dataset, split=split)
    return source.tensor_batch(spread_positions(len(source), n))


def encode_images(
    encoder: Encoder,
    images: torch.Tensor,
    t: float,
    *,
    batch_size: int,
    device: torch.device | str | Runtime = "cpu",
) -> torch.Tensor:
    """Encoder means μ_t(x) ``[N, d]`` (CPU float32) of images ``[N, C, H, W]`` at level ``t``."""
    runtime = as_runtime(device)
    out: list[torch.Tensor] = []
    with torch.no_grad(), eval_context(encoder):
        for lo in range(0, len(images), batch_size):
            xb = images[lo : lo + batch_size].to(runtime.device, torch.float32)
            tb = torch.full((len(xb),), t, device=runtime.device, dtype=torch.float32)
            with runtime.autocast():
                out.append(encoder(xb, tb).float().cpu())
    return torch.cat(out)


def denoise_to_zero(
    model: Denoiser,
    sigma: SigmaFn,
    z: torch.Tensor,
    settings: SamplerSettings,
    *,
    t_b: float,
    start: StartMode = "noise_free",
    inversion_steps: int = 1,
    device: torch.device | str | Runtime = "cpu",
    progress: bool = True,
) -> torch.Tensor:
    """Run the sampler from level ``t_b`` to 0 on latents ``z`` ``[N, d]`` (real latent units).

    Takes ``level_steps(settings.steps, t_b)`` steps (the density of ``steps`` over [0, 1]);
    t_b = 0 is the identity. ``start`` says where the chain begins (``noise_free`` z,
    ``forward`` z + σ_{t_b} ξ, ``inversion`` z + σ_{t_b} ε*: see ``samplers.START_MODES``). Returns
    ``[N, d]`` on the CPU. Shared by sharpening and traversals.
    """
    if settings.variant == "standard_ldm":
        raise ValueError(
            "sharpening and traversals need a multibeta or noise_only denoiser: standard_ldm "
            "models only t=0 latents; set sampling.sharpen.variant / sampling.traverse.variant"
        )
    if t_b <= 0.0:
        return z.detach().float().cpu()
    return sample_latents(
        model, sigma, replace(settings.sampler(), steps=level_steps(settings.steps, t_b)),
        device=device, t_start=t_b, z_start=z, start=start, inversion_steps=inversion_steps, final_mean=False,
        progress=progress,
    )


# --------------------------------------------------------------------------- sharpening


@dataclass(frozen=True)
class SharpenResult:
    """Sharpening outputs for B images at L levels.

    Attributes:
        levels: the levels t_b ``(L,)``.
        inputs: the images ``[B, C, H, W]``.
        blurry: D(μ_{t_b}, t_b) ``[L, B, C, H, W]``.
        sharp: D(z_0, 0) after denoising from t_b to 0, ``[L, B, C, H, W]``.
        latents: the denoised z_0 ``[L, B, d]``.
    """

    levels: tuple[float, ...]
    inputs: torch.Tensor
    blurry: torch.Tensor
    sharp: torch.Tensor
    latents: torch.Tensor

    def select(self, positions: Sequence[int] | torch.Tensor) -> "SharpenResult":
        """The images at ``positions`` (indices into the B images) of the result."""
        idx = torch.as_tensor(positions, dtype=torch.long)
        return SharpenResult(self.levels, self.inputs[idx], self.blurry[:, idx], self.sharp[:, idx],
                             self.latents[:, idx])


def sharpen(
    encoder: Encoder,
    decoder: Decoder,
    model: Denoiser,
    sigma: SigmaFn,
    images: torch.Tensor,
    settings: SamplerSettings,
    *,
    levels: Sequence[float],
    start: StartMode = "noise_free",
    inversion_steps: int = 1,
    device: torch.device | str | Runtime = "cpu",
    progress: bool = True,
) -> SharpenResult:
    """Encode ``images`` at each level t_b, denoise from t_b to 0, decode.

    Args:
        encoder, decoder, model: the VAE's ``encode``/``decode_image`` and the denoiser.
        sigma: the VAE's σ(t).
        images: ``[B, C, H, W]`` in [0, 1].
        settings: the sampler's settings; variant ``multibeta`` or ``noise_only``
            (``standard_ldm`` has no t_b latents); ``steps`` count over the whole [0, 1], so
            level t_b takes ``level_steps(steps, t_b)``; ``batch_size`` also batches the
            encoder and decoder.
        levels: the levels t_b; t_b = 0 is the identity path D(E(x, 0), 0).
        start, inversion_steps: where each chain begins (:func:`denoise_to_zero`).
    """
    batch_size = settings.batch_size
    blurry, sharp, latents = [], [], []
    for t_b in levels:
        mu = encode_images(encoder, images, t_b, batch_size=batch_size, device=device)
        blurry.append(
            decode_latents(decoder, mu, t=t_b, batch_size=batch_size, device=device, progress=False)
        )
        z0 = denoise_to_zero(
            model, sigma, mu, settings, t_b=t_b, start=start, inversion_steps=inversion_steps, device=device,
            progress=progress,
        )
        latents.append(z0)
        sharp.append(
            decode_latents(decoder, z0, t=0.0, batch_size=batch_size, device=device, progress=False)
        )
        logger.info("sharpened %d images from t_b=%.3f", len(images), t_b)
    return SharpenResult(
        levels=tuple(float(t) for t in levels),
        inputs=images.detach().float().cpu(),
        blurry=torch.stack(blurry),
        sharp=torch.stack(sharp),
        latents=torch.stack(latents),
    )


def save_sharpening_grid(
    result: SharpenResult, path: str | os.PathLike, *, title: str | None = None
) -> None:
    """PNG grid: rows = images; columns = input | per level: decode of μ_{t_b} at t_b, denoised."""
    columns = [result.inputs]
    labels = ["input"]
    for k, t_b in enumerate(result.levels):
        columns += [result.blurry[k], result.sharp[k]]
        labels += [f"t={t_b:.2f}\ndecoded", f"t={t_b:.2f}\ndenoised"]
    grid = torch.stack(columns, dim=1)  # [B, 1 + 2L, C, H, W]
    save_image_grid(
        grid,
        path,
        col_labels=labels,
        row_labels=[f"x{i}" for i in range(len(result.inputs))],
        title=title or "sharpening: decode at t_b vs denoise t_b -> 0 then decode",
    )


# --------------------------------------------------------------------------- traversals


@dataclass(frozen=True)
class Directions:
    """A set of K traversal directions in latent space.

    Attributes:
        name: ``dims``, ``pca`` or ``ica`` (used in file names).
        vectors: unit directions ``[K, d]``.
        stds: std of the latents along each direction ``[K]`` (the traversal unit).
        labels: one row label per direction.
    """

    name: str
    vectors: torch.Tensor
    stds: torch.Tensor
    labels: list[str]


def dimension_directions(latents: torch.Tensor, max_dims: int | None) -> Directions:
    """Coordinate axes of ``latents`` ``[N, d]``, largest std first, at most ``max_dims``."""
    lat = latents.to(torch.float64)
    stds = lat.std(0)
    order = torch.argsort(stds, descending=True, stable=True)
    if max_dims is not None:
        order = order[:max_dims]
    vectors = torch.eye(lat.shape[1], dtype=torch.float64)[order]
    return Directions(
        name="dims",
        vectors=vectors.float(),
        stds=stds[order].float(),
        labels=[f"z{int(j)} (sd {float(stds[j]):.2f})" for j in order],
    )


def pca_directions(latents: torch.Tensor, n: int) -> Directions:
    """Top ``n`` principal directions of ``latents`` ``[N, d]`` and their stds.

    Each direction's sign is fixed so its largest-magnitude entry is positive (deterministic).
    """
    lat = latents.to(torch.float64)
    centred = lat - lat.mean(0)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    n = min(n, vh.shape[0])
    vectors = vh[:n]
    idx = vectors.abs().argmax(dim=1)
    signs = torch.sign(vectors[torch.arange(n), idx])
    vectors = vectors * torch.where(signs == 0, torch.ones_like(signs), signs)[:, None]
    stds = s[:n] / max(1, len(lat) - 1) ** 0.5
    explained = s**2 / (s**2).sum().clamp_min(1e-300)
    return Directions(
        name="pca",
        vectors=vectors.float(),
        stds=stds.float(),
        labels=[f"PC{k + 1} ({100 * float(explained[k]):.0f}%)" for k in range(n)],
    )


def ica_directions(latents: torch.Tensor, n: int, *, seed: int = 0, ica: IcaSettings = DEFAULT_ICA) -> Directions:
    """Top ``n`` independent components of ``latents`` ``[N, d]`` (:mod:`multibeta.utils.bases`):
    each direction is the latent displacement of one source, its std the source's scale. ``ica``:
    the FastICA starts (``metrics.ica``, as the disentanglement scores use). The starts run in as
    many processes as torch has threads (same basis whatever the count)."""
    basis = fit_basis(latents.double().numpy(), "ica", seed=seed, ica=ica, n_jobs=torch.get_num_threads())
    n = min(n, len(basis.directions))
    return Directions(
        name="ica",
        vectors=torch.as_tensor(basis.directions[:n], dtype=torch.float32),
        stds=torch.as_tensor(basis.scales[:n], dtype=torch.float32),
        labels=basis.labels()[:n],
    )


def basis_directions(latents: torch.Tensor, basis: str, n: int, *, seed: int = 0,
                     ica: IcaSettings = DEFAULT_ICA) -> Directions:
    """Traversal directions of basis ``dims`` / ``identity``, ``pca`` or ``ica`` (at most ``n``;
    ``seed`` and ``ica``: the FastICA starts)."""
    if basis in ("dims", "identity"):
        return dimension_directions(latents, n)
    if basis == "pca":
        return pca_directions(latents, n)
    if basis == "ica":
        return ica_directions(latents, n, seed=seed, ica=ica)
    raise ValueError(f"unknown traversal basis {basis!r}; use identity, pca or ica")


def traversal_values(span: float, n_values: int) -> torch.Tensor:
    """``n_values`` evenly spaced values in [−span, span] (std units) ``[V]``."""
    return torch.linspace(-span, span, n_values, dtype=torch.float32)


def traverse(
    model: Denoiser,
    sigma: SigmaFn,
    decoder: Decoder,
    base: torch.Tensor,
    directions: Directions,
    values: torch.Tensor,
    settings: SamplerSettings,
    *,
    t_b: float,
    device: torch.device | str | Runtime = "cpu",
    progress: bool = True,
) -> torch.Tensor:
    """Decoded traversal images ``[K, V, C, H, W]``.

    Latent (k, v) is ``base + values[v] · stds[k] · vectors[k]`` at level ``t_b``; it is
    denoised from t_b to 0 (``level_steps(settings.steps, t_b)`` steps) and decoded with D(·, 0).

    Args:
        base: the base latent ``[d]`` at level t_b (e.g. μ_{t_b}(x) of one image).
        directions: from :func:`dimension_directions` or :func:`pca_directions`.
        values: offsets in std units ``[V]``.
        settings: the sampler's settings (variant ``multibeta`` or ``noise_only``);
            ``batch_size`` also batches the decoder.
    """
    k, v = len(directions.vectors), len(values)
    offsets = values.float()[None, :, None] * (
        directions.stds.float()[:, None, None] * directions.vectors.float()[:, None, :]
    )
    z = (base.float().reshape(1, 1, -1) + offsets).reshape(k * v, -1)
    z = denoise_to_zero(model, sigma, z, settings, t_b=t_b, device=device, progress=progress)
    images = decode_latents(
        decoder, z, t=0.0, batch_size=settings.batch_size, device=device, progress=False
    )
    logger.info("traversal %s: %d directions x %d values at t_b=%.3f", directions.name, k, v, t_b)
    return images.reshape(k, v, *images.shape[1:])


def save_traversal_grid(
    images: torch.Tensor,
    directions: Directions,
    values: torch.Tensor,
    path: str | os.PathLike,
    *,
    t_b: float,
) -> None:
    """PNG grid: rows = directions, columns = values (in std units)."""
    save_image_grid(
        images,
        path,
        row_labels=directions.labels,
        col_labels=[f"{float(x):+.3g} sd" for x in values],
        title=f"traversal along {directions.name} at t_b={t_b:.2f}, denoised to t=0",
    )
