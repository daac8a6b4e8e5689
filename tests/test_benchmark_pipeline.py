"""Shapes3D and MPI3D through Snakemake: the GPU configs plan their chain without any file, the
Shapes3D smoke config runs end to end on a miniature 3dshapes.h5, the MPI3D smoke config's
prepare step runs on a miniature .npz (its factor sizes shrunk to the file's)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import pytest

from benchmark_fixture import MPI3D_SMALL_SIZES, make_mpi3d, make_shapes3d
from multibeta.workflow.experiments import expand_experiments
from smk import REPO, load_yaml, planned_jobs, snakemake

CONFIGS = REPO / "configs"
SMOKE = REPO / "tests" / "configs"
#: Rules a benchmark config with factors plans (one of each at least).
FACTOR_RULES = {"prepare_data", "train_factor_classifier", "train_vae", "cache_latents", "level_metrics",
                "edit_directions", "generation_metrics", "report"}


@pytest.mark.parametrize("name", ["shapes3d", "mpi3d"])
def test_gpu_config_plans_the_chain_without_data(tmp_path: Path, name: str) -> None:
    (config,) = expand_experiments(load_yaml(CONFIGS / f"{name}.yaml")).values()
    assert config["data"]["name"] == name and config["data"]["size"] is None
    assert config["metrics"]["generation"]["feature_spaces"] == ["factor_classifier"]
    jobs = planned_jobs(tmp_path, CONFIGS / f"{name}.yaml")
    assert FACTOR_RULES <= set(jobs) and jobs["train_vae_baseline"] == 4, jobs
    assert not (tmp_path / "results").exists()


def test_mpi3d_smoke_config_plans_and_prepares_on_a_miniature_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from multibeta.data import mpi3d
    from multibeta.data.prepare import prepare_dataset

    assert FACTOR_RULES <= set(planned_jobs(tmp_path, SMOKE / "mpi3d_smoke.yaml"))
    (config,) = expand_experiments(load_yaml(SMOKE / "mpi3d_smoke.yaml")).values()
    monkeypatch.setattr(mpi3d, "FACTOR_SIZES", MPI3D_SMALL_SIZES)
    data = {**config["data"], "mpi3d": {"path": str(make_mpi3d(tmp_path / "data" / "mpi3d_toy.npz"))}}
    summary = prepare_dataset(data, tmp_path / "dataset.h5")
    assert summary["n"] == config["data"]["size"] and summary["split_counts"]["val"] == 80


@pytest.fixture(scope="module")
def shapes3d_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("shapes3d")
    make_shapes3d(workdir / "data" / "3dshapes.h5", n=400)  # the path the smoke config names
    config = load_yaml(SMOKE / "shapes3d_smoke.yaml")
    report = f"results/{config['experiment']}/report/report.md"
    # the report only (no bundle: tests/test_folder_pipeline.py exports and loads one)
    snakemake(workdir, report, "--cores", "2", "--resources", "gpu=1", configfile=SMOKE / "shapes3d_smoke.yaml",
              timeout=900)
    return workdir, config


@pytest.mark.slow
def test_shapes3d_report_shows_the_per_factor_metrics(shapes3d_run: tuple[Path, dict[str, Any]]) -> None:
    workdir, config = shapes3d_run
    base = workdir / "results" / config["experiment"]
    (dataset,) = (workdir / "results" / "datasets").glob("shapes3d-*/dataset.h5")
    with h5py.File(dataset, "r") as h5:
        assert h5["images"].shape == (400, 3, 64, 64) and h5["factor_classes"].shape == (400, 6)
    doc = json.loads((base / "report" / "metrics.json").read_text())
    scored = [lvl for lvl in doc["levels"]["levels"] if lvl["t"] in config["metrics"]["levels"]]
    for key in ("mig", "dci_disentanglement", "factorvae_score", "sap", "recon_accuracy.shape"):
        assert all(key in lvl for lvl in scored), key
    assert "recon_iou_to_input" not in scored[0]  # a dSprites ruler
    run = doc["generation"]["ddim_10"]
    assert run["factor_classifier"]["fid"] >= 0 and "render" not in run
    assert "render consistency does not apply to shapes3d" in run["not_applicable"]["render"]
    sharpen = json.loads((base / "metrics" / "sharpen.json").read_text())
    assert "does not apply" in sharpen["not_applicable"]["render"] and "iou_to_input" not in sharpen["levels"][0]["decoded"]
    assert set(doc["edits"]["factors"]) == {"floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation"}
    report = (base / "report" / "report.md").read_text()
    assert "| MIG |" in report and "FactorVAE" in report and "Checks of the method" not in report  # dSprites thresholds
    assert "not computed (render consistency does not apply to shapes3d" in report
