"""Model bundles: one trained experiment as a self-contained, versioned, verifiable folder.

A bundle holds what is needed to use a trained experiment without rerunning the pipeline: the
VAE's and the denoisers' weights, the latent space's σ_t table and start distribution, the
resolved config, the package versions, a model card, and a manifest with the SHA-256 of every
file. It holds no code: tensors are safetensors files with a JSON record (:mod:`.layout`), and
opening one never unpickles. :mod:`.export` writes one (rule ``export_bundle``), :mod:`.load`
opens and checks one, :mod:`.manifest` keeps its names inside the folder, :mod:`.convert`
turns a format-1 bundle (pickled checkpoints) into the current format.
"""
