"""The latent cache: μ_t(x) of every image at K levels, σ_t, and the Δ = dμ_t/dt targets."""

from multibeta.cache.config import CacheConfig
from multibeta.cache.latent_cache import (
    CacheError,
    CacheStatistics,
    LatentCache,
    VAEMismatchError,
    build_cache,
    cache_latents,
)

__all__ = [
    "CacheConfig",
    "CacheError",
    "CacheStatistics",
    "LatentCache",
    "VAEMismatchError",
    "build_cache",
    "cache_latents",
]
