"""Helpers for tests that drive the real Snakemake workflow in a temporary folder."""

from __future__ import annotations

import collections
import os
import re
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
TINY = REPO / "tests" / "configs" / "tiny.yaml"


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def load_yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _no_slurm_probe_dir() -> str:
    """A folder whose ``scontrol`` fails at once, to put first on PATH.

    Importing Snakemake loads the SLURM executor plugin, which runs ``scontrol show config`` and
    waits up to 10 s for an answer; on a machine with the SLURM client but no reachable
    controller every snakemake call would spend that long probing. The local runs and dry runs
    here never use SLURM (tests/test_slurm.py calls the real tools itself).
    """
    folder = Path(tempfile.gettempdir()) / "multibeta-tests-no-slurm"
    stub = folder / "scontrol"
    if not stub.exists():  # written atomically: parallel test workers may race here
        folder.mkdir(exist_ok=True)
        tmp = folder / f"scontrol.{os.getpid()}.tmp"
        tmp.write_text("#!/bin/sh\nexit 1\n")
        tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        os.replace(tmp, stub)
    return str(folder)


def snakemake(
    workdir: Path, *args: str, configfile: Path | None = None, timeout: int = 900, check: bool = True
) -> subprocess.CompletedProcess:
    """Run ``snakemake -s <repo>/Snakefile -d <workdir> ARGS [--configfile F]``."""
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args]
    if configfile is not None:
        cmd += ["--configfile", str(configfile)]
    env = dict(os.environ, PYTHONHASHSEED="0")
    env["PATH"] = _no_slurm_probe_dir() + os.pathsep + env.get("PATH", "")
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({proc.returncode}): {' '.join(cmd)}\n"
            f"--- stdout ---\n{proc.stdout[-5000:]}\n--- stderr ---\n{proc.stderr[-8000:]}"
        )
    return proc


_JOB_ROW = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s+(\d+)\s*$")


def planned_jobs(workdir: Path, configfile: Path) -> collections.Counter:
    """Rule name -> number of jobs a dry run would execute (``total`` excluded)."""
    proc = snakemake(workdir, "-n", "--quiet", "rules", configfile=configfile, timeout=300)
    text = proc.stdout + proc.stderr
    counts: collections.Counter = collections.Counter()
    if "Nothing to be done" in text:
        return counts
    in_stats = False
    for line in text.splitlines():
        if line.startswith("Job stats"):
            in_stats = True
            continue
        if in_stats:
            match = _JOB_ROW.match(line.strip())
            if match and match.group(1) != "total":
                counts[match.group(1)] = int(match.group(2))
            elif match is None and counts and not line.strip().startswith("-"):
                break
    return counts
