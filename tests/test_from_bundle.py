"""Experiments started from a bundle take its trained sections and refuse what it lacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from multibeta.bundle.layout import denoiser_file
from multibeta.bundle.manifest import FORMAT_VERSION, file_entries
from multibeta.workflow.config import ConfigError, resolve_config
from multibeta.workflow.experiments import expand_experiments
from multibeta.workflow.from_bundle import apply_bundle


def _bundle(root: Path, variants: list[str]) -> Path:
    recorded = resolve_config({"experiment": "trained", "vae": {"steps": 123, "baseline_betas": [1.0]},
                               "diffusion": {"variants": variants}})
    (root / "denoisers").mkdir(parents=True)
    (root / "config.yaml").write_text(yaml.safe_dump(recorded))
    for rel in ("vae.safetensors", "latent_space.safetensors", *(denoiser_file(v) for v in variants)):
        (root / rel).write_bytes(b"placeholder")  # only the manifest, listing and config are read
    (root / "manifest.json").write_text(json.dumps({"format_version": FORMAT_VERSION, "variants": variants,
                                                    "files": file_entries(root)}))
    return root


def test_the_bundle_sections_replace_the_configs(tmp_path: Path) -> None:
    assert apply_bundle({"vae": {"steps": 5}}) == {"vae": {"steps": 5}}
    bundle = _bundle(tmp_path / "b", ["multibeta", "noise_only", "standard_ldm"])
    (exp,) = expand_experiments({"bundle": str(bundle), "sampling": {"grid": {"n_images": 4}}}).values()
    assert exp["vae"]["steps"] == 123 and exp["vae"]["baseline_betas"] == []  # no baselines to train
    assert exp["sampling"]["grid"]["n_images"] == 4  # the config's own sampling section stays
    with pytest.raises(ConfigError, match=r"also sets \['vae'\].*Remove those sections"):
        expand_experiments({"bundle": str(bundle), "vae": {"steps": 5}})
    with pytest.raises(ConfigError, match=r"sweep 'b8'.*also sets \['vae'\]"):
        expand_experiments({"bundle": str(bundle), "sweep": [{"name": "b8", "overrides": {"vae.beta_max": 8}}]})


def test_a_bundle_inside_the_experiments_own_outputs_is_refused(tmp_path: Path) -> None:
    (tmp_path / "results" / "default").mkdir(parents=True)
    bundle = _bundle(tmp_path / "results" / "default" / "bundle", ["multibeta"])
    raw = {"bundle": str(bundle), "results_dir": str(tmp_path / "results")}
    with pytest.raises(ConfigError, match=r"lies inside this experiment's output folder"):
        expand_experiments(raw)
    assert expand_experiments({**raw, "experiment": "other"})  # another experiment may use it


def test_a_run_of_a_variant_the_bundle_lacks_is_refused(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path / "b", ["multibeta"])
    runs = [{"name": "a", "variant": "multibeta", "steps": 5}, {"name": "b", "variant": "standard_ldm", "steps": 5}]
    with pytest.raises(ConfigError, match=r"sampling\.runs\[1\]\.variant.*holds the denoisers \['multibeta'\]"):
        expand_experiments({"bundle": str(bundle), "sampling": {"runs": runs}})


def test_a_missing_or_foreign_bundle_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"invalid config at 'bundle': no bundle at"):
        expand_experiments({"bundle": str(tmp_path / "nowhere")})
    bundle = _bundle(tmp_path / "b", ["multibeta"])
    manifest = json.loads((bundle / "manifest.json").read_text())
    (bundle / "manifest.json").write_text(json.dumps({**manifest, "files": {
        **manifest["files"], "../outside.yaml": manifest["files"]["config.yaml"]}}))
    with pytest.raises(ConfigError, match=r"'bundle'.*refused:\s+- \.\./outside\.yaml: contains '\.\.'"):
        expand_experiments({"bundle": str(bundle)})
    (bundle / "manifest.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(ConfigError, match=r"'bundle'.*format version 99"):
        expand_experiments({"bundle": str(bundle)})
