"""Pretrained weights (Inception for FID/KID, AlexNet for LPIPS): sources, fetching, finding them offline.

Every pretrained file a metric can use is listed in :data:`PRETRAINED_FILES` with its
download URLs and the SHA-256 prefix that its file name carries (the torch.hub
convention). Rule ``fetch_weights`` calls :func:`fetch_weights` once, on a machine with
network access, to put all of them in one folder (``metrics.weights_dir``); offline
machines then point ``metrics.inception_weights`` / ``metrics.lpips_weights`` at those
files. :func:`resolve_weights` is what the metrics call: it returns a local file or stops
with one error naming the config key and the fetch rule.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch

from multibeta.utils.io import atomic_path

logger = logging.getLogger(__name__)

#: Name of the Snakemake rule that downloads the weights (used in error messages).
FETCH_RULE = "fetch_weights"
#: Bytes per read while downloading.
_CHUNK_BYTES = 1 << 20


class WeightsError(RuntimeError):
    """A pretrained weights file is missing, cannot be downloaded, or is corrupt."""


@dataclass(frozen=True)
class PretrainedFile:
    """One pretrained file.

    Attributes:
        config_key: the config key that points at a local copy.
        filename: the file name (as the library that uses it names it in torch.hub's cache).
        urls: download URLs, tried in order.
        sha256_prefix: leading hex digits of the file's SHA-256 (from its name).
        description: what it is.
    """

    config_key: str
    filename: str
    urls: tuple[str, ...]
    sha256_prefix: str
    description: str


#: Inception-v3 ported from TF "2015-12-05" (the FID reference network), as torch-fidelity
#: 0.4 downloads it (``URL_INCEPTION_V3`` in ``torch_fidelity.feature_extractor_inceptionv3``).
#: pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` carries the same SHA-256 prefix
#: and is tried second.
INCEPTION = PretrainedFile(
    config_key="metrics.inception_weights",
    filename="weights-inception-2015-12-05-6726825d.pth",
    urls=(
        "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
        "weights-inception-2015-12-05-6726825d.pth",
        "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
        "pt_inception-2015-12-05-6726825d.pth",
    ),
    sha256_prefix="6726825d",
    description="Inception-v3 (TF 2015-12-05) for FID/KID (torch-fidelity)",
)

#: torchvision ``AlexNet_Weights.IMAGENET1K_V1``: the LPIPS backbone (lpips ships only its
#: linear heads).
LPIPS_ALEXNET = PretrainedFile(
    config_key="metrics.lpips_weights",
    filename="alexnet-owt-7be5be79.pth",
    urls=("https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",),
    sha256_prefix="7be5be79",
    description="torchvision AlexNet IMAGENET1K_V1, the LPIPS backbone",
)

#: Every pretrained file the pipeline can use, by short name.
PRETRAINED_FILES: dict[str, PretrainedFile] = {"inception": INCEPTION, "lpips_alexnet": LPIPS_ALEXNET}


def _fix_hint(spec: PretrainedFile) -> str:
    return (
        f"On a machine with network access run `snakemake {FETCH_RULE}` (it downloads every "
        f"pretrained file into metrics.weights_dir), copy the folder to this machine if needed, "
        f"and set {spec.config_key} to the {spec.filename} in it."
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def download(urls: Iterable[str], dest: str | os.PathLike, *, sha256_prefix: str | None, timeout_s: float) -> Path:
    """Download the first URL that works to ``dest`` atomically, checking the SHA-256 prefix.

    Raises:
        WeightsError: every URL failed (message lists each URL and why) or the checksum
            did not match.
    """
    dest = Path(dest)
    failures = []
    for url in urls:
        try:
            logger.info("downloading %s -> %s", url, dest)
            with urllib.request.urlopen(url, timeout=timeout_s) as response, atomic_path(dest) as tmp:
                digest = hashlib.sha256()
                with open(tmp, "wb") as fh:
                    while block := response.read(_CHUNK_BYTES):
                        digest.update(block)
                        fh.write(block)
                got = digest.hexdigest()
                if sha256_prefix and not got.startswith(sha256_prefix):
                    raise WeightsError(
                        f"checksum mismatch for {url}: SHA-256 {got} does not start with {sha256_prefix}"
                    )
            return dest
        except (urllib.error.URLError, OSError, ValueError, WeightsError) as exc:
            failures.append(f"{url}: {type(exc).__name__}: {exc}")
            logger.warning("download failed: %s", failures[-1])
    raise WeightsError(
        f"could not download {dest.name}:\n  - " + "\n  - ".join(failures)
        + "\nThe machine may be offline: download on a machine with network access instead."
    )


def weights_file(weights_dir: str | os.PathLike, name: str) -> Path:
    """Path of pretrained file ``name`` (a key of :data:`PRETRAINED_FILES`) in ``weights_dir``."""
    if name not in PRETRAINED_FILES:
        raise KeyError(f"unknown pretrained file {name!r}; known: {sorted(PRETRAINED_FILES)}")
    return Path(weights_dir) / PRETRAINED_FILES[name].filename


def fetch_weights(
    weights_dir: str | os.PathLike,
    *,
    names: Iterable[str] | None = None,
    timeout_s: float = 60.0,
    urls: dict[str, tuple[str, ...]] | None = None,
) -> dict[str, Path]:
    """Download every pretrained file (or ``names``) into ``weights_dir``; skip valid ones.

    A file already present is kept when its SHA-256 matches the expected prefix and
    downloaded again otherwise.

    Args:
        weights_dir: target folder (created).
        names: keys of :data:`PRETRAINED_FILES`; all when None.
        timeout_s: socket timeout per attempt (``metrics.download_timeout_s``).
        urls: replacement URL lists by name (mirrors; tests).

    Returns:
        name -> local path.

    Raises:
        WeightsError: a download failed (e.g. offline), naming the URLs and the fix.
    """
    out = {}
    for name in names if names is not None else PRETRAINED_FILES:
        spec = PRETRAINED_FILES[name]
        dest = weights_file(weights_dir, name)
        if dest.exists() and _sha256(dest).startswith(spec.sha256_prefix):
            logger.info("%s present: %s", name, dest)
        else:
            try:
                download((urls or {}).get(name, spec.urls), dest, sha256_prefix=spec.sha256_prefix,
                         timeout_s=timeout_s)
            except WeightsError as exc:
                raise WeightsError(
                    f"{exc}\n{spec.description} is needed for {spec.config_key}. Copy {spec.filename} "
                    f"(from {spec.urls[0]}) into {Path(weights_dir).resolve()} by hand, or rerun "
                    f"`snakemake {FETCH_RULE}` where the network is reachable."
                ) from exc
        out[name] = dest
    return out


def hub_cache_file(spec: PretrainedFile) -> Path:
    """Where torch.hub (and so torch-fidelity / torchvision) caches ``spec``: $TORCH_HOME/hub/checkpoints/."""
    return Path(torch.hub.get_dir()) / "checkpoints" / spec.filename


def resolve_weights(
    name: str, configured: str | os.PathLike | None, *, timeout_s: float = 60.0, allow_download: bool = True,
    config_key: str | None = None,
) -> Path:
    """A local file for pretrained file ``name``, or one clear error.

    Args:
        name: key of :data:`PRETRAINED_FILES` (``inception`` or ``lpips_alexnet``).
        configured: the config value (``metrics.inception_weights`` / ``metrics.lpips_weights``).
            A path must exist. None means the library default: torch.hub's cache file,
            downloaded there when missing (as torch-fidelity / torchvision would).
        timeout_s: download timeout.
        allow_download: when False, a missing default file is an error without trying the network.
        config_key: the config key to name in errors, when not the file's own metrics key (e.g.
            ``vae.lpips.weights_path`` for the training loss).

    Raises:
        WeightsError: naming the config key and rule ``fetch_weights``.
    """
    spec = PRETRAINED_FILES[name]
    if config_key is not None:
        spec = dataclasses.replace(spec, config_key=config_key)
    if configured is not None:
        path = Path(configured)
        if not path.is_file():
            raise WeightsError(
                f"{spec.description}: file {path} (config key {spec.config_key}) does not exist. "
                + _fix_hint(spec)
            )
        return path
    path = hub_cache_file(spec)
    if path.is_file():
        return path
    if not allow_download:
        raise WeightsError(
            f"{spec.description}: {spec.config_key} is null and {path} is missing. " + _fix_hint(spec)
        )
    try:
        return download(spec.urls, path, sha256_prefix=spec.sha256_prefix, timeout_s=timeout_s)
    except WeightsError as exc:
        raise WeightsError(
            f"{spec.description}: {spec.config_key} is null, so the default file was to be "
            f"downloaded to {path}, and that failed.\n{exc}\n" + _fix_hint(spec)
        ) from exc
