"""A 128x128 RGB image folder with a labels CSV through Snakemake end to end
(tests/configs/folder_smoke.yaml), its bundle used from Python at 128, and configs/folder_256.yaml
planned without any image."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import pytest
import torch
from PIL import Image

from folder_fixture import make_image_folder
from multibeta.workflow.experiments import expand_experiments
from smk import REPO, load_yaml, planned_jobs, snakemake

SMOKE = REPO / "tests" / "configs" / "folder_smoke.yaml"
GPU = REPO / "configs" / "folder_256.yaml"


def test_folder_256_config_plans_the_chain_without_images(tmp_path: Path) -> None:
    (config,) = expand_experiments(load_yaml(GPU)).values()
    assert config["data"]["image_size"] == 256 and len(config["vae"]["arch"]["channels"]) == 6
    jobs = planned_jobs(tmp_path, GPU)  # the CSV is absent: planned as a folder without factors
    assert {"prepare_data", "train_vae", "level_metrics", "generation_metrics", "report"} <= set(jobs)
    assert "train_factor_classifier" not in jobs and not (tmp_path / "results").exists()


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], Any]:
    workdir = tmp_path_factory.mktemp("folder")
    files = make_image_folder(workdir / "data", n=64, side=128, corrupt=1, extra_row=1)  # the smoke config's paths
    snakemake(workdir, "--cores", "2", "--resources", "gpu=1", configfile=SMOKE, timeout=900)
    return workdir, load_yaml(SMOKE), files


@pytest.mark.slow
def test_folder_dataset_metrics_and_report(folder_run: tuple[Path, dict[str, Any], Any]) -> None:
    workdir, config, files = folder_run
    (dataset,) = (workdir / "results" / "datasets").glob("folder-*/dataset.h5")
    with h5py.File(dataset, "r") as h5:
        assert h5["images"].shape == (63, 3, 128, 128)  # 64 images, one corrupt
        assert json.loads(h5.attrs["factor_names"]) == ["shape", "hue"]
        assert json.loads(h5.attrs["attribute_names"]) == ["big", "dark"]
        assert sorted(json.loads(h5.attrs["preprocessing"])["bad_files"]) == sorted(files.bad)
    log = next(dataset.parent.glob("prepare_data.log")).read_text()
    assert all(name in log for name in files.bad)  # the skip list, by name
    base = workdir / "results" / config["experiment"]
    doc = json.loads((base / "report" / "metrics.json").read_text())
    scored = [lvl for lvl in doc["levels"]["levels"] if lvl["t"] in config["metrics"]["levels"]]
    for key in ("mig", "dci_disentanglement", "factorvae_score", "sap", "tad", "recon_accuracy"):
        assert all(key in lvl for lvl in scored), key
    assert doc["generation"]["ddim_10"]["factor_classifier"]["fid"] >= 0
    report = (base / "report" / "report.md").read_text()
    assert "TAD" in report and "FactorVAE" in report and "## Edit directions" in report
    card = (base / "bundle" / "MODEL_CARD.md").read_text()
    assert "images of 128×128" in card


@pytest.mark.slow
def test_the_bundle_encodes_and_decodes_128_images(folder_run: tuple[Path, dict[str, Any], Any], tmp_path: Path) -> None:
    from multibeta.api import MultiBeta

    workdir, config, files = folder_run
    mb = MultiBeta.load(workdir / "results" / config["experiment"] / "bundle", device="cpu")
    assert mb.image_size == 128 and mb.bundle.manifest["image_size"] == 128
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (300, 200), (200, 30, 30)).save(photo)  # any size: resized to the model's
    x = mb.load_images([photo, next(iter(files.root.rglob("*.png")))])
    assert x.shape == (2, 3, 128, 128)
    z = mb.encode(x, 0.5)
    assert z.shape == (2, config["vae"]["latent_dim"]) and mb.decode(z, 0.0).shape == (2, 3, 128, 128)
    assert mb.sample(2, mb.with_settings(steps=2)).shape == (2, 3, 128, 128)
    with pytest.raises(ValueError, match=r"images must be \[N, 3, 128, 128\]"):
        mb.encode(torch.zeros(1, 3, 64, 64), 0.5)
