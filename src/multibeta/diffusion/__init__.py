"""Stage 2: latent diffusion with β as time (forward process, trainer, plots).

Import the submodules directly (``multibeta.diffusion.trainer`` etc.); the schedules it shares
with the cache and the samplers live in :mod:`multibeta.core.schedules`.
"""
