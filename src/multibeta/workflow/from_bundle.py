"""Experiments that start from a bundle: the bundle's trained sections replace the config's.

With ``bundle: <folder>`` the data, vae, cache and diffusion sections of the experiment are
those recorded in the bundle (they define the trained models), fixed-β baselines are dropped
(a bundle holds none), and every sampling run must use a denoiser variant the bundle has.
Only the manifest, the folder's listing and the recorded config are read here (fast, at DAG
construction: a name outside the folder or a symlink is refused at once); rule
``verify_bundle`` checks the files' SHA-256 and headers before the first job that reads them.
The rules read the bundle's models from its safetensors files (no pickle). A config that
starts from a bundle must not set the trained sections itself (they would be ignored), and the
bundle must not lie inside the experiment's own output folder (its export would replace it).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from multibeta.bundle.manifest import BundleError, check_layout, read_manifest
from multibeta.core.config import ConfigError

#: Sections of the config that the bundle's models define.
TRAINED_SECTIONS = ("data", "vae", "cache", "diffusion")
BUNDLE_CONFIG = "config.yaml"


def apply_bundle(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with the trained sections of its ``bundle`` (unchanged without one).

    Raises:
        ConfigError: naming ``bundle``: no bundle there, another format version, or a sampling
            run whose variant the bundle lacks.
    """
    folder = (raw or {}).get("bundle")
    if not folder:
        return raw
    set_here = [s for s in TRAINED_SECTIONS if (raw or {}).get(s)]
    if set_here:
        raise ConfigError(
            f"invalid config at 'bundle': the config also sets {set_here}, but an experiment that "
            f"starts from a bundle takes its {list(TRAINED_SECTIONS)} sections from the bundle "
            "(they define the trained models). Remove those sections, or remove 'bundle' to train."
        )
    results = Path(str(raw.get("results_dir") or "results")) / str(raw.get("experiment") or "default")
    if Path(folder).resolve().is_relative_to(results.resolve()):
        raise ConfigError(
            f"invalid config at 'bundle': {folder} lies inside this experiment's output folder "
            f"{results}/, whose bundle the run exports again (and so would replace). Copy the "
            "bundle elsewhere, or give this experiment another name."
        )
    try:
        manifest = read_manifest(folder)
        check_layout(folder, manifest)  # names inside the folder, no symlinks, sizes in bounds
        recorded = yaml.safe_load((Path(folder) / BUNDLE_CONFIG).read_text())
        if not isinstance(recorded, dict) or not all(isinstance(recorded.get(s), dict) for s in TRAINED_SECTIONS):
            raise BundleError(f"{Path(folder) / BUNDLE_CONFIG} lacks the sections {list(TRAINED_SECTIONS)}; "
                              "export the bundle again (rule export_bundle).")
    except (BundleError, OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"invalid config at 'bundle': {exc}") from exc
    out = copy.deepcopy(raw)
    for section in TRAINED_SECTIONS:
        out[section] = copy.deepcopy(recorded[section])
    out["vae"]["baseline_betas"] = []  # a bundle holds the multi-β model only
    out["diffusion"]["variants"] = list(manifest.get("variants", []))
    return out


def check_bundle_variants(config: dict[str, Any]) -> None:
    """Every sampling run of a resolved config started from a bundle uses one of its denoisers.

    Raises:
        ConfigError: naming the run's key and the bundle's variants.
    """
    if not config.get("bundle"):
        return
    variants = set(config["diffusion"]["variants"])
    for i, run in enumerate(config["sampling"]["runs"]):
        if run["variant"] not in variants:
            raise ConfigError(
                f"invalid config at 'sampling.runs[{i}].variant': {run['variant']!r} — the bundle "
                f"{config['bundle']} holds the denoisers {sorted(variants)}; use one of them or "
                "drop the run."
            )
