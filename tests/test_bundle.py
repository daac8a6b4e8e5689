"""Bundle manifests: every file hashed, names kept inside the folder, a damaged, unsafe or
foreign bundle refused with its file named."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from multibeta.bundle import layout
from multibeta.bundle.manifest import (
    FORMAT_VERSION,
    MANIFEST,
    BundleError,
    check_layout,
    file_entries,
    read_manifest,
    verify_files,
    version_differences,
)
from multibeta.utils.io import file_sha256


def _bundle(root: Path) -> dict:
    (root / "denoisers").mkdir(parents=True)
    (root / "vae.safetensors").write_bytes(b"vae weights")
    (root / "latent_space.safetensors").write_bytes(b"tables")
    (root / "config.yaml").write_text("vae: {}\n")
    (root / "denoisers" / "multibeta.safetensors").write_bytes(b"denoiser weights")
    manifest = {"format_version": FORMAT_VERSION, "files": file_entries(root), "variants": ["multibeta"],
                "versions": {"multibeta": "0.1.0", "torch": "2.14.1", "numpy": "2.4.6"}}
    (root / MANIFEST).write_text(json.dumps(manifest))
    return manifest


def _relist(root: Path, manifest: dict, **files: dict) -> None:
    (root / MANIFEST).write_text(json.dumps({**manifest, "files": {**manifest["files"], **files}}))


def _entry(path: Path) -> dict:
    return {"sha256": file_sha256(path), "bytes": path.stat().st_size}


def test_a_complete_bundle_passes(tmp_path: Path) -> None:
    manifest = _bundle(tmp_path)
    assert set(manifest["files"]) == {"vae.safetensors", "latent_space.safetensors", "config.yaml",
                                      "denoisers/multibeta.safetensors"}
    verify_files(tmp_path, read_manifest(tmp_path))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda r: (r / "vae.safetensors").write_bytes(b"vae weightz"), r"vae\.safetensors: SHA-256 differs"),
        (lambda r: (r / "vae.safetensors").write_bytes(b"short"), r"vae\.safetensors: 5 bytes, the manifest says 11"),
        (lambda r: (r / "denoisers" / "multibeta.safetensors").unlink(), r"denoisers/multibeta\.safetensors: missing"),
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


def test_the_pickle_format_is_refused_with_its_conversion_command(tmp_path: Path) -> None:
    manifest = _bundle(tmp_path / "b")
    (tmp_path / "b" / MANIFEST).write_text(json.dumps({**manifest, "format_version": 1}))
    with pytest.raises(BundleError) as err:
        read_manifest(tmp_path / "b")
    assert "format version 1, which stores pickled checkpoints" in str(err.value)
    assert f"multibeta convert-bundle {tmp_path / 'b'} {tmp_path / 'b-v2'} --trust-pickle" in str(err.value)


def test_names_outside_the_folder_and_symlinks_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "b"
    manifest = _bundle(root)
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"pickled code")
    cases = {  # manifest name -> the reason named
        "../outside.bin": "contains '..'",
        "denoisers/../../outside.bin": "contains '..'",
        str(outside): "an absolute path",
        "./vae.safetensors": "contains an empty or '.' part",
    }
    for rel, reason in cases.items():
        _relist(root, manifest, **{rel: _entry(outside)})
        with pytest.raises(BundleError, match=rf"bundle {root} is refused:[\s\S]*{re.escape(rel)}: {re.escape(reason)}"):
            verify_files(root, read_manifest(root))
    (root / "training").mkdir()
    os.symlink(outside, root / "training" / "log.csv")  # a symlinked file, correctly hashed
    _relist(root, manifest, **{"training/log.csv": _entry(outside)})
    with pytest.raises(BundleError, match=r"training/log\.csv: is a symlink"):
        check_layout(root, read_manifest(root))
    (root / "training" / "log.csv").unlink()
    os.symlink(tmp_path, root / "training" / "up")  # a symlinked folder
    _relist(root, manifest, **{"training/up/outside.bin": _entry(outside)})
    with pytest.raises(BundleError, match=r"training/up/outside\.bin: lies under the symlink training/up"):
        check_layout(root, read_manifest(root))


def test_unknown_names_and_oversized_files_are_refused_before_hashing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = _bundle(tmp_path)
    (tmp_path / "vae.pt").write_bytes(b"pickle")
    _relist(tmp_path, manifest, **{"vae.pt": _entry(tmp_path / "vae.pt")})
    with pytest.raises(BundleError, match=r"vae\.pt: not a file of bundle format 2"):
        verify_files(tmp_path, read_manifest(tmp_path))
    (tmp_path / "vae.pt").unlink()
    _relist(tmp_path, manifest)
    kinds = tuple((k, p, 4 if k == "VAE weights" else b) for k, p, b in layout.FILE_KINDS)
    monkeypatch.setattr(layout, "FILE_KINDS", kinds)
    hashed = []
    monkeypatch.setattr("multibeta.bundle.manifest.file_sha256", lambda p: hashed.append(p))
    with pytest.raises(BundleError, match=r"vae\.safetensors: 11 bytes, over the format's bound of 4 bytes for VAE weights"):
        verify_files(tmp_path, read_manifest(tmp_path))
    assert hashed == []
    manifest["files"]["vae.safetensors"]["bytes"] = 1 << 40  # the manifest's own claim is bounded too
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"vae\.safetensors: 1099511627776 bytes, over"):
        check_layout(tmp_path, read_manifest(tmp_path))


def test_a_malformed_manifest_is_refused(tmp_path: Path) -> None:
    manifest = _bundle(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({**manifest, "variants": ["../x"]}))
    with pytest.raises(BundleError, match=r"'variants' \['\.\./x'\] is not a list of variant names"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({**manifest, "files": {"vae.safetensors": {"sha256": "x"}}}))
    with pytest.raises(BundleError, match=r"vae\.safetensors: its entry is not"):
        read_manifest(tmp_path)


def test_version_differences_are_listed() -> None:
    recorded = {"multibeta": "0.1.0", "torch": "2.14.1", "numpy": "2.4.6"}
    assert version_differences(recorded, dict(recorded)) == []
    assert version_differences(recorded, {**recorded, "torch": "2.15.0"}) == [
        "torch: bundle written with 2.14.1, running 2.15.0"]
