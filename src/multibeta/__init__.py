"""multibeta: the Denoising Multi-beta VAE (arXiv 2507.06613) as a tested library.

Sub-packages, one concern each:

- ``multibeta.utils``     atomic I/O, hashing, device/precision selection, logging, checkpoints
- ``multibeta.data``      dataset generation/preparation and the shared HDF5 image dataset
- ``multibeta.models``    networks (β-conditioned VAE, latent denoiser, embeddings)
- ``multibeta.vae``       Stage 1: losses and the VAE trainer
- ``multibeta.cache``     the HDF5 latent cache and the latent path μ_t(x)
- ``multibeta.diffusion`` Stage 2: forward process, losses, trainer
- ``multibeta.sampling``  samplers, sharpening, traversals
- ``multibeta.metrics``   generation, reconstruction and disentanglement metrics
- ``multibeta.report``    plots and the report
- ``multibeta.workflow``  config loading/validation shared by Snakemake and the tests
"""

__version__ = "0.1.0"
