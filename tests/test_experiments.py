"""Sweep expansion: named experiments, validated overrides, shared datasets."""

from __future__ import annotations

import pytest

from multibeta.core.config import ConfigError
from multibeta.workflow.experiments import dataset_id, expand_experiments


def test_sweep_expands_into_named_experiments_sharing_the_dataset() -> None:
    raw = {
        "experiment": "base",
        "data": {"size": 512},
        "sweep": [{"name": "seed1", "overrides": {"data.seed": 1}},
                  {"name": "val", "overrides": {"data.val_fraction": 0.1}}],
    }
    exps = expand_experiments(raw)
    assert list(exps) == ["base", "seed1", "val"]
    assert exps["seed1"]["data"]["seed"] == 1 and exps["base"]["data"]["seed"] == 0
    assert dataset_id(exps["base"]["data"]) != dataset_id(exps["seed1"]["data"])
    same = expand_experiments({"experiment": "a", "sweep": [{"name": "b", "overrides": {}}]})
    assert dataset_id(same["a"]["data"]) == dataset_id(same["b"]["data"])


@pytest.mark.parametrize(
    ("sweep", "match"),
    [
        ([{"name": "x", "overrides": {"data.size": 2}}], "data.size"),
        ([{"name": "x", "overrides": {"results_dir": "elsewhere"}}], "global"),
        ([{"name": "default", "overrides": {}}], "twice"),
    ],
)
def test_bad_sweeps_are_refused(sweep: list, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        expand_experiments({"sweep": sweep})
