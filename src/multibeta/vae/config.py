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

SigmaScheduleName = Literal["learned", "sinusoidal", "linear"]
Reconstruction = Literal["bce", "l1_lpips"]
LossWeighting = Literal["none", "inv_beta", "normalized"]
TSampling = Literal["uniform", "stratified"]

#: Keys that change neither the trained weights nor the training trajectory; a resumed run
#: may differ from its checkpoint in these.
NON_TRAINING_KEYS = frozenset({"log_every", "checkpoint_every", "evaluation", "baseline_betas"})


def _take(d: dict[str, Any], cls: type, where: str) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    missing = sorted(names - set(d))
    extra = sorted(set(d) - names)
    if missing or extra:
        raise ValueError(
            f"config section '{where}' does not match {cls.__name__}: missing {missing}, "
            f"unknown {extra}. Build it with multibeta.workflow.config (validate / "
            "section_defaults) so the schema fills defaults and rejects unknown keys."
        )
    return {k: d[k] for k in names}


@dataclass(frozen=True)
class ArchConfig:
    """Network sizes (``vae.arch``). See the schema for meanings and defaults."""

    channels: tuple[int, ...]
    hidden_dim: int
    res_blocks: int
    time_frequencies: int
    time_max_frequency: float
    time_embed_dim: int
    sigma_hidden: int

    @classmethod
    def from_section(cls, d: dict[str, Any]) -> "ArchConfig":
        kw = _take(d, cls, "vae.arch")
        kw["channels"] = tuple(int(c) for c in kw["channels"])
        kw["time_max_frequency"] = float(kw["time_max_frequency"])
        return cls(**kw)


@dataclass(frozen=True)
class LPIPSConfig:
    """Perceptual term of the ``l1_lpips`` reconstruction (``vae.lpips``)."""

    weight: float
    weights_path: str | None

    @classmethod
    def from_section(cls, d: dict[str, Any]) -> "LPIPSConfig":
        return cls(**_take(d, cls, "vae.lpips"))


@dataclass(frozen=True)
class GANConfig:
    """Optional patch-GAN term of the ``l1_lpips`` reconstruction (``vae.gan``)."""

    weight: float
    start_step: int
    disc_channels: int
    disc_layers: int
    lr: float

    @classmethod
    def from_section(cls, d: dict[str, Any]) -> "GANConfig":
        return cls(**_take(d, cls, "vae.gan"))


@dataclass(frozen=True)
class EvalConfig:
    """Held-out evaluation and plots of the trained VAE (``vae.evaluation``)."""

    num_images: int
    levels: int
    recon_images: int
    batch_size: int

    @classmethod
    def from_section(cls, d: dict[str, Any]) -> "EvalConfig":
        return cls(**_take(d, cls, "vae.evaluation"))


@dataclass(frozen=True)
class VAEConfig:
    """The ``vae`` section as a typed object (see ``workflow/schemas/vae.schema.yaml``)."""

    seed: int
    latent_dim: int
    beta_min: float
    beta_max: float
    fixed_beta: float | None
    sigma_schedule: SigmaScheduleName
    sigma_min: float
    sigma_max: float
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
    arch: ArchConfig
    lpips: LPIPSConfig
    gan: GANConfig
    evaluation: EvalConfig

    @classmethod
    def from_section(cls, d: dict[str, Any]) -> "VAEConfig":
        """Build from a validated, defaulted ``vae`` section.

        Raises:
            ValueError: keys missing or unknown (the section was not validated), or
                inconsistent values (``beta_min >= beta_max``, ``fixed_beta`` out of range).
        """
        kw = _take(d, cls, "vae")
        kw["arch"] = ArchConfig.from_section(kw["arch"])
        kw["lpips"] = LPIPSConfig.from_section(kw["lpips"])
        kw["gan"] = GANConfig.from_section(kw["gan"])
        kw["evaluation"] = EvalConfig.from_section(kw["evaluation"])
        kw["adam_betas"] = tuple(float(b) for b in kw["adam_betas"])
        kw["baseline_betas"] = tuple(float(b) for b in kw["baseline_betas"])
        for key in ("beta_min", "beta_max", "sigma_min", "sigma_max", "lr", "weight_decay",
                    "min_lr_ratio", "ema_decay", "t_power"):
            kw[key] = float(kw[key])
        cfg = cls(**kw)
        cfg.check()
        return cfg

    def check(self) -> None:
        """Cross-key checks the schema cannot express."""
        if not self.beta_min < self.beta_max:
            raise ValueError(
                f"vae.beta_min ({self.beta_min}) must be smaller than vae.beta_max ({self.beta_max})"
            )
        for name, beta in [("vae.fixed_beta", self.fixed_beta)] + [
            ("vae.baseline_betas", b) for b in self.baseline_betas
        ]:
            if beta is not None and not self.beta_min <= beta <= self.beta_max:
                raise ValueError(
                    f"{name} = {beta} lies outside [vae.beta_min, vae.beta_max] = "
                    f"[{self.beta_min}, {self.beta_max}]; the baseline shares the multi-β "
                    "model's β(t) map and σ schedule, so widen the range or pick another β."
                )
        if self.sigma_schedule == "learned" and not self.sigma_min < self.sigma_max:
            raise ValueError("vae.sigma_min must be smaller than vae.sigma_max")
        if len(self.arch.channels) > 6:
            raise ValueError("vae.arch.channels: at most 6 levels (64x64 halves to 1x1)")

    def to_dict(self) -> dict[str, Any]:
        """The section as plain JSON-able data (tuples become lists)."""

        def plain(v: Any) -> Any:
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            if isinstance(v, (tuple, list)):
                return [plain(x) for x in v]
            return v

        return plain(dataclasses.asdict(self))

    def with_fixed_beta(self, beta: float | None) -> "VAEConfig":
        """A copy with ``fixed_beta`` replaced (for baselines)."""
        cfg = dataclasses.replace(self, fixed_beta=None if beta is None else float(beta))
        cfg.check()
        return cfg

    def arch_dict(self, image_channels: int) -> dict[str, Any]:
        """The architecture-defining config stored as a checkpoint's ``arch``.

        Includes the β range and σ schedule (they define what t means) and ``fixed_beta`` (a
        baseline must not be mistaken for the multi-β model).
        """
        return {
            "image_channels": int(image_channels),
            "latent_dim": self.latent_dim,
            "beta_min": self.beta_min,
            "beta_max": self.beta_max,
            "fixed_beta": self.fixed_beta,
            "sigma_schedule": self.sigma_schedule,
            "sigma_min": self.sigma_min,
            "sigma_max": self.sigma_max,
            **{k: (list(v) if isinstance(v, tuple) else v)
               for k, v in dataclasses.asdict(self.arch).items()},
        }

    def training_dict(self) -> dict[str, Any]:
        """Everything that shapes the training trajectory (compared on resume)."""
        return {k: v for k, v in self.to_dict().items() if k not in NON_TRAINING_KEYS}
