"""The sampler's settings: one frozen type for every place that runs the reverse process.

``sampling.runs`` entries, ``sampling.sharpen`` and ``sampling.traverse`` all integrate the
reverse process with the same settings; they are described once in
``workflow/schemas/sampler.schema.yaml`` (each section references it and adds its own keys and
defaults) and typed once here. The section dataclasses of :mod:`multibeta.sampling.config`
extend :class:`SamplerSettings` with their own keys, mirroring the schema, so a section is
built with the generic :func:`multibeta.core.config.from_section` and passed on as the
settings of the functions in :mod:`~multibeta.sampling.samplers` and
:mod:`~multibeta.sampling.edit`.

This module imports no torch: the workflow checks a config with it before any job.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, get_args

from multibeta.core.config import ConfigError

Variant = Literal["multibeta", "noise_only", "standard_ldm"]
Solver = Literal["euler", "heun"]
Spacing = Literal["uniform", "quadratic", "logsnr", "cosine", "edm"]
VARIANTS: tuple[str, ...] = get_args(Variant)
SOLVERS: tuple[str, ...] = get_args(Solver)
SPACINGS: tuple[str, ...] = get_args(Spacing)


@dataclass(frozen=True, kw_only=True)
class SamplerSettings:
    """How the reverse process is integrated (``workflow/schemas/sampler.schema.yaml``).

    Attributes:
        variant: the denoiser and update (``multibeta``, ``noise_only``, ``standard_ldm``).
        steps: reverse steps over the whole [0, 1] (a start t_b < 1 takes
            :func:`~multibeta.sampling.spacing.level_steps` of them).
        eta: noise of each step, 0 deterministic to 1 ancestral.
        solver: ``euler`` (the generalized η step) or ``heun`` (predictions averaged over each
            step; second order for η = 0, with η > 0 the averaged predictions take the η step).
        spacing: the time grid: ``uniform`` or ``quadratic`` in t, or even in a coordinate of
            the log-SNR (``logsnr``, ``cosine``, ``edm``; :mod:`multibeta.sampling.spacing`).
        seed: seed of the start and step noise.
        batch_size: latents per forward pass; bounds memory, never changes the results.
    """

    variant: Variant
    steps: int
    eta: float
    solver: Solver
    spacing: Spacing
    seed: int
    batch_size: int

    def sampler(self) -> SamplerSettings:
        """These settings alone, without the keys a section adds to them (for records)."""
        return SamplerSettings(
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(SamplerSettings)}
        )
