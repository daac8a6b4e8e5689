"""Time conditioning: a Fourier embedding of t in [0, 1] and FiLM modulation.

The multi-β VAE conditions every block of its encoder and decoder on t (β(t) is
log-linear in t, so t is an affine function of log β). :class:`FourierTimeEmbedding`
maps t to a feature vector; each block owns a :class:`FiLM` layer that turns that vector
into a per-channel scale and shift. FiLM layers start as the identity (zero-initialised),
so an untrained network ignores t and learns how much to use it.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class FourierTimeEmbedding(nn.Module):
    """Embed t in [0, 1] as ``[t, sin(π f_k t), cos(π f_k t)]`` followed by a 2-layer MLP.

    Frequencies ``f_k`` are geometrically spaced in ``[1, max_frequency]``; low frequencies
    keep the conditioning (and so dμ_t/dt, which the diffusion stage learns) smooth in t.

    Args:
        num_frequencies: number of frequencies K (the raw features have ``1 + 2K`` entries).
        max_frequency: highest frequency (``max_frequency / 2`` periods over [0, 1]).
        dim: output width.
    """

    def __init__(self, *, num_frequencies: int, max_frequency: float, dim: int) -> None:
        super().__init__()
        if num_frequencies < 1 or max_frequency < 1.0:
            raise ValueError("need num_frequencies >= 1 and max_frequency >= 1")
        freqs = torch.logspace(0.0, math.log10(max_frequency), num_frequencies, dtype=torch.float64)
        self.register_buffer("freqs", (math.pi * freqs).to(torch.float32))
        self.dim = dim
        self.mlp = nn.Sequential(
            nn.Linear(1 + 2 * num_frequencies, dim), nn.SiLU(), nn.Linear(dim, dim)
        )

    def features(self, t: torch.Tensor) -> torch.Tensor:
        """Raw Fourier features ``[N, 1 + 2K]`` of ``t`` ``[N]``."""
        t = t.reshape(-1, 1).to(self.freqs.dtype)
        angles = t * self.freqs
        return torch.cat([t, torch.sin(angles), torch.cos(angles)], dim=1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` ``[N]`` (or a scalar, giving N = 1) -> embedding ``[N, dim]``."""
        return self.mlp(self.features(t))


class FiLM(nn.Module):
    """Feature-wise affine modulation ``h * (1 + scale(e)) + shift(e)``.

    Works on feature maps ``[N, C, H, W]`` and vectors ``[N, C]``. The embedding ``e`` may
    have batch size N or 1 (one t for the whole batch, as in fixed-β training).

    Args:
        embed_dim: width of the time embedding.
        channels: C, the number of modulated channels.
    """

    def __init__(self, embed_dim: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(embed_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.proj(torch.nn.functional.silu(emb)).chunk(2, dim=1)
        if h.ndim == 4:
            scale, shift = scale[:, :, None, None], shift[:, :, None, None]
        return torch.addcmul(shift, h, 1.0 + scale)
