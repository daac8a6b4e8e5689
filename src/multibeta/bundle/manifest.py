"""The bundle manifest: format version, file hashes, versions; and its verification.

``manifest.json`` lists every other file of the bundle with its SHA-256 and size. A bundle is
accepted only when its format version is one this code reads, every listed file is present
with the recorded hash, and no unlisted file sits beside them (a stray file would be silently
ignored otherwise). Package versions that differ from the running ones are reported, not
refused: results may differ in the last digits, the models still load.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from multibeta.utils.io import file_sha256

#: Version of the bundle layout; a bundle of another version is refused with its number.
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
#: Files that are not part of a bundle: the manifest itself and the marker Snakemake puts in a
#: directory() output.
NOT_LISTED = frozenset({MANIFEST, ".snakemake_timestamp"})
#: Versions whose difference from the running ones is worth a warning when loading.
COMPARED_VERSIONS = ("multibeta", "torch", "numpy")


class BundleError(RuntimeError):
    """A bundle is missing, damaged, of another format version, or does not fit the request."""


def bundle_files(root: Path) -> list[str]:
    """Sorted relative paths of every file under ``root`` but :data:`NOT_LISTED` (no hashing)."""
    files = (p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return sorted(rel for rel in files if rel not in NOT_LISTED)


def file_entries(root: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {"sha256", "bytes"}}`` of every file under ``root`` but the manifest."""
    return {rel: {"sha256": file_sha256(root / rel), "bytes": (root / rel).stat().st_size}
            for rel in bundle_files(root)}


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """The manifest of the bundle folder ``root``.

    Raises:
        BundleError: no folder, no manifest, unreadable JSON, or another format version.
    """
    root = Path(root)
    if not root.is_dir():
        raise BundleError(f"no bundle at {root}: expected a folder written by rule export_bundle "
                          "(results/<experiment>/bundle).")
    path = root / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{path} is missing: {root} is not a bundle, or its export was "
                          "interrupted. Rerun rule export_bundle.") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path} is unreadable ({exc}); rerun rule export_bundle.") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{path} is not a bundle manifest (a JSON object); rerun rule export_bundle.")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        recorded = (manifest.get("versions") or {}).get("multibeta")
        raise BundleError(
            f"{path}: bundle format version {version!r}, but this multibeta reads version "
            f"{FORMAT_VERSION}. Export the bundle again with this version, or install the "
            f"multibeta version recorded in the manifest ({recorded})."
        )
    return manifest


def verify_files(root: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Check every file against the manifest.

    Raises:
        BundleError: naming each missing, altered or unlisted file.
    """
    root = Path(root)
    listed: dict[str, dict[str, Any]] = manifest.get("files", {})
    problems = []
    for rel, entry in sorted(listed.items()):
        path = root / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif path.stat().st_size != entry["bytes"]:
            problems.append(f"{rel}: {path.stat().st_size} bytes, the manifest says {entry['bytes']}")
        elif file_sha256(path) != entry["sha256"]:
            problems.append(f"{rel}: SHA-256 differs from the manifest (the file was altered)")
    extra = sorted(set(bundle_files(root)) - set(listed))
    problems += [f"{rel}: not listed in the manifest" for rel in extra]
    if problems:
        raise BundleError(f"bundle {root} failed its integrity check:\n  - " + "\n  - ".join(problems)
                          + "\nExport it again (rule export_bundle) or copy it again in full.")



def version_differences(recorded: dict[str, Any], running: dict[str, Any]) -> list[str]:
    """One line per package of :data:`COMPARED_VERSIONS` whose version differs."""
    return [f"{name}: bundle written with {recorded.get(name)}, running {running.get(name)}"
            for name in COMPARED_VERSIONS if recorded.get(name) != running.get(name)]
