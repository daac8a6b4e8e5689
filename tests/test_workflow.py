"""The Snakemake workflow itself: lint, DAG of the default config, config errors before any job."""

from __future__ import annotations

from pathlib import Path

from smk import REPO, TINY, load_yaml, planned_jobs, snakemake, write_config


def test_lint_is_clean(tmp_path: Path) -> None:
    proc = snakemake(REPO, "--lint", timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "good condition" in proc.stdout + proc.stderr


def test_default_config_dag(tmp_path: Path) -> None:
    jobs = planned_jobs(tmp_path, REPO / "config.yaml")
    for rule in ("prepare_data", "train_vae", "cache_latents", "train_diffusion", "sample",
                 "sharpen", "traverse", "level_metrics", "generation_metrics", "report"):
        assert jobs[rule] >= 1, (rule, jobs)
    assert jobs["train_diffusion"] == 2  # multibeta, standard_ldm (noise_only: dsprites_long)


def test_long_dsprites_config_plans_the_ablation(tmp_path: Path) -> None:
    jobs = planned_jobs(tmp_path, REPO / "configs" / "dsprites_long.yaml")
    assert jobs["train_diffusion"] == 3 and jobs["sample"] == 7 and jobs["report"] == 1


def test_results_dir_with_a_trailing_slash_plans_the_whole_run(tmp_path: Path) -> None:
    config = {**load_yaml(TINY), "results_dir": "out/"}
    jobs = planned_jobs(tmp_path, write_config(tmp_path / "slash.yaml", config))
    assert jobs["train_vae"] == 1 and jobs["report"] == 1 and jobs["all"] == 1


def test_full_scale_dsprites_config_plans_every_stage(tmp_path: Path) -> None:
    jobs = planned_jobs(tmp_path, REPO / "configs" / "dsprites_full.yaml")
    assert jobs["train_vae_baseline"] == 4 and jobs["baseline_metrics"] == 4
    assert jobs["sample"] == 5 and jobs["train_diffusion"] == 3 and jobs["report"] == 1
