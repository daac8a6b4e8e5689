"""Exponential moving average (EMA) of a model's weights, as used for sampling and evaluation."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """Exponential moving average of a model's floating-point state (parameters and buffers).

    After each optimiser step, ``shadow ← shadow + (1 − d)·(θ − shadow)`` (one
    ``torch._foreach_lerp_``) with the decay warmed up as ``d = min(decay, (1 + step) / (10 + step))``.
    Buffers that training does not change (normalisation constants) stay exactly equal to the
    model's. Integer buffers are not averaged and not held.

    Args:
        model: the model being trained; its current state is the starting average.
        decay: the decay ``d`` once warmed up, in [0, 1) (0: the average is the model).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"the EMA decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.shadow: dict[str, torch.Tensor] = {
            k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()
        }

    def decay_at(self, step: int) -> float:
        """The decay used by :meth:`update` at ``step``: ``min(decay, (1 + step) / (10 + step))``."""
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Move the average towards ``model``'s current state.

        Args:
            model: the trained model (same architecture and device as at construction).
            step: the step count of the warm-up (see :meth:`decay_at`); each trainer passes
                its own count (the VAE the 0-based index of the step just taken, the denoiser
                the number of steps taken), which keeps their trajectories unchanged.
        """
        state = model.state_dict()
        keys = list(self.shadow)
        torch._foreach_lerp_([self.shadow[k] for k in keys], [state[k] for k in keys],
                             1.0 - self.decay_at(step))

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Copies of the averaged tensors, by state-dict key."""
        return {k: v.clone() for k, v in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the average from :meth:`state_dict` (copied into place)."""
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise KeyError(f"EMA state lacks {missing}")
        for k, v in self.shadow.items():
            v.copy_(state[k])

    def copy_to(self, model: nn.Module) -> nn.Module:
        """Load the averaged state into ``model`` (in place) and return it."""
        unexpected = model.load_state_dict(self.shadow, strict=False).unexpected_keys
        if unexpected:
            raise KeyError(f"the EMA holds {unexpected}, which the model has not")
        return model
