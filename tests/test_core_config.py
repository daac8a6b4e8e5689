"""The generic typed-section builder of multibeta.core.config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from multibeta.core.config import ConfigError, from_section, to_dict


@dataclass(frozen=True)
class Inner:
    width: int
    rate: float


@dataclass(frozen=True)
class Outer:
    name: str
    mode: Literal["a", "b"]
    levels: int | tuple[float, ...]
    betas: tuple[float, float]
    limit: float | None
    flag: bool
    inner: Inner

    def check(self) -> None:
        if self.mode == "b" and self.limit is None:
            raise ConfigError("invalid config at 'x.limit': mode b needs a limit")


GOOD = {"name": "n", "mode": "a", "levels": [0, 0.5, 1], "betas": [0.9, 1], "limit": None,
        "flag": True, "inner": {"width": 4, "rate": 1}}


def test_builds_nested_sections_with_the_hinted_types() -> None:
    cfg = from_section(Outer, GOOD, "x")
    assert cfg.levels == (0.0, 0.5, 1.0) and all(type(v) is float for v in cfg.levels)
    assert cfg.betas == (0.9, 1.0) and type(cfg.betas[1]) is float
    assert cfg.inner == Inner(width=4, rate=1.0) and type(cfg.inner.rate) is float
    assert from_section(Outer, {**GOOD, "levels": 5}, "x").levels == 5
    assert to_dict(cfg) == {**GOOD, "levels": [0.0, 0.5, 1.0], "betas": [0.9, 1.0],
                            "inner": {"width": 4, "rate": 1.0}}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mode": "c"}, r"x\.mode.*not one of"),
        ({"flag": 1}, r"x\.flag.*true or false"),
        ({"inner": {"width": 2.5, "rate": 1}}, r"x\.inner\.width.*whole number"),
        ({"inner": {"width": True, "rate": 1}}, r"x\.inner\.width.*number"),
        ({"betas": [1, 2, 3]}, r"x\.betas.*2 values"),
        ({"levels": "many"}, r"x\.levels.*fits none"),
        ({"mode": "b"}, r"mode b needs a limit"),  # the dataclass's own check() runs
    ],
)
def test_refuses_values_that_do_not_fit(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_section(Outer, {**GOOD, **change}, "x")


def test_refuses_missing_and_unknown_keys_naming_the_section() -> None:
    section = {k: v for k, v in GOOD.items() if k != "flag"} | {"colour": 1}
    with pytest.raises(ConfigError, match=r"'x' does not match Outer: missing \['flag'\], unknown \['colour'\]"):
        from_section(Outer, section, "x")
