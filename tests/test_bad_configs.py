"""The corpus of bad configs (tests/configs/bad_configs.yaml): every one is refused before any
job, with a message that names the key path.

Each entry is an edit merged over the tiny config. In-process, :func:`expand_experiments` (what
the Snakefile calls first) must raise a ConfigError naming the key; as a real ``snakemake -n``
in an empty folder, the run must stop with that key in its output and create nothing.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from multibeta.workflow.config import ConfigError, deep_merge
from multibeta.workflow.experiments import expand_experiments
from smk import REPO, TINY, load_yaml, snakemake, write_config

CASES: list[dict[str, Any]] = load_yaml(REPO / "tests" / "configs" / "bad_configs.yaml")


def _bad_config(case: dict[str, Any]) -> dict[str, Any]:
    return deep_merge(load_yaml(TINY), case["edit"])


def test_the_corpus_is_large_and_named_uniquely() -> None:
    names = [case["name"] for case in CASES]
    assert len(names) >= 40 and len(set(names)) == len(names)


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_bad_config_is_refused_naming_the_key(case: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as err:
        expand_experiments(_bad_config(case))
    assert case["key"] in str(err.value)


def test_every_bad_config_stops_a_dry_run_before_any_job(tmp_path: Path) -> None:
    def dry_run(case: dict[str, Any]) -> tuple[str, str | None]:
        workdir = tmp_path / case["name"]
        workdir.mkdir()
        path = write_config(workdir / "bad.yaml", _bad_config(case))
        proc = snakemake(workdir, "-n", configfile=path, check=False, timeout=300)
        output = proc.stdout + proc.stderr
        if proc.returncode == 0:
            return case["name"], "accepted"
        if case["key"] not in output:
            return case["name"], f"message lacks {case['key']!r}: {output[-600:]}"
        if (workdir / "results").exists() or "rule " in proc.stdout:
            return case["name"], "planned or created outputs"
        return case["name"], None

    with ThreadPoolExecutor(max_workers=2) as pool:  # each dry run is one short process
        failures = {name: why for name, why in pool.map(dry_run, CASES) if why}
    assert not failures, failures
