"""Open a bundle: check it, then load its models and latent-space tables on demand."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
import yaml

from multibeta.bundle.export import (
    CARD_FILE, CONFIG_FILE, DENOISER_DIR, DIRECTIONS_FILE, LATENT_SPACE_FILE, VAE_FILE,
)
from multibeta.bundle.manifest import BundleError, read_manifest, verify_files, version_differences
from multibeta.models.loading import DenoiserVAEMismatchError, check_denoiser_vae, load_denoiser
from multibeta.models.vae import MultiBetaVAE, load_vae
from multibeta.sampling.samplers import GaussianPrior
from multibeta.utils.versions import collect_versions

logger = logging.getLogger(__name__)


@dataclass
class Bundle:
    """A checked bundle folder (build with :meth:`open`).

    Attributes:
        root: the bundle folder.
        manifest: its ``manifest.json``.
        version_warnings: packages whose version differs from the one that wrote the bundle.
    """

    root: Path
    manifest: dict[str, Any]
    version_warnings: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, path: str | os.PathLike, *, verify: bool = True) -> "Bundle":
        """Read the manifest and (``verify``) check every file's SHA-256.

        Raises:
            BundleError: no bundle, another format version, or a missing/altered/unlisted file
                (each named).
        """
        root = Path(path)
        manifest = read_manifest(root)
        if verify:
            verify_files(root, manifest)
        warnings = version_differences(manifest.get("versions", {}), collect_versions())
        for line in warnings:
            logger.warning("bundle %s: %s (results may differ in the last digits)", root, line)
        return cls(root=root, manifest=manifest, version_warnings=warnings)

    @property
    def experiment(self) -> str:
        return str(self.manifest.get("experiment"))

    @property
    def variants(self) -> list[str]:
        """The denoiser variants the bundle holds (``multibeta``, ``noise_only``, ``standard_ldm``)."""
        return list(self.manifest.get("variants", []))

    @cached_property
    def config(self) -> dict[str, Any]:
        """The experiment's resolved config."""
        return yaml.safe_load((self.root / CONFIG_FILE).read_text())

    @property
    def model_card(self) -> str:
        return (self.root / CARD_FILE).read_text()

    @property
    def vae_path(self) -> Path:
        return self.root / VAE_FILE

    def denoiser_path(self, variant: str) -> Path:
        """The checkpoint of ``variant``.

        Raises:
            BundleError: the bundle has no such variant (naming the ones it has).
        """
        if variant not in self.variants:
            raise BundleError(f"bundle {self.root} has no {variant!r} denoiser; it holds "
                              f"{self.variants} (diffusion.variants of its experiment).")
        return self.root / DENOISER_DIR / f"{variant}.pt"

    def load_denoiser(self, variant: str, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
        """The EMA denoiser of ``variant`` (eval mode) and its checkpoint dict.

        Raises:
            BundleError: no such variant, or a denoiser trained on the latents of another VAE
                than the bundle's (the message names the file).
        """
        path = self.denoiser_path(variant)
        model, checkpoint = load_denoiser(path, map_location=device)
        try:
            check_denoiser_vae(checkpoint, self.manifest["files"][VAE_FILE]["sha256"])
        except DenoiserVAEMismatchError as exc:
            raise BundleError(f"bundle {self.root}: {path.relative_to(self.root)} does not belong "
                              f"to its {VAE_FILE}: {exc}") from exc
        return model, checkpoint

    def load_vae(self, device: torch.device | str = "cpu") -> MultiBetaVAE:
        """The multi-β VAE (EMA weights, eval mode, no gradients)."""
        model, _ = load_vae(self.vae_path, map_location=device)
        return model.requires_grad_(False)

    @cached_property
    def latent_space(self) -> dict[str, Any]:
        """σ_t table, cached levels and the fitted start distribution (see ``export.latent_space``)."""
        return torch.load(self.root / LATENT_SPACE_FILE, map_location="cpu", weights_only=True)

    def prior(self) -> GaussianPrior:
        """The fitted start distribution of z_1 that the pipeline's ``prior: fitted`` runs use."""
        space = self.latent_space
        return GaussianPrior(mean=space["prior_mean"], scale_tril=space["prior_scale_tril"])

    @cached_property
    def directions(self) -> dict[str, dict[str, Any]]:
        """Edit directions by family: ``{family: {"names", "labels", "vectors" [K, d], "stds" [K],
        "t_b"}}`` (empty when the bundle has none)."""
        path = self.root / DIRECTIONS_FILE
        if not path.exists():
            return {}
        return torch.load(path, map_location="cpu", weights_only=True)

    def direction_names(self) -> dict[str, list[str]]:
        """``{family: [name, ...]}`` of the directions a ``FAMILY:NAME`` spec can pick."""
        return {family: list(d["names"]) for family, d in self.directions.items()}

    def direction(self, spec: str) -> tuple[torch.Tensor, float]:
        """The unit direction ``[d]`` named ``FAMILY:NAME`` (``attribute:scale``, ``pca:0``) and
        the std of the latents along it (one edit unit).

        Raises:
            BundleError: unknown family or name (the message lists the known ones).
        """
        family, _, name = spec.partition(":")
        known = self.direction_names()
        if family not in known or name not in known[family]:
            listing = "; ".join(f"{f}: {', '.join(n)}" for f, n in known.items()) or "none"
            raise BundleError(f"bundle {self.root} has no direction {spec!r}; it has {listing}. "
                              "Give FAMILY:NAME, or a .pt/.npy file holding one vector.")
        d = self.directions[family]
        k = list(d["names"]).index(name)
        return d["vectors"][k].float(), float(d["stds"][k])

