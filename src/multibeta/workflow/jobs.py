"""What every rule script does first: log into the rule's log file and pick the runtime.

The ``compute`` section is read from the workflow config, not from params: it decides
where a job runs, never what it computes, so changing it must not trigger reruns.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from multibeta.utils.device import Runtime, select_runtime
from multibeta.utils.logs import setup_logging
from multibeta.utils.versions import collect_versions
from multibeta.workflow.config import section_defaults

logger = logging.getLogger(__name__)


def compute_settings(smk: Any) -> dict[str, Any]:
    """The validated ``compute`` section of the running workflow."""
    return section_defaults("compute", dict(smk.config.get("compute", {}) or {}))


def start_job(smk: Any, *, needs_runtime: bool = True) -> Runtime | None:
    """Set up logging to ``smk.log[0]``, log versions, and select device/precision/threads
    (``needs_runtime=False``: CPU-only work, torch gets the rule's threads and no device)."""
    setup_logging(smk.log[0] if smk.log else None)
    logger.info("rule %s, wildcards %s", smk.rule, dict(smk.wildcards))
    logger.info("versions: %s", collect_versions())
    if not needs_runtime:
        if smk.threads and smk.threads > 0:
            torch.set_num_threads(int(smk.threads))
        return None
    compute = compute_settings(smk)
    return select_runtime(compute["device"], compute["precision"], threads=smk.threads)
