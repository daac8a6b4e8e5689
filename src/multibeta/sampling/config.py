"""Typed views of the validated ``sampling`` config section.

Every option, its range and its default is defined once, in
``workflow/schemas/sampling.schema.yaml``; these dataclasses only give them types. Build them
with ``SamplingConfig.from_section(section)`` from a validated section (tests:
``section_defaults("sampling", overrides)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from multibeta.sampling.samplers import Solver, Variant
from multibeta.sampling.spacing import Spacing
from multibeta.core.config import ConfigError

Split = Literal["train", "validation", "test"]
Prior = Literal["standard", "fitted"]


def _check_solver(where: str, solver: str, eta: float) -> None:
    if solver == "heun" and eta != 0.0:
        raise ConfigError(
            f"invalid config at '{where}': solver heun is deterministic, "
            f"so eta must be 0 (got {eta})"
        )


@dataclass(frozen=True, kw_only=True)
class SampleRunConfig:
    """One entry of ``sampling.runs``."""

    name: str
    variant: Variant
    steps: int
    eta: float
    solver: Solver
    spacing: Spacing
    n_samples: int
    batch_size: int
    seed: int
    final_mean: bool
    prior: Prior

    @classmethod
    def from_section(cls, d: dict[str, Any]) -> SampleRunConfig:
        cfg = cls(
            name=d["name"],
            variant=d["variant"],
            steps=int(d["steps"]),
            eta=float(d["eta"]),
            solver=d["solver"],
            spacing=d["spacing"],
            n_samples=int(d["n_samples"]),
            batch_size=int(d["batch_size"]),
            seed=int(d["seed"]),
            final_mean=bool(d["final_mean"]),
            prior=d["prior"],
        )
        _check_solver(f"sampling.runs[{cfg.name}]", cfg.solver, cfg.eta)
        return cfg

    @property
    def uses_fitted_prior(self) -> bool:
        """Whether the run starts from the fitted Gaussian (standard_ldm's own start is exact)."""
        return self.prior == "fitted" and self.variant != "standard_ldm"

    def sampler_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`multibeta.sampling.samplers.sample_latents`."""
        return {
            "variant": self.variant,
            "steps": self.steps,
            "eta": self.eta,
            "solver": self.solver,
            "spacing": self.spacing,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "final_mean": self.final_mean,
        }


@dataclass(frozen=True, kw_only=True)
class GridConfig:
    """``sampling.grid``: the sample grid image of each run."""

    n_images: int
    n_cols: int

    @classmethod
    def from_section(cls, d: dict[str, Any]) -> GridConfig:
        return cls(n_images=int(d["n_images"]), n_cols=int(d["n_cols"]))


@dataclass(frozen=True, kw_only=True)
class SharpenConfig:
    """``sampling.sharpen``: encode at t_b, denoise to 0, decode."""

    levels: tuple[float, ...]
    n_images: int
    n_metric_images: int
    split: Split
    variant: Variant
    add_noise: bool
    steps: int
    eta: float
    solver: Solver
    spacing: Spacing
    seed: int

    @classmethod
    def from_section(cls, d: dict[str, Any]) -> SharpenConfig:
        cfg = cls(
            levels=tuple(float(v) for v in d["levels"]),
            n_images=int(d["n_images"]),
            n_metric_images=int(d["n_metric_images"]),
            split=d["split"],
            variant=d["variant"],
            add_noise=bool(d["add_noise"]),
            steps=int(d["steps"]),
            eta=float(d["eta"]),
            solver=d["solver"],
            spacing=d["spacing"],
            seed=int(d["seed"]),
        )
        _check_solver("sampling.sharpen", cfg.solver, cfg.eta)
        return cfg

    def sampler_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`multibeta.sampling.edit.sharpen` (besides levels)."""
        return {
            "variant": self.variant,
            "steps": self.steps,
            "eta": self.eta,
            "solver": self.solver,
            "spacing": self.spacing,
            "seed": self.seed,
            "add_noise": self.add_noise,
        }


@dataclass(frozen=True, kw_only=True)
class TraverseConfig:
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
    variant: Variant
    steps: int
    eta: float
    solver: Solver
    spacing: Spacing
    seed: int
    batch_size: int

    @classmethod
    def from_section(cls, d: dict[str, Any]) -> TraverseConfig:
        cfg = cls(
            t_b=float(d["t_b"]),
            n_pca=int(d["n_pca"]),
            max_dims=None if d["max_dims"] is None else int(d["max_dims"]),
            span=float(d["span"]),
            n_values=int(d["n_values"]),
            base=d["base"],
            base_index=int(d["base_index"]),
            split=d["split"],
            pca_samples=int(d["pca_samples"]),
            variant=d["variant"],
            steps=int(d["steps"]),
            eta=float(d["eta"]),
            solver=d["solver"],
            spacing=d["spacing"],
            seed=int(d["seed"]),
            batch_size=int(d["batch_size"]),
        )
        _check_solver("sampling.traverse", cfg.solver, cfg.eta)
        return cfg

    def sampler_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`multibeta.sampling.edit.traverse` (besides directions)."""
        return {
            "t_b": self.t_b,
            "variant": self.variant,
            "steps": self.steps,
            "eta": self.eta,
            "solver": self.solver,
            "spacing": self.spacing,
            "seed": self.seed,
            "batch_size": self.batch_size,
        }


@dataclass(frozen=True, kw_only=True)
class SamplingConfig:
    """The whole ``sampling`` section."""

    runs: tuple[SampleRunConfig, ...]
    grid: GridConfig
    decode_batch_size: int
    sharpen: SharpenConfig
    traverse: TraverseConfig

    @classmethod
    def from_section(cls, d: dict[str, Any]) -> SamplingConfig:
        runs = tuple(SampleRunConfig.from_section(r) for r in d["runs"])
        names = [r.name for r in runs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(
                "invalid config at 'sampling.runs': run names must be unique; "
                f"repeated: {', '.join(duplicates)}"
            )
        return cls(
            runs=runs,
            grid=GridConfig.from_section(d["grid"]),
            decode_batch_size=int(d["decode_batch_size"]),
            sharpen=SharpenConfig.from_section(d["sharpen"]),
            traverse=TraverseConfig.from_section(d["traverse"]),
        )

    def run(self, name: str) -> SampleRunConfig:
        """The run called ``name``."""
        for r in self.runs:
            if r.name == name:
                return r
        raise KeyError(
            f"no sampling run named {name!r}; runs: {', '.join(r.name for r in self.runs)}"
        )
