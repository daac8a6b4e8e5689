"""A lock on the results directory itself, held while a pipeline invocation runs jobs.

Snakemake locks per working directory, so two checkouts (or two working directories) whose
configs point at the same absolute ``results_dir`` would both write the same experiment. The
Snakefile takes this lock in ``onstart`` (main process, real runs only) and releases it in
``onsuccess``/``onerror``. A lock left by a killed run is taken over when its process is gone
(same host) or when it was taken from the same working directory (Snakemake's own lock, and
``--unlock``, already guard that case).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

LOCK_NAME = ".multibeta.lock"


class ResultsLockedError(RuntimeError):
    """Another invocation, from another working directory, is writing this results directory."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _holder(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def acquire(results_dir: str | os.PathLike, workdir: str | os.PathLike | None = None) -> Path:
    """Take the lock of ``results_dir`` for this process; return the lock file's path.

    Raises:
        ResultsLockedError: a live process on this host, or any process on another host,
            started from another working directory holds it. The message names both
            directories and the process, and how to clear a lock that is known to be stale.
    """
    root = Path(results_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(), "workdir": str(Path(workdir or os.getcwd()).resolve())}
    holder = _holder(path)
    if holder and holder.get("workdir") != me["workdir"]:
        same_host = holder.get("host") == me["host"]
        if not same_host or _alive(int(holder.get("pid", -1))):
            raise ResultsLockedError(
                f"results directory {root} is in use by another pipeline run (pid {holder.get('pid')} "
                f"on {holder.get('host')}, started in {holder.get('workdir')}); this run was started in "
                f"{me['workdir']}. Wait for it to finish, or give this config its own results_dir. "
                f"If no such run exists any more, delete {path}."
            )
    tmp = path.with_name(f"{LOCK_NAME}.{me['pid']}.tmp")
    tmp.write_text(json.dumps(me))
    os.replace(tmp, path)
    return path


def release(results_dir: str | os.PathLike) -> None:
    """Drop the lock if this process holds it (a no-op otherwise)."""
    path = Path(results_dir).resolve() / LOCK_NAME
    holder = _holder(path)
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)
