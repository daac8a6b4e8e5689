"""The bundle manifest: format version, file hashes, versions; and its verification.

``manifest.json`` lists every other file of the bundle with its SHA-256 and size. A bundle is
accepted only when

- its format version is :data:`~multibeta.bundle.layout.FORMAT_VERSION` (version 1, which held
  pickled checkpoints, is refused with the command that converts it);
- every listed name is a relative path inside the folder (no absolute path, no ``..``, nothing
  that resolves elsewhere through a symlink), is one of the files the format defines
  (:mod:`.layout`), and is no larger than the bound of its kind (checked before hashing);
- there is no symlink anywhere in the folder and no unlisted file beside the listed ones;
- (``verify``) every listed file has the recorded size and SHA-256.

Every refusal is a :class:`BundleError` that names the bundle, each file and the reason.
Package versions that differ from the running ones are reported, not refused: results may
differ in the last digits, the models still load.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

from multibeta.bundle.layout import (
    FORMAT_VERSION, MANIFEST, MANIFEST_MAX_BYTES, NAME, PICKLE_FORMAT_VERSION, file_kind, required_files,
)
from multibeta.utils.io import file_sha256

#: Files that are not part of a bundle: the manifest itself and the marker Snakemake puts in a
#: directory() output.
NOT_LISTED = frozenset({MANIFEST, ".snakemake_timestamp"})
#: Versions whose difference from the running ones is worth a warning when loading.
COMPARED_VERSIONS = ("multibeta", "torch", "numpy")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class BundleError(RuntimeError):
    """A bundle is missing, damaged, unsafe, of another format version, or does not fit the request."""


def convert_command(root: str | os.PathLike) -> str:
    """The one command that converts a format-1 bundle at ``root``."""
    root = Path(root)
    return f"multibeta convert-bundle {root} {root.with_name(root.name + '-v2')} --trust-pickle"


def bundle_files(root: Path) -> list[str]:
    """Sorted relative paths of every file under ``root`` but :data:`NOT_LISTED` (no hashing,
    symlinks not followed)."""
    found = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            rel = Path(folder, name).relative_to(root).as_posix()
            if rel not in NOT_LISTED:
                found.append(rel)
    return sorted(found)


def file_entries(root: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {"sha256", "bytes"}}`` of every file under ``root`` but the manifest."""
    return {rel: {"sha256": file_sha256(root / rel), "bytes": (root / rel).stat().st_size}
            for rel in bundle_files(root)}


def load_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """The manifest of ``root`` as JSON, of any format version (see :func:`read_manifest`).

    Raises:
        BundleError: no folder, no manifest, a symlinked or oversized manifest, unreadable JSON,
            or a ``files`` table that is not ``{name: {"sha256", "bytes"}}``.
    """
    root = Path(root)
    if not root.is_dir():
        raise BundleError(f"no bundle at {root}: expected a folder written by rule export_bundle "
                          "(results/<experiment>/bundle).")
    path = root / MANIFEST
    if path.is_symlink():
        raise BundleError(f"bundle {root}: {MANIFEST} is a symlink; a bundle's files must lie in its folder.")
    try:
        size = path.stat().st_size
        if size > MANIFEST_MAX_BYTES:
            raise BundleError(f"bundle {root}: {MANIFEST} is {size} bytes, over the format's bound of "
                              f"{MANIFEST_MAX_BYTES} for a manifest; it is not read.")
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{path} is missing: {root} is not a bundle, or its export was "
                          "interrupted. Rerun rule export_bundle.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"bundle {root}: {MANIFEST} is unreadable ({exc}); rerun rule export_bundle.") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"bundle {root}: {MANIFEST} is not a bundle manifest (a JSON object); "
                          "rerun rule export_bundle.")
    files = manifest.get("files", {})
    bad = [] if isinstance(files, dict) else [f"'files' is a {type(files).__name__}, not an object"]
    for rel, entry in (files.items() if isinstance(files, dict) else []):
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                and _SHA256.fullmatch(entry["sha256"]) and type(entry.get("bytes")) is int
                and entry["bytes"] >= 0):
            bad.append(f"{rel}: its entry is not {{\"sha256\": 64 hex digits, \"bytes\": a size}}")
    for key in ("latent_dim", "image_channels", "image_size"):
        if key in manifest and not (type(manifest[key]) is int and manifest[key] > 0):
            bad.append(f"'{key}' {manifest[key]!r} is not a positive integer")
    variants = manifest.get("variants", [])
    if not isinstance(variants, list) or not all(isinstance(v, str) and NAME.fullmatch(v) for v in variants):
        bad.append(f"'variants' {variants!r} is not a list of variant names")
    if bad:
        raise BundleError(f"bundle {root}: {MANIFEST} is malformed:\n  - " + "\n  - ".join(bad)
                          + "\nExport the bundle again (rule export_bundle).")
    return manifest


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """The manifest of the bundle folder ``root`` (format version :data:`FORMAT_VERSION`).

    Raises:
        BundleError: as :func:`load_manifest`, or another format version: version 1 names the
            command that converts it, any other the version this code reads.
    """
    root = Path(root)
    manifest = load_manifest(root)
    path = root / MANIFEST
    version = manifest.get("format_version")
    if version == PICKLE_FORMAT_VERSION:
        raise BundleError(
            f"{path}: bundle format version {version}, which stores pickled checkpoints; this "
            f"multibeta reads version {FORMAT_VERSION} only (safetensors and JSON, no code), since "
            "unpickling a file from someone else can run code. If you trust where the bundle comes "
            f"from, convert it once with:\n  {convert_command(root)}"
        )
    if version != FORMAT_VERSION:
        recorded = (manifest.get("versions") or {}).get("multibeta")
        raise BundleError(
            f"{path}: bundle format version {version!r}, but this multibeta reads version "
            f"{FORMAT_VERSION}. Export the bundle again with this version, or install the "
            f"multibeta version recorded in the manifest ({recorded})."
        )
    return manifest


def path_problem(root: Path, rel: Any) -> str | None:
    """Why the manifest name ``rel`` does not stay inside the bundle ``root``, or None.

    Refused: a non-string, an absolute path, ``..`` / ``.`` / empty parts, backslashes, a
    symlink (the file or a folder above it), and a name that resolves outside ``root``.
    """
    if not isinstance(rel, str) or not rel or "\\" in rel or "\0" in rel:
        return "not a relative path with '/' separators"
    if rel.startswith("/") or PurePosixPath(rel).is_absolute() or re.match(r"[A-Za-z]:", rel):
        return "an absolute path; names must be relative to the bundle folder"
    parts = rel.split("/")
    if ".." in parts:
        return "contains '..'; names must stay inside the bundle folder"
    if any(p in ("", ".") for p in parts):
        return "contains an empty or '.' part"
    for depth in range(1, len(parts) + 1):
        if (root / Path(*parts[:depth])).is_symlink():
            what = "is a symlink" if depth == len(parts) else f"lies under the symlink {'/'.join(parts[:depth])}"
            return f"{what}; a bundle's files must lie in its folder"
    if not (root / rel).resolve().is_relative_to(root.resolve()):
        return "resolves outside the bundle folder"
    return None


def check_layout(root: str | os.PathLike, manifest: dict[str, Any], *, known_names: bool = True) -> None:
    """Every listed name stays inside ``root``, is a file of the format (``known_names``) within
    its size bound, the required files are listed, and no symlink or unlisted file is present.
    Nothing is hashed and nothing is read but the folder's listing and the files' sizes.

    Raises:
        BundleError: naming the bundle, each offending file and the reason.
    """
    root = Path(root)
    listed: dict[str, dict[str, Any]] = manifest.get("files", {})
    problems = []
    for rel, entry in sorted(listed.items()):
        problem = path_problem(root, rel)
        if problem is None and known_names:
            kind = file_kind(rel)
            if kind is None:
                problem = (f"not a file of bundle format {FORMAT_VERSION} (models are .safetensors; "
                           "see the bundles section of docs/USAGE.md)")
            else:
                name, bound = kind
                size = (root / rel).stat().st_size if (root / rel).is_file() else None
                if entry["bytes"] > bound or (size is not None and size > bound):
                    problem = (f"{max(entry['bytes'], size or 0)} bytes, over the format's bound of "
                               f"{bound} bytes for {name}; not hashed or read")
        if problem is not None:
            problems.append(f"{rel}: {problem}")
    for rel in bundle_files(root):
        if (root / rel).is_symlink():
            problems.append(f"{rel}: is a symlink; a bundle's files must lie in its folder")
        elif rel not in listed:
            problems.append(f"{rel}: not listed in the manifest")
    if known_names:
        missing = [rel for rel in required_files(list(manifest.get("variants", []))) if rel not in listed]
        problems += [f"{rel}: required, but not listed in the manifest" for rel in missing]
        for rel in listed:
            if path_problem(root, rel) is None and rel.startswith("denoisers/") and rel.removeprefix("denoisers/").removesuffix(".safetensors") \
                    not in manifest.get("variants", []):
                problems.append(f"{rel}: a denoiser of a variant the manifest does not list")
    if problems:
        raise BundleError(f"bundle {root} is refused:\n  - " + "\n  - ".join(sorted(set(problems)))
                          + "\nNothing in it was loaded. Export it again (rule export_bundle), or "
                          "copy it again in full.")


def verify_files(root: str | os.PathLike, manifest: dict[str, Any], *, known_names: bool = True) -> None:
    """Check the layout (:func:`check_layout`), then every file's size and SHA-256.

    Raises:
        BundleError: naming each unsafe, missing, altered or unlisted file.
    """
    root = Path(root)
    check_layout(root, manifest, known_names=known_names)
    problems = []
    for rel, entry in sorted(manifest.get("files", {}).items()):
        path = root / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif path.stat().st_size != entry["bytes"]:
            problems.append(f"{rel}: {path.stat().st_size} bytes, the manifest says {entry['bytes']}")
        elif file_sha256(path) != entry["sha256"]:
            problems.append(f"{rel}: SHA-256 differs from the manifest (the file was altered)")
    if problems:
        raise BundleError(f"bundle {root} failed its integrity check:\n  - " + "\n  - ".join(problems)
                          + "\nExport it again (rule export_bundle) or copy it again in full.")


def version_differences(recorded: dict[str, Any], running: dict[str, Any]) -> list[str]:
    """One line per package of :data:`COMPARED_VERSIONS` whose version differs."""
    return [f"{name}: bundle written with {recorded.get(name)}, running {running.get(name)}"
            for name in COMPARED_VERSIONS if recorded.get(name) != running.get(name)]
