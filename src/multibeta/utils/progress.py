"""Progress lines for long jobs: step, loss terms, speed and time left, in the job's log.

A job's log (``results/<exp>/logs/<rule>.log``) and a console without a terminal (a cluster,
``nohup``) show no tqdm bar, so long loops also call :meth:`ProgressLog.update`, which writes at
most one INFO line every ``every_s`` seconds (and always at the last step)::

    train_vae: step 1800/8000 (22%), loss 125.1, rec 93.81, 12.1 steps/s, 8 min 32 s left
"""

from __future__ import annotations

import logging
import time


def format_duration(seconds: float) -> str:
    """``1 h 02 min``, ``8 min 32 s`` or ``41 s``."""
    seconds = max(0.0, float(seconds))
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    if seconds >= 60:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{seconds:.0f} s"


class ProgressLog:
    """Rate-limited progress lines of a loop from ``start`` to ``total`` steps.

    Args:
        name: what runs (the line's prefix).
        total: last step.
        logger: where the lines go (INFO).
        start: the step the loop starts from (a resumed run), for the speed.
        every_s: seconds between lines.
    """

    def __init__(self, name: str, total: int, logger: logging.Logger, *, start: int = 0,
                 every_s: float = 30.0) -> None:
        self.name, self.total, self.logger = name, int(total), logger
        self.start, self.every_s = int(start), float(every_s)
        self.t0 = time.perf_counter()
        self.last = self.t0

    def update(self, step: int, **values: float) -> None:
        """Log a line if ``every_s`` has passed since the last one, or at the last step."""
        now = time.perf_counter()
        if now - self.last < self.every_s and step < self.total:
            return
        self.last = now
        rate = (step - self.start) / max(now - self.t0, 1e-9)
        left = (self.total - step) / rate if rate > 0 else float("nan")
        terms = "".join(f", {k} {v:.4g}" for k, v in values.items())
        self.logger.info("%s: step %d/%d (%.0f%%)%s, %.1f steps/s, %s left", self.name, step, self.total,
                         100.0 * step / max(self.total, 1), terms, rate,
                         format_duration(left) if left == left else "?")
