"""Typed config sections built from validated dicts, in one generic way.

The schemas in ``workflow/schemas/`` define every option, its range and its default; a config
dataclass only gives the options types. :func:`from_section` builds any such dataclass from a
validated, defaulted section by reading the dataclass's type hints: nested dataclasses are built
recursively, ``tuple[...]`` fields take lists, numbers are cast to the hinted type, and a section
with missing or unknown keys is refused (it was not validated). :func:`to_dict` is the inverse
(tuples become lists), used to record configs with results.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from typing import Any, ClassVar, Literal, TypeVar, Union

T = TypeVar("T")


class ConfigError(ValueError):
    """The config is invalid; the message names the key and what is expected."""


def from_section(cls: type[T], section: dict[str, Any], where: str) -> T:
    """Build the frozen dataclass ``cls`` from the config section ``section``.

    Args:
        cls: a dataclass whose fields match the section's keys one to one.
        section: a validated, defaulted section (``multibeta.workflow.config``).
        where: the section's dotted key (``vae.arch``), named in errors.

    After construction, a ``check()`` method of ``cls`` (cross-key checks the schema cannot
    express) is called when it exists; a ``check(where)`` that takes a parameter gets ``where``,
    so that a dataclass used in several sections names the key path of the one at hand.

    Raises:
        ConfigError: keys missing or unknown, or a value that does not fit its type.
    """
    if not isinstance(section, dict):
        raise ConfigError(f"invalid config at '{where}': expected a mapping, got {section!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    missing = sorted(set(names) - set(section))
    extra = sorted(set(section) - set(names))
    if missing or extra:
        raise ConfigError(
            f"config section '{where}' does not match {cls.__name__}: missing {missing}, "
            f"unknown {extra}. Build it with multibeta.workflow.config (validate / "
            "section_defaults) so the schema fills defaults and rejects unknown keys."
        )
    kwargs = {name: _convert(section[name], hints[name], f"{where}.{name}") for name in names}
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if callable(check):
        if inspect.signature(check).parameters:
            check(where)
        else:
            check()
    return obj


def _convert(value: Any, hint: Any, where: str) -> Any:
    """``value`` cast to the type ``hint`` (a scalar, Literal, Optional, Union, tuple, dataclass)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        # A list goes to a tuple option, a scalar to a scalar option: try options in order.
        for option in sorted((o for o in options if o is not type(None)), key=_list_last(value)):
            try:
                return _convert(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"invalid config at '{where}': {value!r} fits none of {hint}")
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(
                f"invalid config at '{where}': {value!r} is not one of {list(typing.get_args(hint))}"
            )
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"invalid config at '{where}': expected a list, got {value!r}")
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"invalid config at '{where}': expected {len(args)} values, got {value!r}")
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if dataclasses.is_dataclass(hint):
        return from_section(hint, value, where)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"invalid config at '{where}': expected true or false, got {value!r}")
        return value
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"invalid config at '{where}': expected a number, got {value!r}")
        if hint is int and float(value) != int(value):
            raise ConfigError(f"invalid config at '{where}': expected a whole number, got {value!r}")
        return hint(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"invalid config at '{where}': expected a string, got {value!r}")
        return value
    if origin in (dict, list):
        return value
    raise TypeError(f"from_section cannot build {where} of type {hint!r}")


def _list_last(value: Any) -> Any:
    """Sort key putting union options that match ``value``'s kind (list or scalar) first."""
    is_list = isinstance(value, (list, tuple))

    def key(option: Any) -> int:
        return 0 if (typing.get_origin(option) is tuple) == is_list else 1

    return key


def to_dict(obj: Any) -> Any:
    """A config dataclass as plain JSON-able data (nested dataclasses as dicts, tuples as lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


class Section:
    """Mixin of a top-level config section's dataclass: ``from_section`` and ``to_dict``.

    Subclasses set ``SECTION`` to the section's key (``"vae"``), named in errors.
    """

    SECTION: ClassVar[str]

    @classmethod
    def from_section(cls: type[T], section: dict[str, Any]) -> T:
        """Build from a validated, fully defaulted section (see :func:`from_section`)."""
        return from_section(cls, section, cls.SECTION)  # type: ignore[attr-defined]

    def to_dict(self) -> dict[str, Any]:
        """The section as plain JSON-able data (tuples as lists), e.g. to record with results."""
        return to_dict(self)
