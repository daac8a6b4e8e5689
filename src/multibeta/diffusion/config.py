"""Typed view of the validated ``diffusion`` config section (defaults live in diffusion.schema.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from multibeta.core.config import Section
from multibeta.core.logsnr import TimeDensity
from multibeta.diffusion.process import TSampling, Weighting, WeightingParams


@dataclass(frozen=True)
class DiffusionConfig(Section):
    """Options of the Stage-2 denoiser and its training; see ``workflow/schemas/diffusion.schema.yaml``."""

    SECTION = "diffusion"

    variants: tuple[str, ...]
    width: int
    depth: int
    time_embed_dim: int
    dropout: float
    steps: int
    batch_size: int
    lr: float
    lr_schedule: Literal["constant", "cosine"]
    warmup_steps: int
    min_lr_ratio: float
    weight_decay: float
    adam_betas: tuple[float, float]
    grad_clip: float
    ema_decay: float
    t_sampling: TSampling
    t_density: TimeDensity
    time_input: Literal["t", "logsnr"]
    prediction: Literal["eps", "v"]
    weighting: Weighting
    min_snr_gamma: float
    snr_max: float
    lambda_delta: float
    delta_scale: Literal["global", "per_level"]
    train_split: Literal["train", "all"]
    checkpoint_every: int
    log_every: int
    seed: int

    @property
    def weighting_params(self) -> WeightingParams:
        return WeightingParams(min_snr_gamma=self.min_snr_gamma, snr_max=self.snr_max)

