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


def test_command_line_strings_are_read_as_yaml_scalars() -> None:
    """``snakemake --config vae='{steps: 10}'`` hands nested values over as strings."""
    cfg = resolve_config({
        "vae": {"steps": "10", "lr": "2e-4", "baseline_betas": ["1", "3.5"], "ema_decay": "0"},
        "sampling": {"runs": [{"name": "a", "steps": "20", "eta": "0", "final_mean": "true"}]},
        "experiment": "123",  # a string option stays a string
    })
    assert cfg["vae"]["steps"] == 10 and cfg["vae"]["lr"] == 2e-4
    assert cfg["vae"]["baseline_betas"] == [1, 3.5]
    run = cfg["sampling"]["runs"][0]
    assert run["steps"] == 20 and run["eta"] == 0 and run["final_mean"] is True
    assert cfg["experiment"] == "123"
    with pytest.raises(ConfigError, match="vae.steps"):
        resolve_config({"vae": {"steps": "ten"}})
