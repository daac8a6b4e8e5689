"""Typed view of the validated ``diffusion`` config section (defaults live in diffusion.schema.yaml)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from multibeta.diffusion.process import TSampling, Weighting, WeightingParams


@dataclass(frozen=True)
class DiffusionConfig:
    """Options of the Stage-2 denoiser and its training; see ``workflow/schemas/diffusion.schema.yaml``."""

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
    weight_decay: float
    adam_betas: tuple[float, float]
    grad_clip: float
    ema_decay: float
    t_sampling: TSampling
    weighting: Weighting
    min_snr_gamma: float
    snr_max: float
    lambda_delta: float
    train_split: Literal["train", "all"]
    checkpoint_every: int
    log_every: int
    seed: int

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> DiffusionConfig:
        """Build from a validated, fully defaulted ``diffusion`` section."""
        s = section
        return cls(
            variants=tuple(s["variants"]),
            width=int(s["width"]),
            depth=int(s["depth"]),
            time_embed_dim=int(s["time_embed_dim"]),
            dropout=float(s["dropout"]),
            steps=int(s["steps"]),
            batch_size=int(s["batch_size"]),
            lr=float(s["lr"]),
            lr_schedule=s["lr_schedule"],
            warmup_steps=int(s["warmup_steps"]),
            weight_decay=float(s["weight_decay"]),
            adam_betas=(float(s["adam_betas"][0]), float(s["adam_betas"][1])),
            grad_clip=float(s["grad_clip"]),
            ema_decay=float(s["ema_decay"]),
            t_sampling=s["t_sampling"],
            weighting=s["weighting"],
            min_snr_gamma=float(s["min_snr_gamma"]),
            snr_max=float(s["snr_max"]),
            lambda_delta=float(s["lambda_delta"]),
            train_split=s["train_split"],
            checkpoint_every=int(s["checkpoint_every"]),
            log_every=int(s["log_every"]),
            seed=int(s["seed"]),
        )

    @property
    def weighting_params(self) -> WeightingParams:
        return WeightingParams(min_snr_gamma=self.min_snr_gamma, snr_max=self.snr_max)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["variants"] = list(self.variants)
        d["adam_betas"] = list(self.adam_betas)
        return d
