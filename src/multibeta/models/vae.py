"""The β-conditioned VAE of Stage 1: one encoder/decoder pair for the whole β range.

t ∈ [0, 1] indexes β(t) = β_min · (β_max/β_min)^t. Encoder E(x, t) -> μ_t(x) and decoder
D(z, t) -> logits are convolutional networks for square images of side ``S = arch.image_size``
(``data.image_size``: 32, 64, 128 or 256) whose every block is FiLM-modulated by a Fourier
embedding of t. The posterior is q(z_t | x) = N(μ_t(x), σ_t² I) with σ_t a schedule shared by
all data (:mod:`multibeta.models.schedules`), or, with ``vae.sigma_stagger`` > 0 (an extension),
N(μ_t(x), diag σ_{t,j}²) with each dimension on its own staggered clock.

Architecture (``L = len(arch.channels)`` levels, spatial size ``s = S / 2^L``)::

    encoder: [conv4x4/2 -> FiLM -> SiLU, res_blocks x ResBlock] x L
             -> flatten -> Linear(hidden) -> FiLM -> SiLU -> Linear(d)
    decoder: Linear(hidden) -> FiLM -> SiLU -> Linear(C_L s s) -> FiLM -> SiLU
             -> [res_blocks x ResBlock, convT4x4/2 -> FiLM -> SiLU] x (L-1) -> convT4x4/2 -> logits
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from multibeta.core.config import ConfigError, from_section, to_dict
from multibeta.core.image_size import IMAGE_SIZE, check_levels, default_channels  # noqa: F401 (re-exported)
from multibeta.models.embedding import FiLM, FourierTimeEmbedding
from multibeta.models.schedules import build_sigma_schedule, stagger_offsets, staggered_times
from multibeta.utils.checkpoint import CheckpointError, CheckpointMismatchError, check_arch, load_checkpoint

logger = logging.getLogger(__name__)


#: Memory format of the conv weights and feature maps. channels_last (NHWC) speeds up VAE
#: training by about 10% on CPU (oneDNN; benchmarks/results/stage_profile.md) and is the
#: layout tensor cores prefer on GPUs. Inputs and outputs stay ordinary NCHW tensors.
CONV_FORMAT = torch.channels_last

#: Rows per encoder pass for inference on the CPU (see :meth:`MultiBetaVAE.encode`); 48-96
#: rows were equally fast on a 2-core CPU, 256 rows 2.3x slower.
ENCODE_CPU_ROWS = 64

#: Architecture keys added after checkpoints were first written, with the value every older
#: checkpoint had: 64x64 images and the shared σ_t.
ARCH_DEFAULTS: dict[str, Any] = {"image_size": IMAGE_SIZE, "sigma_stagger": 0.0}

@dataclass(frozen=True)
class VAENetwork:
    """The VAE's network sizes: the config section ``vae.arch`` (meanings in its schema).

    ``channels`` is None in a section that leaves it to the image size (:func:`default_channels`);
    a :class:`VAEArch` always holds the widths.
    """

    channels: tuple[int, ...] | None
    hidden_dim: int
    res_blocks: int
    time_frequencies: int
    time_max_frequency: float
    time_embed_dim: int
    sigma_hidden: int


@dataclass(frozen=True)
class VAEArch(VAENetwork):
    """Everything that defines a :class:`MultiBetaVAE`: its network sizes and what t means.

    Stored in every VAE checkpoint as ``arch`` (:meth:`to_dict`); a checkpoint is loaded only
    into the architecture it records. The β range, the σ schedule and ``fixed_beta`` belong
    here because they define the map t -> (β, σ_t): a baseline must not pass for the multi-β
    model. Built from the config by ``multibeta.vae.config.VAEConfig.vae_arch``.
    """

    image_channels: int
    image_size: int
    latent_dim: int
    beta_min: float
    beta_max: float
    fixed_beta: float | None
    sigma_schedule: str
    sigma_min: float
    sigma_max: float
    sigma_stagger: float

    def to_dict(self) -> dict[str, Any]:
        """The architecture as plain data (tuples as lists), as stored in checkpoints."""
        return to_dict(self)

    @classmethod
    def from_dict(cls, arch: dict[str, Any], source: str = "checkpoint") -> "VAEArch":
        """Read a checkpoint's ``arch`` dict.

        A record without ``image_size`` (every checkpoint written before image sizes other than
        64 existed) is a 64x64 model; one without ``sigma_stagger`` has the shared σ_t (0).

        Raises:
            CheckpointError: keys missing or unknown, or values of the wrong type: the file
                was written by another version of multibeta (the message names ``source``).
        """
        arch = {**ARCH_DEFAULTS, **arch}
        try:
            return from_section(cls, arch, "arch")
        except ConfigError as exc:
            raise CheckpointError(
                f"{source}: the VAE architecture it records does not match this version of "
                f"multibeta ({exc}); it was written by an incompatible version. Retrain the VAE "
                "(delete the file and rerun the rule that writes it)."
            ) from exc


class ResBlock(nn.Module):
    """``h + conv3x3(SiLU(FiLM(conv3x3(h))))`` at constant resolution ``[N, C, H, W]``."""

    def __init__(self, channels: int, embed_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.film = FiLM(embed_dim, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return h + self.conv2(F.silu(self.film(self.conv1(h), emb)))


class _Level(nn.Module):
    """A resampling conv, FiLM, SiLU, then ``res_blocks`` residual blocks (or the reverse)."""

    def __init__(self, conv: nn.Module, out_ch: int, embed_dim: int, res_blocks: int,
                 res_first: bool, res_ch: int) -> None:
        super().__init__()
        self.conv = conv
        self.film = FiLM(embed_dim, out_ch)
        self.res = nn.ModuleList(ResBlock(res_ch, embed_dim) for _ in range(res_blocks))
        self.res_first = res_first

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.res_first:
            for block in self.res:
                h = block(h, emb)
        h = F.silu(self.film(self.conv(h), emb))
        if not self.res_first:
            for block in self.res:
                h = block(h, emb)
        return h


class Encoder(nn.Module):
    """E(x, t): images ``[N, C, S, S]`` in [0, 1], t ``[N]`` (or ``[1]``) -> μ ``[N, d]``."""

    def __init__(self, *, image_channels: int, image_size: int, latent_dim: int, channels: tuple[int, ...],
                 hidden_dim: int, res_blocks: int, embed: FourierTimeEmbedding) -> None:
        super().__init__()
        self.embed = embed
        e = embed.dim
        ins = (image_channels,) + tuple(channels[:-1])
        self.levels = nn.ModuleList(
            _Level(nn.Conv2d(i, o, 4, stride=2, padding=1), o, e, res_blocks, False, o)
            for i, o in zip(ins, channels)
        )
        side = image_size // 2 ** len(channels)
        self.fc = nn.Linear(channels[-1] * side * side, hidden_dim)
        self.fc_film = FiLM(e, hidden_dim)
        self.out = nn.Linear(hidden_dim, latent_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.embed(t)
        h = (2.0 * x - 1.0).contiguous(memory_format=CONV_FORMAT)
        for level in self.levels:
            h = level(h, emb)
        h = F.silu(self.fc_film(self.fc(h.flatten(1)), emb))
        return self.out(h)


class Decoder(nn.Module):
    """D(z, t): latents ``[N, d]``, t ``[N]`` (or ``[1]``) -> logits ``[N, C, S, S]``."""

    def __init__(self, *, image_channels: int, image_size: int, latent_dim: int, channels: tuple[int, ...],
                 hidden_dim: int, res_blocks: int, embed: FourierTimeEmbedding) -> None:
        super().__init__()
        self.embed = embed
        e = embed.dim
        self.side = image_size // 2 ** len(channels)
        self.top = channels[-1]
        self.fc1 = nn.Linear(latent_dim, hidden_dim)
        self.film1 = FiLM(e, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, self.top * self.side * self.side)
        self.film2 = FiLM(e, self.top * self.side * self.side)
        rev = tuple(reversed(channels))
        self.levels = nn.ModuleList(
            _Level(nn.ConvTranspose2d(i, o, 4, stride=2, padding=1), o, e, res_blocks, True, i)
            for i, o in zip(rev[:-1], rev[1:])
        )
        self.res_last = nn.ModuleList(ResBlock(rev[-1], e) for _ in range(res_blocks))
        self.last = nn.ConvTranspose2d(rev[-1], image_channels, 4, stride=2, padding=1)

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.embed(t)
        h = F.silu(self.film1(self.fc1(z), emb))
        h = F.silu(self.film2(self.fc2(h), emb))
        h = h.view(-1, self.top, self.side, self.side).contiguous(memory_format=CONV_FORMAT)
        for level in self.levels:
            h = level(h, emb)
        for block in self.res_last:
            h = block(h, emb)
        return self.last(h).contiguous()


class MultiBetaVAE(nn.Module):
    """β-conditioned VAE with posterior N(μ_t(x), σ_t² I) and β(t) log-linear in t.

    Build from a :class:`VAEArch` (``VAEConfig.vae_arch(channels)`` for a config,
    ``VAEArch.from_dict`` for a checkpoint's ``arch``); load trained weights with
    :func:`load_vae`.
    """

    def __init__(self, arch: VAEArch) -> None:
        super().__init__()
        if not 0.0 < arch.beta_min < arch.beta_max:
            raise ValueError(f"need 0 < beta_min < beta_max, got {arch.beta_min}, {arch.beta_max}")
        if arch.channels is None:
            raise ValueError("VAEArch.channels must hold the widths (VAEConfig.vae_arch fills the default)")
        check_levels(tuple(arch.channels), arch.image_size)
        self.arch = arch
        self.image_channels = arch.image_channels
        self.image_size = int(arch.image_size)
        self.latent_dim = arch.latent_dim
        self.beta_min = float(arch.beta_min)
        self.beta_max = float(arch.beta_max)
        self.log_beta_ratio = math.log(arch.beta_max / arch.beta_min)
        self.fixed_beta = arch.fixed_beta
        self.schedule = build_sigma_schedule(arch.sigma_schedule, sigma_min=arch.sigma_min,
                                             sigma_max=arch.sigma_max, hidden=arch.sigma_hidden)
        self.sigma_stagger = float(arch.sigma_stagger)
        # a buffer outside the state dict: it follows .to(device) but older checkpoints load as they are
        self.register_buffer("stagger_offsets", stagger_offsets(arch.latent_dim, self.sigma_stagger),
                             persistent=False)

        def embed() -> FourierTimeEmbedding:
            return FourierTimeEmbedding(num_frequencies=arch.time_frequencies,
                                        max_frequency=arch.time_max_frequency,
                                        dim=arch.time_embed_dim)

        common = dict(image_channels=arch.image_channels, image_size=arch.image_size, latent_dim=arch.latent_dim,
                      channels=arch.channels, hidden_dim=arch.hidden_dim,
                      res_blocks=arch.res_blocks)
        self.encoder = Encoder(**common, embed=embed())
        self.decoder = Decoder(**common, embed=embed())
        self.to(memory_format=CONV_FORMAT)

    # --- β and σ ------------------------------------------------------------------------
    def beta(self, t: torch.Tensor) -> torch.Tensor:
        """β(t) = β_min (β_max/β_min)^t, same shape as ``t``, float32."""
        return self.beta_min * torch.exp(t.float() * self.log_beta_ratio)

    def t_of_beta(self, beta: float | torch.Tensor) -> float | torch.Tensor:
        """Inverse of :meth:`beta`. Raises ValueError for β outside [β_min, β_max]."""
        b = torch.as_tensor(beta, dtype=torch.float64)
        lo, hi = self.beta_min * (1 - 1e-6), self.beta_max * (1 + 1e-6)  # float32 round-off
        if torch.any(b < lo) or torch.any(b > hi):
            raise ValueError(f"beta {beta} outside the model's range [{self.beta_min}, {self.beta_max}]")
        t = (torch.log(b / self.beta_min) / self.log_beta_ratio).clamp(0.0, 1.0)
        if isinstance(beta, torch.Tensor):
            return t.to(beta.dtype if beta.is_floating_point() else torch.float32)
        return float(t)

    @property
    def per_dimension_sigma(self) -> bool:
        """True when σ_{t,j} differs between dimensions (``vae.sigma_stagger`` > 0)."""
        return self.sigma_stagger > 0.0

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """σ_t ``[N]`` (float32) of the shared posterior schedule.

        Raises:
            ValueError: the model has a per-dimension schedule (use :meth:`posterior_sigma`).
        """
        if self.per_dimension_sigma:
            raise ValueError(
                f"this VAE has a per-dimension sigma schedule (vae.sigma_stagger = {self.sigma_stagger}): "
                "sigma_t is [N, d], use posterior_sigma(t)"
            )
        return self.schedule(t)

    def posterior_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """The posterior std broadcastable against μ ``[N, d]``: ``[N, 1]`` for the shared σ_t,
        ``[N, d]`` (σ_{t,j} = σ(τ_j(t)), float32) for a staggered one."""
        if not self.per_dimension_sigma:
            return self.schedule(t)[:, None]
        tau = staggered_times(t, self.stagger_offsets, self.sigma_stagger)
        return self.schedule(tau.reshape(-1)).reshape(tau.shape)

    @property
    def fixed_t(self) -> float | None:
        """t of a fixed-β baseline (None for the multi-β model)."""
        return None if self.fixed_beta is None else float(self.t_of_beta(self.fixed_beta))

    # --- networks -----------------------------------------------------------------------
    def encode(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """μ_t(x): images ``[N, C, S, S]`` in [0, 1], t ``[N]`` (or ``[1]``) -> ``[N, d]``.

        Without autograd on the CPU, large batches are encoded ``ENCODE_CPU_ROWS`` rows at a
        time: the feature maps of a small chunk stay in the CPU caches, which makes inference
        about 2x faster than one 256-row pass (benchmarks/results/stage_profile.md).
        """
        if x.device.type != "cpu" or torch.is_grad_enabled() or len(x) <= ENCODE_CPU_ROWS:
            return self.encoder(x, t)
        chunks = []
        for lo in range(0, len(x), ENCODE_CPU_ROWS):
            t_chunk = t if t.numel() == 1 else t[lo:lo + ENCODE_CPU_ROWS]
            chunks.append(self.encoder(x[lo:lo + ENCODE_CPU_ROWS], t_chunk))
        return torch.cat(chunks)

    def decode(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """D(z, t): latents ``[N, d]``, t ``[N]`` (or ``[1]``) -> logits ``[N, C, S, S]``."""
        return self.decoder(z, t)

    def decode_image(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Decoded images ``[N, C, S, S]`` in [0, 1] (sigmoid of the logits)."""
        return torch.sigmoid(self.decode(z, t).float())

    def forward(self, x: torch.Tensor, t: torch.Tensor, eps: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One posterior sample and its decoding.

        Args:
            x: images ``[N, C, S, S]`` in [0, 1] (S = ``arch.image_size``).
            t: levels ``[N]`` (or ``[1]``, shared by the batch).
            eps: standard normal noise ``[N, d]``.

        Returns:
            ``(mu [N, d], sigma, logits [N, C, S, S])`` with z = μ + σ ε decoded; ``sigma`` is
            :meth:`posterior_sigma` (``[N or 1, 1]``, or ``[N or 1, d]`` when staggered).
        """
        mu = self.encode(x, t)
        sigma = self.posterior_sigma(t)
        z = mu + sigma.to(mu.dtype) * eps.to(mu.dtype)
        return mu, sigma, self.decode(z, t)


def load_vae(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    *,
    arch: VAEArch | None = None,
    use_ema: bool = True,
) -> tuple[MultiBetaVAE, dict[str, Any]]:
    """Load a trained VAE (eval mode) and its checkpoint dict.

    Args:
        path: a ``kind="vae"`` checkpoint written by :func:`multibeta.vae.trainer.train_vae`
            (``.pt``, loaded weights-only) or a bundle's ``vae.safetensors`` (no pickle).
        map_location: device for the tensors.
        arch: expected architecture (``VAEConfig.vae_arch(channels, image_size)``); None accepts any.
        use_ema: take the EMA weights when the checkpoint has them.

    Raises:
        CheckpointError: missing/corrupt file, wrong kind, or weights that do not fit.
        CheckpointMismatchError: ``arch`` given and different (the message names the keys).
    """
    try:
        state = load_checkpoint(path, kind="vae", map_location=map_location)
        if arch is not None:  # older checkpoints lack the keys of ARCH_DEFAULTS
            check_arch(path, {**ARCH_DEFAULTS, **state.get("arch", {})}, arch.to_dict())
    except CheckpointMismatchError:
        raise
    except CheckpointError as exc:
        raise CheckpointError(f"{exc} (the rule train_vae, or train_vae_baseline for a baseline, writes it; rerun it)") from exc
    model = MultiBetaVAE(VAEArch.from_dict(state.get("arch", {}), source=str(path)))
    weights = state.get("ema") if use_ema and state.get("ema") is not None else state.get("model")
    if weights is None:
        raise CheckpointError(f"{path} holds no model weights; retrain the VAE.")
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: weights do not fit the architecture recorded in the same file ({exc}). "
            "The file is inconsistent; delete it and retrain the VAE."
        ) from exc
    model.to(map_location)
    model.eval()
    return model, state
