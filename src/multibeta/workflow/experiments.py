"""Experiments of one invocation: the base config plus its sweep entries.

A sweep entry names an experiment and overrides dotted config keys of the base config:

    sweep:
      - name: beta-max-8
        overrides: {vae.beta_max: 8}

Every experiment is validated on its own. Upstream steps are shared where the config
sections they read are equal: the dataset is addressed by a hash of the ``data`` section,
so two experiments with the same data section read one file.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

from multibeta.utils.io import canonical_json, config_hash
from multibeta.workflow.checks import check_experiment
from multibeta.workflow.config import ConfigError, resolve_config
from multibeta.workflow.from_bundle import apply_bundle, check_bundle_variants

_GLOBAL_KEYS = ("experiment", "results_dir", "sweep", "compute")


def set_dotted(config: dict[str, Any], dotted_key: str, value: Any) -> None:
    """Set ``config['a']['b'] = value`` for ``dotted_key = 'a.b'``, creating dicts as needed."""
    parts = dotted_key.split(".")
    node = config
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"sweep override '{dotted_key}': '{part}' is not a section")
        node = child
    node[parts[-1]] = copy.deepcopy(value)


def expand_experiments(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Map experiment name -> validated, fully defaulted config.

    Raises:
        ConfigError: invalid base config, a broken cross-key rule
            (:func:`multibeta.workflow.checks.check_experiment`), invalid override, duplicate
            experiment names, or an override of a key that is global to the invocation.
    """
    base = resolve_config(apply_bundle(raw))
    check_experiment(base)
    check_bundle_variants(base)
    experiments = {base["experiment"]: base}
    for entry in base["sweep"]:
        name = entry["name"]
        if name in experiments:
            raise ConfigError(f"sweep: experiment name '{name}' is used twice")
        derived = copy.deepcopy(raw or {})
        derived.pop("sweep", None)
        for key, value in entry["overrides"].items():
            if key.split(".")[0] in _GLOBAL_KEYS:
                raise ConfigError(
                    f"sweep '{name}': '{key}' is global to the invocation and cannot be overridden"
                )
            set_dotted(derived, key, value)
        derived["experiment"] = name
        try:
            experiments[name] = resolve_config(apply_bundle(derived))
            check_experiment(experiments[name])
            check_bundle_variants(experiments[name])
        except ConfigError as exc:
            raise ConfigError(f"sweep '{name}': {exc}") from exc
    return experiments


#: Keys of the data section added after datasets were first prepared (issue #24). At their
#: defaults they are left out of a dataset's identity, so every dataset prepared before keeps
#: its folder and is not rebuilt; any other value is part of it.
LATER_DATA_KEYS = ("image_size", "folder", "shapes3d", "mpi3d")  # = multibeta.data.prepare.LATER_KEYS


@lru_cache(maxsize=1)
def _data_defaults() -> dict[str, Any]:
    from multibeta.workflow.config import section_defaults

    return section_defaults("data")


def data_identity(data_section: dict[str, Any]) -> dict[str, Any]:
    """The data section without the :data:`LATER_DATA_KEYS` that hold their schema defaults:
    what names a prepared dataset (:func:`dataset_id`) and what rule prepare_data receives
    (which fills the defaults back in)."""
    defaults = _data_defaults()
    return {k: v for k, v in data_section.items()
            if not (k in LATER_DATA_KEYS and k in defaults and v == defaults[k])}


def dataset_id(data_section: dict[str, Any]) -> str:
    """Folder name of a prepared dataset: its name plus a hash of its :func:`data_identity`."""
    return f"{data_section['name']}-{config_hash(data_identity(data_section), length=10)}"


def canonical(section: Any) -> Any:
    """A key-sorted deep copy, so params compare equal whenever the content is equal."""
    import json

    return json.loads(canonical_json(section))


def classifier_id(experiment: dict[str, Any]) -> str:
    """Folder name of the factor classifier an experiment uses, under its dataset's folder:
    ``factor_classifier-<hash of metrics.seed and metrics.factor_classifier>``. It depends only on
    the data and these options, so experiments that share both share one classifier."""
    metrics = experiment["metrics"]
    options = {"seed": metrics["seed"], "factor_classifier": metrics["factor_classifier"]}
    return f"factor_classifier-{config_hash(options, length=8)}"

