"""Sampling: the reverse samplers, sharpening, traversals and image grids.

- :mod:`multibeta.sampling.settings`: :class:`~multibeta.sampling.settings.SamplerSettings`,
  the sampler's settings (variant, steps, eta, solver, spacing, seed, batch_size), one type
  for every place that runs the reverse process.
- :mod:`multibeta.sampling.config`: typed views of the ``sampling`` config section (a run
  entry, ``sharpen`` and ``traverse`` extend the sampler's settings with their own keys).
- :mod:`multibeta.sampling.samplers`: the generalized (η) step, Heun, :func:`sample_latents`,
  :func:`decode_latents`, :func:`sample_run` (one ``sampling.runs`` entry, timed).
- :mod:`multibeta.sampling.spacing`: time grids (uniform, quadratic).
- :mod:`multibeta.sampling.edit`: :func:`sharpen` and :func:`traverse`.
- :mod:`multibeta.sampling.grids`: labelled PNG grids.
- :mod:`multibeta.sampling.store`: the samples file of one run.

Submodules are imported on use: ``settings`` and ``config`` load no torch, so the workflow
checks a config with them before any job.
"""
