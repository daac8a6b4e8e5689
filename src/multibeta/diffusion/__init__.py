"""Stage 2: latent diffusion with β as time (schedules, forward process, trainer, plots).

Import the submodules directly (``multibeta.diffusion.trainer`` etc.); this package
imports nothing itself so that ``multibeta.cache`` can use ``diffusion.schedules``
without an import cycle.
"""
