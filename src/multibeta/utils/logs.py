"""One logging setup for every rule: Python logs and uncaught tracebacks go to the rule's log."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from types import TracebackType


def setup_logging(log_path: str | Path | None = None, level: int = logging.INFO) -> None:
    """Send log records to stderr and, if given, to ``log_path``; log uncaught exceptions."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="a"))
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )

    def _hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        logging.getLogger("multibeta").error("uncaught exception", exc_info=(exc_type, exc, tb))

    sys.excepthook = _hook
