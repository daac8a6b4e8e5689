"""Capture and restore of what a resumed run needs besides the weights: optimiser, grad scaler,
the trainer's random generator and the global RNGs."""

from __future__ import annotations

from typing import Any

import torch

from multibeta.utils.seeding import rng_state, set_rng_state


def optimisation_state(
    optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, generator: torch.Generator
) -> dict[str, Any]:
    """``optimizer``, ``scaler``, ``generator`` and global ``rng`` states, for a checkpoint."""
    return {
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "generator": generator.get_state(),
        "rng": rng_state(),
    }


def restore_optimisation_state(
    state: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    generator: torch.Generator,
) -> None:
    """Restore what :func:`optimisation_state` captured (the state must be loaded on the CPU)."""
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    generator.set_state(state["generator"])
    set_rng_state(state["rng"])
