"""The error both trainers raise when a loss term (or the gradient) becomes NaN or inf."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from multibeta.training.resume import stale_path


def _value(v: Any) -> str:
    """A config value as it would be written in the YAML config."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


@dataclass(frozen=True)
class Cause:
    """A likely cause of a non-finite loss.

    Args:
        what: the cause in words (``the learning rate``).
        settings: the config keys behind it with their values in this run (``{"vae.lr": 1e-3}``).
        fix: what to change (``lower it or set vae.grad_clip``).
    """

    what: str
    settings: dict[str, Any] = field(default_factory=dict)
    fix: str = ""

    def __str__(self) -> str:
        inside = ", ".join(f"{k} = {_value(v)}" for k, v in self.settings.items())
        if self.fix:
            inside = f"{inside}; {self.fix}" if inside else self.fix
        return f"{self.what} ({inside})" if inside else self.what


class NonFiniteLossError(FloatingPointError):
    """A loss term or the gradient became NaN/inf; the message says where, why and what to change.

    Training is deterministic, so the message says that a rerun with the same config stops at
    the same step, lists the likely causes with the config keys to change, and names the last
    resumable state only when it exists on disk.

    Args:
        where: the job (``train_vae``, ``train_diffusion[multibeta]``).
        step: the first training step (1-based) whose loss was not finite.
        terms: the term(s) that went non-finite, in order.
        causes: the likely causes, most likely first.
        values: the terms' values at ``step`` when known.
        found_at: the step at which the trainer noticed it, when later than ``step`` (the
            denoiser checks once per log window).
        state_path: the trainer's resumable state, and ``saved_step`` the step it holds; named
            in the message only when the file exists and a step was saved in this run.
    """

    def __init__(
        self,
        where: str,
        *,
        step: int,
        terms: Sequence[str],
        causes: Sequence[Cause | str],
        values: dict[str, float] | None = None,
        found_at: int | None = None,
        state_path: str | os.PathLike | None = None,
        saved_step: int = 0,
    ) -> None:
        self.where, self.step, self.terms = where, int(step), list(terms)
        self.causes, self.values, self.found_at = list(causes), dict(values or {}), found_at
        self.state_path = Path(state_path) if state_path is not None else None
        self.saved_step = int(saved_step)
        super().__init__(self._message())

    def __reduce__(self) -> tuple[Any, ...]:  # keyword-only arguments: pickle through a helper
        return (_rebuild, (str(self), self.__dict__.copy()))

    @property
    def checkpoint(self) -> Path | None:
        """The last resumable state, when one was written in this run and still exists."""
        if self.state_path is not None and self.saved_step and self.state_path.exists():
            return self.state_path
        return None

    def _message(self) -> str:
        found = f" (found at step {self.found_at})" if self.found_at not in (None, self.step) else ""
        values = ""
        if self.values:
            values = " (values: " + ", ".join(f"{k}={v:.4g}" for k, v in self.values.items()) + ")"
        path = self.checkpoint
        if path is not None:
            last = (f"{path} holds the state of step {self.saved_step}, trained with this config; "
                    f"a rerun with a changed config keeps it as {stale_path(path).name} and trains "
                    "from step 0")
        else:
            last = "none was written before the failure"
        return (
            f"{self.where}: non-finite {', '.join(self.terms)} first at training step {self.step}"
            f"{found}{values}. Training is deterministic, so a rerun with this config stops here "
            "again: the config must change. Likely causes: "
            + "; ".join(str(c) for c in self.causes) + f". Checkpoint: {last}."
        )


def _rebuild(message: str, attrs: dict[str, Any]) -> NonFiniteLossError:
    err = NonFiniteLossError.__new__(NonFiniteLossError)
    FloatingPointError.__init__(err, message)
    err.__dict__.update(attrs)
    return err
