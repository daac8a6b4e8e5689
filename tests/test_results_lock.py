"""The lock on the results directory: two invocations from different working directories
cannot write the same experiment; a lock left by a killed run does not block the next one."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from multibeta.workflow.experiments import dataset_id, expand_experiments
from multibeta.workflow.results_lock import LOCK_NAME, ResultsLockedError, acquire, release
from smk import TINY, load_yaml, snakemake, write_config


def _hold(results: Path, pid: int, workdir: str, host: str | None = None) -> Path:
    results.mkdir(parents=True, exist_ok=True)
    path = results / LOCK_NAME
    path.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "workdir": workdir}))
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_acquire_and_release(tmp_path: Path) -> None:
    path = acquire(tmp_path / "results", workdir=tmp_path)
    assert json.loads(path.read_text())["pid"] == os.getpid()
    acquire(tmp_path / "results", workdir=tmp_path)  # the same working directory may retake it
    release(tmp_path / "results")
    assert not path.exists()


def test_a_live_run_from_another_workdir_is_refused(tmp_path: Path) -> None:
    lock = _hold(tmp_path / "results", os.getppid(), "/some/other/checkout")  # a live process
    with pytest.raises(ResultsLockedError) as err:
        acquire(tmp_path / "results", workdir=tmp_path)
    message = str(err.value)
    assert "/some/other/checkout" in message and str(tmp_path) in message and str(lock) in message
    release(tmp_path / "results")  # not ours (another workdir's record): left alone
    assert lock.exists()


def test_another_host_is_refused_and_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    _hold(tmp_path / "results", 1, "/elsewhere", host="another-node")
    with pytest.raises(ResultsLockedError, match="another-node"):
        acquire(tmp_path / "results", workdir=tmp_path)
    _hold(tmp_path / "results", _dead_pid(), "/elsewhere")
    path = acquire(tmp_path / "results", workdir=tmp_path)
    assert json.loads(path.read_text())["workdir"] == str(tmp_path.resolve())


def test_snakemake_stops_before_any_job_while_another_workdir_holds_the_results(tmp_path: Path) -> None:
    config = load_yaml(TINY)
    path = write_config(tmp_path / "tiny.yaml", config)
    results = tmp_path / "results"
    lock = _hold(results, os.getpid(), "/another/checkout")  # this test process: alive
    target = f"results/datasets/{dataset_id(expand_experiments(config)[config['experiment']]['data'])}/dataset.h5"
    proc = snakemake(tmp_path, target, "--cores", "1", configfile=path, check=False, timeout=300)
    assert proc.returncode != 0
    assert "is in use by another pipeline run" in proc.stdout + proc.stderr
    assert sorted(p.name for p in results.iterdir()) == [LOCK_NAME]
    lock.unlink()
    snakemake(tmp_path, target, "--cores", "1", configfile=path, timeout=300)
    assert (tmp_path / target).is_file() and not lock.exists()  # released after the run


def test_after_a_hard_kill_unlock_then_rerun_incomplete_resumes(tmp_path: Path) -> None:
    """docs/USAGE.md's command after kill -9: `snakemake --unlock`, then `make run`'s flags."""
    import signal
    import sys
    import time

    from smk import REPO, _no_slurm_probe_dir

    config = load_yaml(TINY)
    config["vae"].update(steps=300, checkpoint_every=20, log_every=20)
    path = write_config(tmp_path / "tiny.yaml", config)
    target = f"results/{config['experiment']}/vae/model.pt"
    partial = tmp_path / "results" / config["experiment"] / "vae" / ".model.partial.pt"
    cmd = [str(Path(sys.executable).with_name("snakemake")), target, "-s", str(REPO / "Snakefile"),
           "-d", str(tmp_path), "--cores", "1", "--configfile", str(path)]
    env = dict(os.environ, PATH=_no_slurm_probe_dir() + os.pathsep + os.environ["PATH"])
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not partial.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert partial.exists(), "train_vae wrote no resumable state before the deadline"
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: snakemake and its job
    proc.wait()
    again = snakemake(tmp_path, target, "--cores", "1", configfile=path, check=False, timeout=300)
    assert again.returncode != 0 and "unlock" in (again.stdout + again.stderr).lower()
    snakemake(tmp_path, "--unlock", configfile=path, timeout=300)
    snakemake(tmp_path, target, "--cores", "1", "--rerun-incomplete", configfile=path, timeout=600)
    assert (tmp_path / target).is_file() and not partial.exists()
    log = (tmp_path / "results" / config["experiment"] / "logs" / "train_vae.log").read_text()
    assert "resum" in log.lower()
