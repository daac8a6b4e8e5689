"""Model bundles: one trained experiment as a self-contained, versioned, verifiable folder.

A bundle holds what is needed to use a trained experiment without rerunning the pipeline: the
VAE checkpoint, the denoiser checkpoints, the latent space's σ_t table and start distribution,
the resolved config, the package versions, a model card, and a manifest with the SHA-256 of
every file. :mod:`.export` writes one (rule ``export_bundle``), :mod:`.load` opens and checks one.
"""
