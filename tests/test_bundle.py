"""Bundle manifests: every file hashed, a damaged or foreign bundle refused with its file named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from multibeta.bundle.manifest import (
    FORMAT_VERSION,
    MANIFEST,
    BundleError,
    file_entries,
    read_manifest,
    verify_files,
    version_differences,
)


def _bundle(root: Path) -> dict:
    (root / "denoisers").mkdir(parents=True)
    (root / "vae.pt").write_bytes(b"vae weights")
    (root / "denoisers" / "multibeta.pt").write_bytes(b"denoiser weights")
    manifest = {"format_version": FORMAT_VERSION, "files": file_entries(root),
                "versions": {"multibeta": "0.1.0", "torch": "2.14.1", "numpy": "2.4.6"}}
    (root / MANIFEST).write_text(json.dumps(manifest))
    return manifest


def test_a_complete_bundle_passes(tmp_path: Path) -> None:
    manifest = _bundle(tmp_path)
    assert set(manifest["files"]) == {"vae.pt", "denoisers/multibeta.pt"}
    verify_files(tmp_path, read_manifest(tmp_path))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda r: (r / "vae.pt").write_bytes(b"vae weightz"), r"vae\.pt: SHA-256 differs"),
        (lambda r: (r / "vae.pt").write_bytes(b"short"), r"vae\.pt: 5 bytes, the manifest says 11"),
        (lambda r: (r / "denoisers" / "multibeta.pt").unlink(), r"denoisers/multibeta\.pt: missing"),
        (lambda r: (r / "notes.txt").write_text("x"), r"notes\.txt: not listed in the manifest"),
    ],
)
def test_damage_is_named(tmp_path: Path, damage, message: str) -> None:
    _bundle(tmp_path)
    damage(tmp_path)
    with pytest.raises(BundleError, match=message):
        verify_files(tmp_path, read_manifest(tmp_path))


def test_missing_manifest_or_other_format_version(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no bundle at"):
        read_manifest(tmp_path / "nowhere")
    manifest = _bundle(tmp_path)
    (tmp_path / MANIFEST).unlink()
    with pytest.raises(BundleError, match=r"manifest\.json is missing"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(BundleError, match=f"format version 99.*reads version {FORMAT_VERSION}"):
        read_manifest(tmp_path)


def test_version_differences_are_listed() -> None:
    recorded = {"multibeta": "0.1.0", "torch": "2.14.1", "numpy": "2.4.6"}
    assert version_differences(recorded, dict(recorded)) == []
    assert version_differences(recorded, {**recorded, "torch": "2.15.0"}) == [
        "torch: bundle written with 2.14.1, running 2.15.0"]
