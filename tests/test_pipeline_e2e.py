"""End to end: the tiny config through Snakemake, then the rerun table of the README.

One real run (module fixture); every edit below is then checked with a dry run, which must
list exactly the jobs that depend on the edited config keys.
"""

from __future__ import annotations

import collections
import copy
import json
from pathlib import Path
from typing import Any, Callable

import pytest

from smk import TINY, load_yaml, planned_jobs, snakemake, write_config

pytestmark = pytest.mark.slow

RUNS = 5  # sampling.runs in tests/configs/tiny.yaml
VARIANTS = 3


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("tiny")
    config = load_yaml(TINY)
    path = write_config(workdir / "config.yaml", config)
    snakemake(workdir, "--cores", "2", "--resources", "gpu=1", configfile=path, timeout=1200)
    return workdir, config


def test_outputs_and_report(tiny_run: tuple[Path, dict[str, Any]]) -> None:
    workdir, config = tiny_run
    base = workdir / "results" / config["experiment"]
    doc = json.loads((base / "report" / "metrics.json").read_text())
    assert set(doc["generation"]) == {r["name"] for r in config["sampling"]["runs"]}
    for run in doc["generation"].values():
        assert run["factor_classifier"]["fid"] >= 0 and run["timing"]["samples_per_s"] > 0
    levels = doc["levels"]["levels"]
    assert [lvl["t"] for lvl in levels] == sorted(lvl["t"] for lvl in levels)
    assert levels[0]["t"] == 0.0 and levels[-1]["t"] == 1.0
    assert all("mig" in lvl and "mse" in lvl for lvl in levels)
    assert "1" in doc["baselines"]
    report = (base / "report" / "report.md").read_text()
    assert "| ddim_10 |" in report and "## Reconstruction and disentanglement per level" in report
    for png in ("report/metrics_vs_beta.png", "figures/sharpening.png", "figures/traversal_pca.png",
                "vae/plots/sigma_vs_beta.png", "samples/ancestral_100/grid.png"):
        assert (base / png).stat().st_size > 1000, png
    assert (base / "benchmarks" / "train_vae.tsv").exists()
    assert (base / "logs" / "train_vae.log").read_text().count("runtime: device=cpu") == 1
    assert not (workdir / "results" / ".multibeta.lock").exists()  # released when the run ended


def test_nothing_to_do_after_a_run(tiny_run: tuple[Path, dict[str, Any]]) -> None:
    workdir, config = tiny_run
    path = write_config(workdir / "same.yaml", config)
    assert planned_jobs(workdir, path) == collections.Counter()


def _set(config: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = config
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    node[last] = value


def _add_run(config: dict[str, Any]) -> None:
    config["sampling"]["runs"].append({"name": "ddim_20", "steps": 20, "eta": 0.0, "n_samples": 32, "batch_size": 32})


DOWNSTREAM_OF_DIFFUSION = {"train_diffusion": VARIANTS, "sample": RUNS, "sharpen": 1, "traverse": 1,
                           "generation_metrics": RUNS, "report": 1, "all": 1}
DOWNSTREAM_OF_VAE = {**DOWNSTREAM_OF_DIFFUSION, "train_vae": 1, "vae_plots": 1, "train_vae_baseline": 1,
                     "cache_latents": 1, "level_metrics": 1, "baseline_metrics": 1}

# The README's table "you change X -> these steps rerun".
RERUN_TABLE: list[tuple[str, Callable[[dict[str, Any]], None], dict[str, int]]] = [
    ("compute.cpu_threads", lambda c: _set(c, "compute.cpu_threads", 2), {}),
    ("compute.device", lambda c: _set(c, "compute.device", "auto"), {}),
    ("metrics.mig.num_bins", lambda c: _set(c, "metrics.mig.num_bins", 10),
     {"level_metrics": 1, "baseline_metrics": 1, "report": 1, "all": 1}),
    ("metrics.generation.kid_subsets", lambda c: _set(c, "metrics.generation.kid_subsets", 5),
     {"reference_features": 1, "generation_metrics": RUNS, "report": 1, "all": 1}),
    ("sampling.runs[1].steps", lambda c: _set(c, "sampling.runs.1.steps", 12),
     {"sample": 1, "generation_metrics": 1, "report": 1, "all": 1}),
    ("sampling.runs += ddim_20", _add_run, {"sample": 1, "generation_metrics": 1, "report": 1, "all": 1}),
    ("sampling.sharpen.steps", lambda c: _set(c, "sampling.sharpen.steps", 10),
     {"sharpen": 1, "report": 1, "all": 1}),
    ("diffusion.lambda_delta", lambda c: _set(c, "diffusion.lambda_delta", 0.5), DOWNSTREAM_OF_DIFFUSION),
    ("cache.dtype", lambda c: _set(c, "cache.dtype", "float16"),
     {**DOWNSTREAM_OF_DIFFUSION, "cache_latents": 1, "level_metrics": 1}),
    ("vae.lr", lambda c: _set(c, "vae.lr", 0.002), DOWNSTREAM_OF_VAE),
    ("vae.baseline_betas += 3", lambda c: _set(c, "vae.baseline_betas", [1.0, 3.0]),
     {"train_vae_baseline": 1, "baseline_metrics": 1, "report": 1, "all": 1}),
]


@pytest.mark.parametrize(("name", "edit", "expected"), RERUN_TABLE, ids=[r[0] for r in RERUN_TABLE])
def test_config_edit_reruns_exactly_the_dependent_steps(
    tiny_run: tuple[Path, dict[str, Any]], name: str, edit: Callable, expected: dict[str, int]
) -> None:
    workdir, config = tiny_run
    edited = copy.deepcopy(config)
    edit(edited)
    path = write_config(workdir / "edited.yaml", edited)
    assert planned_jobs(workdir, path) == collections.Counter(expected), name


def test_sweep_shares_the_dataset_and_compares_experiments(tiny_run: tuple[Path, dict[str, Any]]) -> None:
    """A two-experiment sweep (the tiny experiment, already run, plus one more seed)."""
    workdir, config = tiny_run
    swept = copy.deepcopy(config)
    # The second experiment is kept small (one variant, one sampling run, no baseline): what is
    # tested is the sweep's wiring, not the tiny pipeline again.
    swept["sweep"] = [{"name": "tiny-seed1", "overrides": {
        "vae.seed": 1, "diffusion.seed": 1, "vae.baseline_betas": [], "diffusion.variants": ["multibeta"],
        "sampling.runs": [config["sampling"]["runs"][1]]}}]
    path = write_config(workdir / "sweep.yaml", swept)
    jobs = planned_jobs(workdir, path)
    assert jobs["prepare_data"] == 0 and jobs["train_vae"] == 1 and jobs["sweep_report"] == 1
    assert jobs["train_diffusion"] == 1 and jobs["sample"] == 1 and jobs["train_vae_baseline"] == 0
    snakemake(workdir, "--cores", "2", "--resources", "gpu=1", configfile=path, timeout=1200)
    results = workdir / "results"
    for exp in (config["experiment"], "tiny-seed1"):
        assert (results / exp / "report" / "report.md").exists()
    assert len(list((results / "datasets").iterdir())) == 1
    table = (results / "sweep_report.md").read_text()
    assert "| tiny |" in table and "| tiny-seed1 |" in table
