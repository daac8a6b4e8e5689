"""Config validation: defaults are filled from the schemas and bad values name their key."""

from __future__ import annotations

import pytest

from multibeta.workflow.config import ConfigError, resolve_config, section_defaults


def test_defaults_filled_in_every_section() -> None:
    cfg = resolve_config({})
    assert cfg["experiment"] == "default"
    assert cfg["data"]["name"] == "dsprites"
    assert cfg["compute"]["device"] == "auto"


@pytest.mark.parametrize(
    ("bad", "key"),
    [
        ({"dataa": {}}, "dataa"),
        ({"data": {"size": 3}}, "data.size"),
        ({"data": {"name": "mnist"}}, "data.name"),
        ({"compute": {"device": "tpu"}}, "compute.device"),
        ({"data": {"val_fraction": "lots"}}, "data.val_fraction"),
        ({"experiment": "has space"}, "experiment"),
    ],
)
def test_bad_config_names_the_key(bad: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        resolve_config(bad)


def test_section_defaults_merge_overrides() -> None:
    section = section_defaults("data", {"size": 100})
    assert section["size"] == 100 and section["seed"] == 0
