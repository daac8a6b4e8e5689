"""Open a bundle: check it, then load its models and latent-space tables.

Opening a bundle trusts nothing in it: the manifest's names must stay inside the folder and
name files of the format (:func:`~multibeta.bundle.manifest.check_layout`), every file must
have its recorded SHA-256, and every model or table is a safetensors file with a JSON record
(:mod:`multibeta.utils.tensorfile`) whose header and contents are checked before use. Nothing
is unpickled, imported or executed; each refusal is a :class:`BundleError` naming the bundle,
the file and the reason.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
import yaml

from multibeta.bundle.layout import (
    CARD_FILE, CONFIG_FILE, DIRECTIONS_FILE, LATENT_SPACE_FILE, NAME, VAE_FILE, denoiser_file,
)
from multibeta.bundle.manifest import (
    BundleError, check_layout, read_manifest, verify_files, version_differences,
)
from multibeta.models.loading import DenoiserVAEMismatchError, check_denoiser_vae, load_denoiser
from multibeta.models.vae import MultiBetaVAE, load_vae
from multibeta.sampling.samplers import GaussianPrior
from multibeta.utils.checkpoint import CheckpointError
from multibeta.utils.tensorfile import TensorFileError, read_header, read_tensor_file
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
        """Read the manifest, check the layout (always) and (``verify``) every file's SHA-256,
        then check every tensor file's header and read the latent space and the directions.

        Raises:
            BundleError: no bundle, another format version, a name outside the folder, a
                symlink, an oversized, missing, altered or unlisted file, or a malformed
                tensor file (each named).
        """
        root = Path(path)
        manifest = read_manifest(root)
        if verify:
            verify_files(root, manifest)
        else:
            check_layout(root, manifest)
        bundle = cls(root=root, manifest=manifest)
        for rel in sorted(manifest["files"]):
            if rel.endswith(".safetensors"):
                bundle._check(rel, read_header)
        bundle.latent_space, bundle.directions  # noqa: B018 - read and checked now, not at first use
        bundle.version_warnings = version_differences(manifest.get("versions", {}), collect_versions())
        for line in bundle.version_warnings:
            logger.warning("bundle %s: %s (results may differ in the last digits)", root, line)
        return bundle

    def _refuse(self, rel: str, reason: str) -> BundleError:
        return BundleError(f"bundle {self.root}: {rel} is refused: {reason}. Nothing from it was used; "
                           "export the bundle again (rule export_bundle).")

    def _check(self, rel: str, read: Any) -> Any:
        """``read(root / rel)``, with a malformed tensor file refused by name."""
        try:
            return read(self.root / rel)
        except TensorFileError as exc:
            raise self._refuse(rel, exc.reason) from exc

    def _record(self, rel: str, kind: str) -> dict[str, Any]:
        """The tensor file ``rel``, which must be a record of ``kind``."""
        record = self._check(rel, read_tensor_file)
        if record.get("kind") != kind:
            raise self._refuse(rel, f"it records kind {record.get('kind')!r}, expected {kind!r}")
        return record

    @property
    def experiment(self) -> str:
        return str(self.manifest.get("experiment"))

    @property
    def variants(self) -> list[str]:
        """The denoiser variants the bundle holds (``multibeta``, ``noise_only``, ``standard_ldm``)."""
        return list(self.manifest.get("variants", []))

    @cached_property
    def config(self) -> dict[str, Any]:
        """The experiment's resolved config (``yaml.safe_load``: plain data only)."""
        try:
            config = yaml.safe_load((self.root / CONFIG_FILE).read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise self._refuse(CONFIG_FILE, f"unreadable ({exc})") from exc
        if not isinstance(config, dict):
            raise self._refuse(CONFIG_FILE, "not a YAML mapping")
        return config

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
        return self.root / denoiser_file(variant)

    def load_denoiser(self, variant: str, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
        """The EMA denoiser of ``variant`` (eval mode) and its checkpoint dict.

        Raises:
            BundleError: no such variant, or a denoiser trained on the latents of another VAE
                than the bundle's (the message names the file).
        """
        path = self.denoiser_path(variant)
        rel = denoiser_file(variant)
        try:
            model, checkpoint = load_denoiser(path, map_location=device)
        except CheckpointError as exc:
            raise self._refuse(rel, str(exc)) from exc
        if checkpoint.get("variant") != variant:
            raise self._refuse(rel, f"it holds the {checkpoint.get('variant')!r} denoiser, not {variant!r}")
        try:
            check_denoiser_vae(checkpoint, self.manifest["files"][VAE_FILE]["sha256"])
        except DenoiserVAEMismatchError as exc:
            raise BundleError(f"bundle {self.root}: {rel} does not belong to its {VAE_FILE}: {exc}") from exc
        return model, checkpoint

    def load_vae(self, device: torch.device | str = "cpu") -> MultiBetaVAE:
        """The multi-β VAE (EMA weights, eval mode, no gradients)."""
        try:
            model, state = load_vae(self.vae_path, map_location=device)
        except CheckpointError as exc:
            raise self._refuse(VAE_FILE, str(exc)) from exc
        arch = {"image_size": 64, **state["arch"]}  # a VAE without image_size is a 64x64 one
        for key in ("latent_dim", "image_channels", "image_size"):
            if key in self.manifest and arch.get(key) != self.manifest[key]:
                raise self._refuse(VAE_FILE, f"its {key} is {arch.get(key)}, the manifest says {self.manifest[key]}")
        return model.requires_grad_(False)

    @cached_property
    def latent_space(self) -> dict[str, Any]:
        """σ_t table, cached levels and the fitted start distribution (see ``export.latent_space``)."""
        space = self._record(LATENT_SPACE_FILE, "latent_space")
        d = self.manifest.get("latent_dim")
        vectors = {"schedule_t": None, "schedule_sigma": None, "level_t": None, "level_sigma": None,
                   "level_beta": None, "prior_mean": d}
        per_dimension = ("schedule_sigma", "level_sigma")  # [M, d] / [K, d] for a per-dimension σ
        for key, size in vectors.items():
            value = space.get(key)
            table = (key in per_dimension and isinstance(value, torch.Tensor) and value.ndim == 2
                     and value.shape[1] == d)
            if not (isinstance(value, torch.Tensor) and (value.ndim == 1 or table) and value.is_floating_point()
                    and (size is None or len(value) == size)):
                raise self._refuse(LATENT_SPACE_FILE, f"{key} is not a float vector" + (f" of {size}" if size else "")
                                   + (f" (or a [n, {d}] table)" if key in per_dimension else ""))
        tril = space.get("prior_scale_tril")
        if not (isinstance(tril, torch.Tensor) and tril.is_floating_point() and tuple(tril.shape) == (d, d)):
            raise self._refuse(LATENT_SPACE_FILE, f"prior_scale_tril is not a float [{d}, {d}] matrix")
        if len(space["schedule_t"]) != len(space["schedule_sigma"]) or len(space["schedule_t"]) < 2:
            raise self._refuse(LATENT_SPACE_FILE, "schedule_t and schedule_sigma differ in length (or hold < 2 points)")
        if not isinstance(space.get("sigma_1"), (int, float)):
            raise self._refuse(LATENT_SPACE_FILE, "sigma_1 is not a number")
        return space

    def prior(self) -> GaussianPrior:
        """The fitted start distribution of z_1 that the pipeline's ``prior: fitted`` runs use."""
        space = self.latent_space
        return GaussianPrior(mean=space["prior_mean"], scale_tril=space["prior_scale_tril"])

    @cached_property
    def directions(self) -> dict[str, dict[str, Any]]:
        """Edit directions by family: ``{family: {"names", "labels", "vectors" [K, d], "stds" [K],
        "t_b"}}`` (empty when the bundle has none)."""
        if DIRECTIONS_FILE not in self.manifest["files"]:
            return {}
        families = self._record(DIRECTIONS_FILE, "directions").get("families")
        if not isinstance(families, dict):
            raise self._refuse(DIRECTIONS_FILE, "it holds no 'families' table")
        d = self.manifest.get("latent_dim")
        for family, entry in families.items():
            if not NAME.fullmatch(family) or not isinstance(entry, dict):
                raise self._refuse(DIRECTIONS_FILE, f"family {family!r} is not a name with a table")
            names, labels = entry.get("names"), entry.get("labels")
            vectors, stds = entry.get("vectors"), entry.get("stds")
            ok = (isinstance(names, list) and isinstance(labels, list)
                  and all(isinstance(x, str) for x in names + labels)
                  and isinstance(vectors, torch.Tensor) and vectors.is_floating_point()
                  and tuple(vectors.shape) == (len(names), d) and isinstance(stds, torch.Tensor)
                  and stds.is_floating_point() and tuple(stds.shape) == (len(names),)
                  and isinstance(entry.get("t_b"), (int, float)))
            if not ok:
                raise self._refuse(DIRECTIONS_FILE, f"family {family!r} is not names [K], labels, "
                                   f"vectors [K, {d}], stds [K] and t_b")
        return families

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

