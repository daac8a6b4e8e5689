"""CelebA through Snakemake: the paper config's DAG, and the smoke config end to end.

- Fast: ``configs/celeba64.yaml`` and ``configs/celeba64_smoke.yaml`` validate, and a dry run
  of the paper config plans the whole chain without any CelebA file (rule prepare_data has
  no inputs, so nothing is read at parse time).
- Slow: ``configs/celeba64_smoke.yaml`` on a generated CelebA-format folder
  (``tests/celeba_fixture.py``, 200 images) with randomly initialised AlexNet and Inception
  weights files (the real ones cannot be downloaded here), through every rule to the report.
  The L1 + LPIPS + patch-GAN VAE, TAD and LPIPS per level, and Inception FID/KID of every
  sampling run are checked. The random weights prove the wiring (files found through the
  config keys, layouts loaded), never a metric value.
"""

from __future__ import annotations

import copy
import csv
import json
import math
from pathlib import Path
from typing import Any

import h5py
import pytest
import torch

from celeba_fixture import ATTRIBUTE_NAMES, make_fake_celeba
from multibeta.workflow.experiments import expand_experiments
from smk import REPO, load_yaml, planned_jobs, snakemake, write_config

PAPER = REPO / "configs" / "celeba64.yaml"
SMOKE = REPO / "configs" / "celeba64_smoke.yaml"
N_IMAGES = 200

#: Rules the paper config must plan, with their job counts (5 sampling runs, 3 variants,
#: 2 fixed-beta baselines, the Inception reference).
PAPER_JOBS = {
    "prepare_data": 1, "train_vae": 1, "vae_plots": 1, "train_vae_baseline": 2, "cache_latents": 1,
    "train_diffusion": 3, "sample": 5, "sharpen": 1, "traverse": 1, "reference_features": 1,
    "generation_metrics": 5, "level_metrics": 1, "baseline_metrics": 2, "report": 1, "export_bundle": 1, "all": 1,
}


# --- configs and the paper DAG (fast) -------------------------------------------------------


@pytest.mark.parametrize("path", [PAPER, SMOKE], ids=["celeba64", "celeba64_smoke"])
def test_config_validates(path: Path) -> None:
    (config,) = expand_experiments(load_yaml(path)).values()
    assert config["data"]["name"] == "celeba"
    assert config["vae"]["reconstruction"] == "l1_lpips"
    assert config["vae"]["gan"]["weight"] > 0 and config["vae"]["lpips"]["weight"] > 0
    assert config["metrics"]["generation"]["feature_spaces"] == ["inception"]
    assert {r["variant"] for r in config["sampling"]["runs"]} == {"multibeta", "noise_only", "standard_ldm"}


def test_paper_config_settings() -> None:
    (config,) = expand_experiments(load_yaml(PAPER)).values()
    data, metrics = config["data"], config["metrics"]
    assert data["size"] is None and data["celeba"]["crop"] == "infodiffusion"
    assert data["celeba"]["splits"] == ["train", "val", "test"]  # TAD: first 10,000 rows = first train images
    assert metrics["tad"]["n_images"] == 10000 and metrics["generation"]["n_reference"] >= 10000
    assert config["compute"]["device"] == "auto"
    runs = {r["name"]: r for r in config["sampling"]["runs"]}
    ancestral = runs["ancestral_1000"]
    assert (ancestral["steps"], ancestral["eta"], ancestral["n_samples"]) == (1000, 1.0, 10000)
    assert (runs["euler_50"]["steps"], runs["euler_50"]["eta"]) == (50, 0.0)
    assert (runs["heun_25"]["steps"], runs["heun_25"]["solver"]) == (25, "heun")
    assert metrics["generation"]["max_samples"] is None or metrics["generation"]["max_samples"] >= 10000
    weights = [metrics["inception_weights"], metrics["lpips_weights"], config["vae"]["lpips"]["weights_path"]]
    assert all(w.startswith(metrics["weights_dir"] + "/") for w in weights), weights


def test_paper_config_dry_run_plans_the_chain_without_data(tmp_path: Path) -> None:
    jobs = planned_jobs(tmp_path, PAPER)
    assert dict(jobs) == PAPER_JOBS
    assert not (tmp_path / "results").exists() and not (tmp_path / "data").exists()


def test_smoke_config_runs_the_same_chain(tmp_path: Path) -> None:
    smoke, paper = load_yaml(SMOKE), load_yaml(PAPER)
    paper_runs = {r["name"]: r for r in paper["sampling"]["runs"]}
    for run in smoke["sampling"]["runs"]:  # a subset of the paper's runs, same variant and sampler
        assert (run["variant"], run["eta"]) == (paper_runs[run["name"]]["variant"], paper_runs[run["name"]]["eta"])
    assert set(planned_jobs(tmp_path, SMOKE)) == set(PAPER_JOBS)


# --- the smoke config end to end (slow) -----------------------------------------------------


def _random_alexnet(path: Path) -> None:
    """torchvision's AlexNet state dict (the layout of alexnet-owt-7be5be79.pth), random weights."""
    import torchvision

    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)


def _random_inception(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch-fidelity's Inception-v3 state dict (weights-inception-2015-12-05-6726825d.pth layout).

    Random weights with default BatchNorm statistics give pool features of ~1e-7 (so every
    FID is 0); one forward pass in training mode sets each BatchNorm's running statistics
    to its input's, so the features are O(1) and differ between image sets.
    """
    import torch_fidelity.feature_extractor_inceptionv3 as inc

    with monkeypatch.context() as m:
        m.setattr(inc, "load_state_dict_from_url", lambda *a, **k: {})
        m.setattr(inc.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None)
        model = inc.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: after one pass, exactly that pass's statistics
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.train()(torch.randint(0, 256, (1, 3, 64, 64), generator=generator, dtype=torch.uint8))
    torch.save(model.eval().state_dict(), path)


@pytest.fixture(scope="module")
def celeba_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("celeba")
    root = make_fake_celeba(workdir / "celeba", n_images=N_IMAGES, seed=0)
    weights = workdir / "weights"
    weights.mkdir()
    alexnet, inception = weights / "alexnet-owt-7be5be79.pth", weights / "weights-inception-2015-12-05-6726825d.pth"
    _random_alexnet(alexnet)
    with pytest.MonkeyPatch.context() as monkeypatch:
        _random_inception(inception, monkeypatch)
    config = copy.deepcopy(load_yaml(SMOKE))
    config["data"]["celeba"]["root"] = str(root)
    config["vae"]["lpips"]["weights_path"] = str(alexnet)
    config["metrics"]["lpips_weights"] = str(alexnet)
    config["metrics"]["inception_weights"] = str(inception)
    path = write_config(workdir / "config.yaml", config)
    snakemake(workdir, "--cores", "2", "--resources", "gpu=1", configfile=path, timeout=900)
    return workdir, config


@pytest.mark.slow
def test_dataset_is_rgb_with_the_40_attributes(celeba_run: tuple[Path, dict[str, Any]]) -> None:
    workdir, config = celeba_run
    (dataset,) = (workdir / "results" / "datasets").glob("celeba-*/dataset.h5")
    with h5py.File(dataset, "r") as h5:
        assert h5["images"].shape == (N_IMAGES, 3, 64, 64) and h5["images"].dtype == "uint8"
        assert h5["attributes"].shape == (N_IMAGES, 40)
        assert json.loads(h5.attrs["attribute_names"]) == list(ATTRIBUTE_NAMES)
        assert set(h5["split"][...].tolist()) == {0, 1, 2}


@pytest.mark.slow
def test_vae_trained_with_lpips_and_gan(celeba_run: tuple[Path, dict[str, Any]]) -> None:
    workdir, config = celeba_run
    base = workdir / "results" / config["experiment"]
    rows = list(csv.DictReader((base / "vae" / "train_log.csv").open()))
    assert all(float(r["lpips"]) > 0 for r in rows)
    start = config["vae"]["gan"]["start_step"]
    assert all(r["d_loss"] == "" for r in rows if int(r["step"]) <= start - config["vae"]["log_every"])
    assert float(rows[-1]["d_loss"]) > 0 and float(rows[-1]["d_weight"]) > 0
    log = (base / "logs" / "train_vae.log").read_text()
    assert f"AlexNet backbone loaded from {config['vae']['lpips']['weights_path']}" in log


@pytest.mark.slow
def test_report_has_tad_lpips_and_inception_fid(celeba_run: tuple[Path, dict[str, Any]]) -> None:
    workdir, config = celeba_run
    base = workdir / "results" / config["experiment"]
    assert (base / "report" / "report.md").stat().st_size > 0
    doc = json.loads((base / "report" / "metrics.json").read_text())
    levels = doc["levels"]["levels"]
    # Reconstruction is scored at every cached level, TAD only at metrics.levels.
    assert set(config["metrics"]["levels"]) <= {lvl["t"] for lvl in levels}
    for lvl in levels:
        assert 0 <= lvl["lpips"] < 1 and lvl["psnr"] > 0, lvl
        assert "mig" not in lvl  # no ground-truth factors in CelebA
        if lvl["t"] in config["metrics"]["levels"]:
            assert lvl["tad"] >= 0 and lvl["tad_n_images"] == N_IMAGES and lvl["tad_folds"] == 2, lvl
        else:
            assert "tad" not in lvl, lvl
    for baseline in doc["baselines"].values():
        assert "tad" in baseline["fixed_beta"] and "lpips" in baseline["fixed_beta"]
    runs = config["sampling"]["runs"]
    assert set(doc["generation"]) == {r["name"] for r in runs}
    for run in runs:
        scores = doc["generation"][run["name"]]["inception"]
        assert scores["n_samples"] == run["n_samples"] and scores["n_reference"] == 16
        # random (calibrated) features: samples of a barely trained VAE differ from the data
        assert scores["fid"] > 0 and math.isfinite(scores["kid_mean"]), scores
    assert (base / "samples" / "ancestral_1000" / "grid.png").stat().st_size > 1000
    assert (base / "figures" / "sharpening.png").stat().st_size > 1000
