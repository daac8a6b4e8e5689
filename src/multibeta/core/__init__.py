"""The ground floor of the package: maths and types every stage shares.

Nothing here imports another ``multibeta`` package except :mod:`multibeta.utils`:

- :mod:`~multibeta.core.config`: ``ConfigError`` and the one generic builder of typed config
  sections (``from_section``), driven by the dataclasses' type hints.
- :mod:`~multibeta.core.schedules`: the tabulated σ_t (``SigmaTable``), the cosine ᾱ(t) of the
  latent-DDPM baseline and the warm-up + cosine learning-rate factor.
- :mod:`~multibeta.core.levels`: the level grid t_k and interpolation between levels.
"""
