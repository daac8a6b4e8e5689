"""Typed views of the validated ``sampling`` config section.

Every option, its range and its default is defined once, in
``workflow/schemas/sampling.schema.yaml`` (the sampler's own keys in ``sampler.schema.yaml``);
these dataclasses only give them types. Build them with the generic builder from a validated
section: ``from_section(SamplingConfig, section, "sampling")`` (tests:
``section_defaults("sampling", overrides)``), or one part of it, e.g.
``from_section(SharpenConfig, section["sharpen"], "sampling.sharpen")``.

A run entry, ``sharpen`` and ``traverse`` are :class:`~multibeta.sampling.settings.SamplerSettings`
plus their own keys (flat in the YAML, as in the schema), so each is passed as is wherever the
sampler's settings are expected; ``.sampler()`` gives the settings alone.

This module imports no torch (the workflow checks a config with it before any job).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from multibeta.core.config import ConfigError
from multibeta.sampling.settings import SamplerSettings

Split = Literal["train", "validation", "test"]
#: The direction families of rule edit_directions (one figure each): probes at t_b, the PCA / ICA
#: component best matched to each factor, probes at t = 0 edited without the denoiser.
DIRECTION_FAMILIES: tuple[str, ...] = ("attribute", "pca", "ica", "attribute_t0")
Prior = Literal["standard", "fitted"]


@dataclass(frozen=True, kw_only=True)
class SampleRunConfig(SamplerSettings):
    """One entry of ``sampling.runs``: the sampler's settings plus what a generation run adds."""

    name: str
    n_samples: int
    final_mean: bool
    prior: Prior

    @property
    def uses_fitted_prior(self) -> bool:
        """Whether the run starts from the fitted Gaussian (standard_ldm's own start is exact)."""
        return self.prior == "fitted" and self.variant != "standard_ldm"


@dataclass(frozen=True, kw_only=True)
class GridConfig:
    """``sampling.grid``: the sample grid image of each run."""

    n_images: int
    n_cols: int


@dataclass(frozen=True, kw_only=True)
class SharpenConfig(SamplerSettings):
    """``sampling.sharpen``: encode at t_b, denoise to 0, decode."""

    levels: tuple[float, ...]
    n_images: int
    n_metric_images: int
    split: Split
    start: str
    inversion_steps: int


@dataclass(frozen=True, kw_only=True)
class TraverseConfig(SamplerSettings):
    """``sampling.traverse``: latent traversals at level t_b."""

    t_b: float
    n_pca: int
    max_dims: int | None
    span: float
    n_values: int
    base: Literal["image", "mean"]
    base_index: int
    split: Split
    pca_samples: int


@dataclass(frozen=True, kw_only=True)
class DirectionsConfig(SamplerSettings):
    """``sampling.directions``: edit directions per factor and the selectivity of their edits."""

    t_b: float
    amounts: tuple[float, ...]
    grid_amounts: tuple[float, ...]
    n_fit: int
    n_images: int
    split: Split
    n_components: int
    orientation: Literal["normal", "pattern"]


@dataclass(frozen=True, kw_only=True)
class SamplingConfig:
    """The whole ``sampling`` section."""

    runs: tuple[SampleRunConfig, ...]
    grid: GridConfig
    decode_batch_size: int
    sharpen: SharpenConfig
    traverse: TraverseConfig
    directions: DirectionsConfig

    def check(self, where: str = "sampling") -> None:
        """Run names must be unique: each names its output folder.

        Raises:
            ConfigError: naming ``<where>.runs`` and the repeated names.
        """
        names = [r.name for r in self.runs]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ConfigError(
                f"invalid config at '{where}.runs': {repeated!r} — run names must be unique "
                "(each names its output folder). Rename the repeated runs."
            )

    def run(self, name: str) -> SampleRunConfig:
        """The run called ``name``."""
        for r in self.runs:
            if r.name == name:
                return r
        raise KeyError(
            f"no sampling run named {name!r}; runs: {', '.join(r.name for r in self.runs)}"
        )
