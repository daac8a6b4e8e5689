"""Stage 1: training, evaluating and plotting the multi-β VAE.

- :mod:`multibeta.vae.config`: ``VAEConfig`` (from the ``vae`` config section).
- :mod:`multibeta.vae.losses`: reconstruction, KL, loss weighting, LPIPS, patch-GAN.
- :mod:`multibeta.vae.trainer`: ``train_vae`` (resumable, deterministic on CPU).
- :mod:`multibeta.vae.evaluation`: KL per dimension and reconstruction error against β.
- :mod:`multibeta.vae.plots`: the Stage 1 diagnostic figures.

The network itself is :class:`multibeta.models.vae.MultiBetaVAE` (``load_vae``; its architecture is ``models.vae.VAEArch``).
"""

from multibeta.vae.config import VAEConfig
from multibeta.vae.trainer import NonFiniteLossError, TrainResult, train_vae

__all__ = ["VAEConfig", "NonFiniteLossError", "TrainResult", "train_vae"]
