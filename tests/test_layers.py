"""The package's layers only point down (import-linter's layers contract in pyproject.toml)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "multibeta"


def _layers() -> list[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return [re.sub(r"[()]", "", layer) for layer in contract["layers"]]


def test_every_subpackage_has_a_layer() -> None:
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    packages |= {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}  # cli, api
    listed = {layer.removeprefix("multibeta.") for layer in _layers()}
    assert packages == listed, (
        f"subpackages or modules without a layer: {sorted(packages - listed)}; layers without a package: "
        f"{sorted(listed - packages)}. Add new packages to [tool.importlinter] in pyproject.toml."
    )


def test_imports_only_point_down() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    proc = subprocess.run([str(lint), "--config", str(REPO / "pyproject.toml"), "--no-cache"],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "1 kept, 0 broken" in proc.stdout
