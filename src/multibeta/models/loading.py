"""Loading trained denoisers for the stages that use them (sampling, editing, metrics).

The checkpoint is written by :mod:`multibeta.diffusion.trainer`; what it holds is described
there. Loading needs only the network (:class:`~multibeta.models.denoiser.LatentDenoiser`).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from multibeta.models.denoiser import LatentDenoiser
from multibeta.utils.checkpoint import CheckpointError, CheckpointMismatchError, load_checkpoint


class DenoiserVAEMismatchError(CheckpointMismatchError):
    """A denoiser was trained on the latents of another VAE checkpoint than the one given."""


def load_denoiser(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[LatentDenoiser, dict[str, Any]]:
    """The EMA denoiser of a ``train_diffusion`` checkpoint, in eval mode, and the checkpoint.

    ``path`` is a ``train_diffusion`` checkpoint (``.pt``, loaded weights-only) or a bundle's
    ``.safetensors`` denoiser (no pickle). The checkpoint dict carries ``variant``, ``vae_sha256`` (of the VAE behind the cache it
    was trained on), ``latent_dim``, ``normalisation``, ``cache`` (levels, σ, β) and ``config``.

    Raises:
        CheckpointError: missing, unreadable or not a ``diffusion`` checkpoint.
    """
    try:
        state = load_checkpoint(path, kind="diffusion", map_location=map_location)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc} (the rule train_diffusion writes it; rerun it)") from exc
    try:
        model = LatentDenoiser(**state["arch"])
        model.load_state_dict(state["ema"])
        restore_sigma_table(model, state)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path}: the denoiser it records cannot be built ({type(exc).__name__}: {exc}); the file "
            "is inconsistent or was written by an incompatible multibeta (the rule train_diffusion "
            "writes it; rerun it)"
        ) from exc
    model.to(map_location).eval().requires_grad_(False)
    return model, state


def restore_sigma_table(model: LatentDenoiser, state: dict[str, Any]) -> None:
    """Set the model's σ_t table from the checkpoint's ``normalisation`` (the cache's schedule).

    Checkpoints written before the σ table copied its inputs hold σ in both of its buffers
    (``sigma_table.t_grid`` aliased ``sigma_grid``), which made σ(t) = t; the normalisation
    record kept the true schedule, so rebuilding the table from it repairs them and is the
    identity for newer checkpoints.
    """
    norm = state.get("normalisation") or {}
    if model.sigma_table is not None and "schedule_t" in norm and "schedule_sigma" in norm:
        model.set_normalisation(schedule_t=torch.as_tensor(norm["schedule_t"]).cpu().numpy(),
                                schedule_sigma=torch.as_tensor(norm["schedule_sigma"]).cpu().numpy())


def check_denoiser_vae(checkpoint: dict[str, Any], vae_sha256: str) -> None:
    """Raise :class:`DenoiserVAEMismatchError` unless the denoiser was trained on latents of this VAE.

    Args:
        checkpoint: the dict returned by :func:`load_denoiser`.
        vae_sha256: SHA-256 of the VAE checkpoint file to decode with.
    """
    trained_on = checkpoint.get("vae_sha256") or "<unknown>"
    if trained_on != vae_sha256:
        raise DenoiserVAEMismatchError(
            f"the diffusion model (variant {checkpoint.get('variant')}) was trained on a latent cache of "
            f"the VAE checkpoint with sha256 {trained_on}, but the VAE given has sha256 {vae_sha256}. "
            "Its latents mean nothing to this decoder: rerun the rules cache_latents and train_diffusion."
        )
