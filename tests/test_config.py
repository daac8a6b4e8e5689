"""Config validation: defaults are filled from the schemas and bad values name their key."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from multibeta.core.config import from_section
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


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        ({"vae": {"beta_min": 5.0, "beta_max": 2.0}}, "vae.beta_max"),
        ({"vae": {"baseline_betas": [1000.0]}}, "vae.baseline_betas[0]"),
        ({"vae": {"sigma_min": 0.5, "sigma_max": 0.5}}, "vae.sigma_max"),
        ({"vae": {"batch_size": 30000}, "data": {"size": 20000}}, "vae.batch_size"),
        ({"data": {"size": 800000}}, "data.size"),
        ({"sampling": {"runs": [{"name": "a"}, {"name": "a"}]}}, "sampling.runs"),
        ({"cache": {"levels": [0.1, 0.5, 1.0]}}, "cache.levels"),
        ({"metrics": {"levels": [0.3]}}, "metrics.levels"),
        ({"metrics": {"rotations": ["pca"], "primary_basis": "ica"}}, "metrics.primary_basis"),
        ({"data": {"name": "celeba"}}, "metrics.generation.feature_spaces"),
    ],
)
def test_cross_key_rules_stop_with_the_key_and_a_fix(edit: dict, key: str) -> None:
    from multibeta.workflow.experiments import expand_experiments

    with pytest.raises(ConfigError) as info:
        expand_experiments(edit)
    message = str(info.value)
    assert f"invalid config at '{key}'" in message
    assert message.rstrip().endswith(".") and "—" in message  # value — what is allowed. the fix.


def test_cross_key_rules_accept_every_shipped_config() -> None:
    import yaml

    from multibeta.workflow.config import REPO_ROOT
    from multibeta.workflow.experiments import expand_experiments

    for path in [REPO_ROOT / "config.yaml", *sorted((REPO_ROOT / "configs").glob("*.yaml")),
                 REPO_ROOT / "tests" / "configs" / "tiny.yaml"]:
        expand_experiments(yaml.safe_load(path.read_text()))


def test_a_sweep_entry_that_breaks_a_rule_is_named() -> None:
    from multibeta.workflow.experiments import expand_experiments

    with pytest.raises(ConfigError, match=r"sweep 'low': invalid config at 'vae.beta_max'"):
        expand_experiments({"sweep": [{"name": "low", "overrides": {"vae.beta_max": 0.05}}]})


@pytest.mark.parametrize(("value", "expected"), [("results/", "results"), ("./out//runs/", "out/runs"),
                                                 ("/abs/results/", "/abs/results"), ("results", "results")])
def test_results_dir_is_normalised_once(value: str, expected: str) -> None:
    assert resolve_config({"results_dir": value})["results_dir"] == expected


@pytest.mark.parametrize("value", ["", "  ", ".", "./"])
def test_results_dir_must_name_a_folder(value: str) -> None:
    with pytest.raises(ConfigError, match=r"invalid config at 'results_dir'.*results_dir: results"):
        resolve_config({"results_dir": value})


def test_config_file_problems_name_the_file_and_line(tmp_path) -> None:
    from multibeta.workflow.config import load_config_file, main

    broken = tmp_path / "broken.yaml"
    broken.write_text("experiment: x\nvae:\n  steps: [1, 2\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=rf"{broken} at line \d+, column \d+: not valid YAML"):
        load_config_file(broken)
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match=rf"{empty} is empty"):
        load_config_file(empty)
    listing = tmp_path / "list.yaml"
    listing.write_text("- experiment: x\n")
    with pytest.raises(ConfigError, match=rf"{listing}: the top level must be a mapping"):
        load_config_file(listing)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config_file(tmp_path / "missing.yaml")
    good = tmp_path / "good.yaml"
    good.write_text("experiment: ok\n")
    assert main([str(good)]) == 0
    assert main([str(good), str(broken)]) == 1


@dataclass(frozen=True)
class _Plain:
    n: int

    def check(self) -> None:
        if self.n < 0:
            raise ConfigError("negative")


@dataclass(frozen=True)
class _Shared:
    n: int

    def check(self, where: str) -> None:
        if self.n < 0:
            raise ConfigError(f"invalid config at '{where}.n'")


@dataclass(frozen=True)
class _Outer:
    parts: tuple[_Shared, ...]


def test_from_section_passes_the_key_path_to_a_check_that_takes_it() -> None:
    """A dataclass used in several places (the sampler's settings) names the one at hand."""
    assert from_section(_Plain, {"n": 1}, "a").n == 1
    with pytest.raises(ConfigError, match="negative"):
        from_section(_Plain, {"n": -1}, "a")
    with pytest.raises(ConfigError, match=r"'outer\.parts\[1\]\.n'"):
        from_section(_Outer, {"parts": [{"n": 1}, {"n": -1}]}, "outer")


def test_checking_a_config_loads_no_torch() -> None:
    """The Snakefile checks every config before any job: that must stay quick (no torch)."""
    import subprocess
    import sys

    code = ("import sys, multibeta.workflow.experiments as e; e.expand_experiments({}); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
