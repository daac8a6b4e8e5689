"""The SLURM profile end to end: the tiny pipeline run through a real scheduler
(`snakemake --profile profiles/slurm`) produces the same files and the same metrics as a local
run (`snakemake --cores 2`).

Needs a reachable SLURM cluster: `bash .ci/slurm_up.sh` (as root) starts a single-node one;
.ci/run does so in CI. Without a scheduler the test is skipped with that hint, unless
MULTIBETA_SLURM=1 asks for it, in which case it fails. See docs/CLUSTER.md.

Environment knobs:
  MULTIBETA_SLURM=1          fail (instead of skip) when no scheduler answers
  MULTIBETA_SLURM_TIMEOUT    seconds allowed for each of the two pipeline runs (default 1200)
  MULTIBETA_SLURM_TMPDIR     folder for the test's configs and results; on a real cluster it must
                             be on a filesystem the compute nodes share (default: pytest's tmp)
  MULTIBETA_SLURM_PARTITION  partition to submit to when the profile's is not on this cluster
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from smk import REPO, TINY, load_yaml, write_config

PROFILE = REPO / "profiles" / "slurm"
RUN_TIMEOUT = int(os.environ.get("MULTIBETA_SLURM_TIMEOUT", "1200"))
EXPERIMENT = "slurm_check"
ENABLE_HINT = "run `bash .ci/slurm_up.sh` as root, or set MULTIBETA_SLURM=1 in CI"
# Metric keys whose values legitimately differ between two runs (timings and memory use from
# the benchmarks, machines, paths, versions, dates). A key containing any of these is skipped
# together with everything below it.
IGNORED_KEY_PARTS = (
    "time", "timing", "seconds", "per_s", "elapsed", "rss", "host", "path", "versions", "date"
)
USABLE_NODE_STATES = {"idle", "mixed", "allocated", "completing"}


# --- helpers ------------------------------------------------------------------------------------


def numeric_leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """(dotted key path, number) for every numeric leaf of a JSON tree, skipping ignored keys."""
    if isinstance(node, dict):
        for key, value in node.items():
            if any(part in str(key).lower() for part in IGNORED_KEY_PARTS):
                continue
            yield from numeric_leaves(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from numeric_leaves(value, f"{prefix}[{i}]")
    elif isinstance(node, (int, float)):  # bool included: flags must agree too
        yield prefix, node


def metric_differences(a: Any, b: Any) -> list[str]:
    """Human-readable differences between the numeric leaves of two metrics trees."""
    left, right = dict(numeric_leaves(a)), dict(numeric_leaves(b))
    problems = [f"{k}: only in the local run" for k in sorted(left.keys() - right.keys())]
    problems += [f"{k}: only in the cluster run" for k in sorted(right.keys() - left.keys())]
    for key in sorted(left.keys() & right.keys()):
        x, y = left[key], right[key]
        both_nan = isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)
        if x != y and not both_nan:
            problems.append(f"{key}: local {x!r} != cluster {y!r}")
    return problems


def _sinfo(*fields: str) -> list[str]:
    proc = subprocess.run(
        ["sinfo", "-h", *fields], capture_output=True, text=True, timeout=30, check=True
    )
    return [line.strip() for line in proc.stdout.splitlines() if line.strip()]


def require_scheduler() -> None:
    """Skip (or fail, with MULTIBETA_SLURM=1) unless sinfo answers and a node can take jobs."""
    problem = None
    if shutil.which("sinfo") is None:
        problem = "no SLURM scheduler: `sinfo` is not installed"
    else:
        try:
            states = {s.rstrip("*~#$@^-+!%") for s in _sinfo("-o", "%T")}
        except (subprocess.SubprocessError, OSError) as exc:
            problem = f"no SLURM scheduler answers (`sinfo` failed: {exc})"
        else:
            if not states & USABLE_NODE_STATES:
                problem = f"no SLURM node can take jobs (node states: {sorted(states) or 'none'})"
    if problem is None:
        return
    message = f"{problem}; to run this test, {ENABLE_HINT}"
    if os.environ.get("MULTIBETA_SLURM") == "1":
        pytest.fail(f"MULTIBETA_SLURM=1 but {message}")
    pytest.skip(message)


def _base_mem_mb(value: Any) -> int:
    """The MB a profile mem_mb entry asks for on the first attempt ("8000 * attempt" -> 8000)."""
    match = re.match(r"\s*(\d+)", str(value))
    assert match, f"cannot read mem_mb {value!r} in {PROFILE / 'config.yaml'}"
    return int(match.group(1))


def profile_for_this_cluster(folder: Path) -> Path:
    """The repository's SLURM profile, or a copy adapted to this cluster when it must be.

    Adapted only where the shipped profile cannot run here at all: a partition that does not
    exist (replaced by MULTIBETA_SLURM_PARTITION or the cluster's default partition) or memory
    requests larger than the node has (capped). Everything else is the shipped profile.
    """
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    changed = False

    partitions = _sinfo("-o", "%P")
    default = next((p.rstrip("*") for p in partitions if p.endswith("*")), None)
    names = {p.rstrip("*") for p in partitions}
    override = os.environ.get("MULTIBETA_SLURM_PARTITION")
    defaults = profile.setdefault("default-resources", {})
    every_resources = [defaults, *profile.get("set-resources", {}).values()]
    for resources in every_resources:
        current = resources.get("slurm_partition")
        target = override or (current if current in names else default)
        if current is not None and target and target != current:
            resources["slurm_partition"] = target
            changed = True

    node_mem = min(int(m.rstrip("+")) for m in _sinfo("-o", "%m"))
    for resources in every_resources:
        if "mem_mb" in resources and _base_mem_mb(resources["mem_mb"]) > node_mem:
            resources["mem_mb"] = node_mem
            changed = True

    if not changed:
        return PROFILE
    adapted = folder / "profile"
    adapted.mkdir(parents=True, exist_ok=True)
    (adapted / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return adapted


def run_snakemake(args: list[str], log: Path, timeout: int) -> None:
    """Run snakemake from the repository root, output to `log`; fail with its tail on error.

    On timeout Snakemake is interrupted (SIGINT), which makes it cancel its SLURM jobs; jobs it
    could not cancel are cancelled by their SLURM run ID (the job name) before failing.
    """
    cmd = [sys.executable, "-m", "snakemake", *args]
    env = dict(os.environ, PYTHONHASHSEED="0")
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            for run_id in set(re.findall(r"SLURM run ID: (\S+)", log.read_text())):
                subprocess.run(["scancel", "--name", run_id], timeout=30, check=False)
            pytest.fail(f"timed out after {timeout}s: {' '.join(cmd)}\n{_tail(log)}")
    if returncode != 0:
        pytest.fail(f"snakemake failed ({returncode}): {' '.join(cmd)}\n{_tail(log)}")


def _tail(log: Path, chars: int = 8000) -> str:
    return f"--- last lines of {log} ---\n{log.read_text(errors='replace')[-chars:]}"


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def assert_nothing_left_to_do(configfile: Path, log: Path) -> None:
    """A dry run finds every output present and up to date."""
    run_snakemake(["-n", "--configfile", str(configfile)], log, timeout=300)
    text = log.read_text()
    assert "Nothing to be done" in text, f"outputs missing or outdated after the run\n{_tail(log)}"


# --- tests --------------------------------------------------------------------------------------


def test_numeric_leaves_skip_timings_hosts_paths_and_versions() -> None:
    metrics = {
        "fid": 12.5,
        "mig": {"score": 0.25, "elapsed_s": 3.0},
        "timings": {"train_vae": {"max_rss_mb": 900.0, "seconds": 8.2}},
        "sampling": [{"steps": 10, "time_per_image": 0.1, "images_per_s": 50.0}],
        "hostname": "node1",
        "checkpoint_path": "/x",
        "versions": {"torch": 2},
        "created_date": 20250101,
        "ok": True,
        "name": "ddim",
    }
    assert dict(numeric_leaves(metrics)) == {
        "fid": 12.5, "mig.score": 0.25, "sampling[0].steps": 10, "ok": True,
    }
    assert metric_differences(metrics, {**metrics, "wall_seconds": 9}) == []
    assert metric_differences({"a": float("nan")}, {"a": float("nan")}) == []
    assert metric_differences({"a": 1.0, "b": 2}, {"a": 1.5, "c": 2}) == [
        "b: only in the local run", "c: only in the cluster run", "a: local 1.0 != cluster 1.5",
    ]


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.timeout(2 * RUN_TIMEOUT + 900)
def test_cluster_run_matches_local_run(tmp_path: Path) -> None:
    require_scheduler()
    base = Path(os.environ.get("MULTIBETA_SLURM_TMPDIR") or tmp_path)
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="multibeta-slurm-", dir=base))

    configs = {}
    for mode in ("local", "cluster"):
        config = load_yaml(TINY)
        config["experiment"] = EXPERIMENT
        config["results_dir"] = str(work / f"results_{mode}")
        compute = config.setdefault("compute", {})
        # A node without GPUs (GRES) refuses --gpus=1. One thread per job in both runs, so
        # floating-point reductions are the same and the numbers can be compared exactly.
        compute.update(gpus_per_job=0, device="cpu", cpu_threads=1, gpu_threads=1)
        configs[mode] = write_config(work / f"{mode}.yaml", config)

    run_snakemake(
        ["--cores", "2", "--configfile", str(configs["local"])], work / "local.log", RUN_TIMEOUT
    )
    profile = profile_for_this_cluster(work)
    run_snakemake(
        # No retries: a failure should show at once, not after a second identical attempt.
        ["--profile", str(profile), "--retries", "0", "--configfile", str(configs["cluster"])],
        work / "cluster.log",
        RUN_TIMEOUT,
    )

    local_root, cluster_root = work / "results_local", work / "results_cluster"
    for mode in ("local", "cluster"):
        assert_nothing_left_to_do(configs[mode], work / f"{mode}_dryrun.log")
    local_files, cluster_files = files_under(local_root), files_under(cluster_root)
    assert local_files == cluster_files, (
        f"only local: {sorted(local_files - cluster_files)}; "
        f"only cluster: {sorted(cluster_files - local_files)}"
    )

    reports = sorted(f for f in local_files if re.fullmatch(r"[^/]+/report/metrics\.json", f))
    assert f"{EXPERIMENT}/report/metrics.json" in reports, f"no report among {sorted(local_files)}"
    for rel in reports:
        local = json.loads((local_root / rel).read_text())
        cluster = json.loads((cluster_root / rel).read_text())
        assert any(True for _ in numeric_leaves(local)), f"{rel} has no numbers to compare"
        differences = metric_differences(local, cluster)
        assert not differences, f"{rel} differs between local and cluster runs:\n" + "\n".join(
            differences
        )
