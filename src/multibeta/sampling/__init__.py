"""Sampling: the reverse samplers, sharpening, traversals and image grids.

- :mod:`multibeta.sampling.samplers`: the generalized (η) step, Heun, :func:`sample_latents`,
  :func:`decode_latents`, :func:`sample_run` (one ``sampling.runs`` entry, timed).
- :mod:`multibeta.sampling.spacing`: time grids (uniform, quadratic).
- :mod:`multibeta.sampling.edit`: :func:`sharpen` and :func:`traverse`.
- :mod:`multibeta.sampling.grids`: labelled PNG grids.
- :mod:`multibeta.sampling.config`: typed views of the ``sampling`` config section.
"""

from multibeta.sampling.config import (
    SampleRunConfig,
    SamplingConfig,
    SharpenConfig,
    TraverseConfig,
)
from multibeta.sampling.samplers import (
    decode_latents,
    generalized_step,
    run_sampler,
    sample_latents,
    sample_run,
    start_mismatch,
)
from multibeta.sampling.spacing import time_grid

__all__ = [
    "SampleRunConfig",
    "SamplingConfig",
    "SharpenConfig",
    "TraverseConfig",
    "decode_latents",
    "generalized_step",
    "run_sampler",
    "sample_latents",
    "sample_run",
    "start_mismatch",
    "time_grid",
]
