"""Config loading: validation against the JSON schemas, with defaults filled from them.

The schemas in ``workflow/schemas/`` are the single definition of every option: its type,
range, description and default. ``config.schema.yaml`` lists the sections; each section
has its own ``<section>.schema.yaml`` (referenced with ``$ref``), owned by the stage that
reads it. Validation fills defaults (also inside ``$ref``'d sections, which Snakemake's own
``validate`` does not) and reports the first problem with the dotted key that caused it.
"""

from __future__ import annotations

import copy
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from multibeta.core.config import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[3]
SCHEMA_DIR = REPO_ROOT / "workflow" / "schemas"
TOP_SCHEMA = "config.schema.yaml"


@lru_cache(maxsize=None)
def load_schema(name: str) -> dict[str, Any]:
    """Load a schema file from ``workflow/schemas/``."""
    path = SCHEMA_DIR / name
    if not path.exists():
        raise FileNotFoundError(f"schema not found: {path}")
    return yaml.safe_load(path.read_text())


def _retrieve(uri: str) -> Resource:
    # Section schemas carry no $schema key on purpose: with one, jsonschema would validate
    # them with a fresh Draft 2020-12 validator that does not fill defaults.
    return DRAFT202012.create_resource(load_schema(uri))


def _scalar_from_text(value: Any, sub: dict[str, Any]) -> Any:
    """A string read as YAML where the schema wants a number, boolean or null, else unchanged.

    ``snakemake --config vae='{steps: 10}'`` parses nested values with YAML's BaseLoader, so
    every scalar in it arrives as a string ("10", "true"); these are read again here.
    """
    if not isinstance(value, str):
        return value
    types = sub.get("type")
    types = [types] if isinstance(types, str) else list(types or [])
    if not types or "string" in types:
        return value
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    if isinstance(parsed, str):  # YAML 1.1 reads "2e-4" (no dot) as text
        try:
            parsed = float(parsed)
        except ValueError:
            return value
    is_number = isinstance(parsed, (int, float)) and not isinstance(parsed, bool)
    fits = {
        "integer": isinstance(parsed, int) and not isinstance(parsed, bool),
        "number": is_number,
        "boolean": isinstance(parsed, bool),
        "null": parsed is None,
    }
    return parsed if any(fits.get(t, False) for t in types) else value


def _set_defaults(validator_cls: type) -> type:
    validate_properties = validator_cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema) -> Iterator:
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
                elif prop in instance and isinstance(sub, dict):
                    instance[prop] = _scalar_from_text(instance[prop], sub)
                    items = sub.get("items")
                    if isinstance(instance[prop], list) and isinstance(items, dict):
                        instance[prop] = [_scalar_from_text(v, items) for v in instance[prop]]
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_cls, {"properties": set_defaults})


_FillingValidator = _set_defaults(jsonschema.Draft202012Validator)


def _allowed_keys(schema: dict[str, Any]) -> set[str]:
    """Keys a mapping schema names: its properties and those of the schema file it ``$ref``s."""
    keys = set(schema.get("properties", {}))
    ref = schema.get("$ref")
    if isinstance(ref, str) and not ref.startswith("#"):
        keys |= _allowed_keys(load_schema(ref))
    return keys


def _key_of(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    return path or "<top level>"


def validate(instance: dict[str, Any], schema_name: str = TOP_SCHEMA) -> dict[str, Any]:
    """Validate ``instance`` in place against a schema, filling defaults; return it.

    Raises:
        ConfigError: naming the dotted key of the first problem found.
    """
    registry: Registry = Registry(retrieve=_retrieve)
    validator = _FillingValidator(load_schema(schema_name), registry=registry)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        hint = ""
        if error.validator in ("additionalProperties", "unevaluatedProperties"):
            hint = f" Allowed keys here: {', '.join(sorted(_allowed_keys(error.schema)))}."
        raise ConfigError(f"invalid config at '{_key_of(error)}': {error.message}.{hint}")
    return instance


def resolve_config(raw: dict[str, Any]) -> dict[str, Any]:
    """Return a validated deep copy of ``raw`` with every default filled in.

    ``vae.arch.channels: null`` becomes the default widths of ``data.image_size``
    (:func:`fill_image_size_defaults`). ``results_dir`` is normalised once here (``results/`` and ``./results`` become
    ``results``), so every output path built from it matches Snakemake's own paths.

    Raises:
        ConfigError: a schema violation, or a ``results_dir`` that names no folder.
    """
    cfg = validate(copy.deepcopy(raw if raw is not None else {}))
    cfg["results_dir"] = normalise_results_dir(cfg["results_dir"])
    fill_image_size_defaults(cfg)
    return cfg


def fill_image_size_defaults(cfg: dict[str, Any]) -> None:
    """Fill ``vae.arch.channels: null`` with the default of ``data.image_size`` (in place), so
    every rule, hash and bundle sees the widths (at 64 exactly the widths of before)."""
    from multibeta.core.image_size import default_channels

    arch = cfg.get("vae", {}).get("arch", {})
    if arch.get("channels") is None and "data" in cfg:
        arch["channels"] = list(default_channels(cfg["data"]["image_size"]))


def normalise_results_dir(value: str) -> str:
    """``os.path.normpath`` of ``results_dir``; refuses '' and '.' (outputs must get a folder)."""
    path = os.path.normpath(value.strip()) if value.strip() else ""
    if path in ("", "."):
        raise ConfigError(
            f"invalid config at 'results_dir': {value!r} — must name a folder for the outputs "
            "(relative to the working directory, or absolute). Use e.g. results_dir: results."
        )
    return path


def section_defaults(section: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """A validated, fully defaulted config section (for tests and notebooks).

    ``overrides`` are merged over the section (nested dicts merged key by key).
    """
    instance = deep_merge({}, overrides or {})
    return validate(instance, f"{section}.schema.yaml")


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A new dict: ``base`` with ``override`` merged in recursively (lists replaced)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML config file; errors name the file and, for syntax errors, line and column.

    Snakemake reports a broken ``--configfile`` without its name or line; ``make run`` and
    ``make dry-run`` read the file with this first (``python -m multibeta.workflow.config F``).

    Raises:
        ConfigError: missing file, YAML syntax error, empty file, or a top level that is not a
            mapping of sections.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}{where}: not valid YAML ({problem}). Check indentation "
                          "(spaces, not tabs) and brackets there.") from None
    if raw is None:
        raise ConfigError(f"{path} is empty: give at least `experiment: <name>`, or leave out "
                          "--configfile to use config.yaml.")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config sections "
                          f"(experiment:, data:, vae:, ...), not a {type(raw).__name__}.")
    return raw


def main(argv: list[str] | None = None) -> int:
    """``python -m multibeta.workflow.config FILE...``: check config files before a run."""
    import argparse
    import sys

    from multibeta.workflow.experiments import expand_experiments

    parser = argparse.ArgumentParser(description="Check pipeline config files (YAML, schema, cross-key rules).")
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    status = 0
    for path in args.files:
        try:
            experiments = expand_experiments(load_config_file(path))
        except ConfigError as exc:
            message = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            print(f"error: {message}", file=sys.stderr)
            status = 1
        else:
            print(f"{path}: valid ({len(experiments)} experiment(s): {', '.join(experiments)})")
    return status


if __name__ == "__main__":
    # Run the imported module's main, so that ConfigError is the class the other modules raise.
    from multibeta.workflow.config import main as _main

    raise SystemExit(_main())

