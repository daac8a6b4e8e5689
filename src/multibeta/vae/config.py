"""Typed config of Stage 1 (the ``vae`` config section).

Every option, its range and its default are defined once, in
``workflow/schemas/vae.schema.yaml``; these dataclasses are built from a validated section
(``VAEConfig.from_section(d)``) and have no defaults of their own. Tests get a defaulted
section from ``multibeta.workflow.config.section_defaults("vae", overrides)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from multibeta.core.config import ConfigError, Section
from multibeta.core.image_size import IMAGE_SIZE, check_levels, default_channels
from multibeta.models.vae import VAEArch, VAENetwork

SigmaScheduleName = Literal["learned", "sinusoidal", "linear"]
Reconstruction = Literal["bce", "l1_lpips"]
LossWeighting = Literal["none", "inv_beta", "normalized"]
TSampling = Literal["uniform", "stratified"]

#: Keys that change neither the trained weights nor the training trajectory; a resumed run
#: may differ from its checkpoint in these.
NON_TRAINING_KEYS = frozenset({"log_every", "checkpoint_every", "evaluation", "baseline_betas"})


@dataclass(frozen=True)
class LPIPSConfig:
    """Perceptual term of the ``l1_lpips`` reconstruction (``vae.lpips``)."""

    weight: float
    weights_path: str | None


@dataclass(frozen=True)
class GANConfig:
    """Optional patch-GAN term of the ``l1_lpips`` reconstruction (``vae.gan``)."""

    weight: float
    start_step: int
    disc_channels: int
    disc_layers: int
    lr: float


@dataclass(frozen=True)
class EvalConfig:
    """Held-out evaluation and plots of the trained VAE (``vae.evaluation``)."""

    num_images: int
    levels: int
    recon_images: int
    batch_size: int


@dataclass(frozen=True)
class VAEConfig(Section):
    """The ``vae`` section as a typed object (see ``workflow/schemas/vae.schema.yaml``)."""

    SECTION = "vae"

    seed: int
    latent_dim: int
    beta_min: float
    beta_max: float
    fixed_beta: float | None
    sigma_schedule: SigmaScheduleName
    sigma_min: float
    sigma_max: float
    sigma_stagger: float
    reconstruction: Reconstruction
    loss_weighting: LossWeighting
    t_sampling: TSampling
    t_power: float
    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    adam_betas: tuple[float, float]
    warmup_steps: int
    min_lr_ratio: float
    grad_clip: float | None
    ema_decay: float
    log_every: int
    checkpoint_every: int
    baseline_betas: tuple[float, ...]
    arch: VAENetwork
    lpips: LPIPSConfig
    gan: GANConfig
    evaluation: EvalConfig

    def check(self) -> None:
        """Cross-key checks the schema cannot express."""
        if not self.beta_min < self.beta_max:
            raise ConfigError(
                f"vae.beta_min ({self.beta_min}) must be smaller than vae.beta_max ({self.beta_max})"
            )
        for name, beta in [("vae.fixed_beta", self.fixed_beta)] + [
            ("vae.baseline_betas", b) for b in self.baseline_betas
        ]:
            if beta is not None and not self.beta_min <= beta <= self.beta_max:
                raise ConfigError(
                    f"{name} = {beta} lies outside [vae.beta_min, vae.beta_max] = "
                    f"[{self.beta_min}, {self.beta_max}]; the baseline shares the multi-β "
                    "model's β(t) map and σ schedule, so widen the range or pick another β."
                )
        if self.sigma_schedule == "learned" and not self.sigma_min < self.sigma_max:
            raise ConfigError("vae.sigma_min must be smaller than vae.sigma_max")
        if self.arch.channels is not None and len(self.arch.channels) > 8:
            raise ConfigError("vae.arch.channels: at most 8 levels (256x256 halves to 1x1)")

    def with_fixed_beta(self, beta: float | None) -> "VAEConfig":
        """A copy with ``fixed_beta`` replaced (for baselines)."""
        cfg = dataclasses.replace(self, fixed_beta=None if beta is None else float(beta))
        cfg.check()
        return cfg

    def channels_for(self, image_size: int) -> tuple[int, ...]:
        """``arch.channels``, or the default of the image size when the section leaves it (None).

        Raises:
            ConfigError: the widths do not fit the image size (naming both keys).
        """
        channels = default_channels(image_size) if self.arch.channels is None else tuple(self.arch.channels)
        try:
            check_levels(channels, image_size)
        except ValueError as exc:
            raise ConfigError(f"invalid config at 'vae.arch.channels': {exc}") from None
        return channels

    def vae_arch(self, image_channels: int, image_size: int = IMAGE_SIZE) -> VAEArch:
        """The architecture of the model this section trains, for images ``[C, S, S]`` with
        ``C = image_channels`` and ``S = image_size`` (the dataset file's)."""
        network = {f.name: getattr(self.arch, f.name) for f in dataclasses.fields(self.arch)}
        network["channels"] = self.channels_for(image_size)
        return VAEArch(
            image_channels=int(image_channels),
            image_size=int(image_size),
            latent_dim=self.latent_dim,
            beta_min=self.beta_min,
            beta_max=self.beta_max,
            fixed_beta=self.fixed_beta,
            sigma_schedule=self.sigma_schedule,
            sigma_min=self.sigma_min,
            sigma_max=self.sigma_max,
            sigma_stagger=self.sigma_stagger,
            **network,
        )

    def training_dict(self) -> dict[str, Any]:
        """Everything that shapes the training trajectory (compared on resume)."""
        return {k: v for k, v in self.to_dict().items() if k not in NON_TRAINING_KEYS}
