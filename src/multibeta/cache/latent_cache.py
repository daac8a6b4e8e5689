"""The HDF5 latent cache: building it from the VAE (streaming) and reading it (:class:`LatentCache`).

File layout (see docs/ARCHITECTURE.md):

- ``mu`` ``[N, K, d]`` (``cache.dtype``): encoder means μ_{t_k}(x); optional ``delta``
  ``[N, K, d]``: exact ∂μ/∂t at the levels (``cache.delta: jvp``).
- ``t``, ``sigma``, ``beta`` float64 ``[K]``; ``schedule_t``, ``schedule_sigma`` float64 ``[M]``
  (``sigma`` ``[K, d]`` and ``schedule_sigma`` ``[M, d]`` for a VAE with ``vae.sigma_stagger`` > 0).
- ``index`` int64 ``[N]`` (row in the image dataset) and copies of the dataset's
  ``split``, ``factors``, ``factor_classes``, ``attributes`` rows when present.
- attrs: ``vae_sha256``, ``vae_config`` (JSON), ``levels`` (JSON), ``spacing``,
  ``delta_method``, ``format_version``, ``created_with`` (JSON of versions).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from multibeta.cache.config import CacheConfig
from multibeta.cache.delta import Encoder, jvp_delta
from multibeta.core.interpolation import interpolate_levels, segment, segment_slope
from multibeta.core.schedules import SigmaTable
from multibeta.data.hdf5 import H5File, H5FileKind, PerProcessFile, create_h5, read_dataset
from multibeta.utils.device import Runtime
from multibeta.utils.io import canonical_json, file_sha256
from multibeta.utils.versions import collect_versions

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
METADATA_KEYS = ("split", "factors", "factor_classes", "attributes")
SPLIT_CODES = {"train": 0, "val": 1, "validation": 1, "test": 2}
_REQUIRED = ("mu", "t", "sigma", "beta", "schedule_t", "schedule_sigma", "index")
_FIX = "Delete it and rerun the rule cache_latents (snakemake ... cache_latents) to rebuild it."


class CacheError(RuntimeError):
    """The latent cache is missing, unreadable or inconsistent."""


class VAEMismatchError(CacheError):
    """The cache (or a model trained on it) was built from a different VAE checkpoint."""


CACHE_FILE = H5FileKind(
    "latent cache", made_by="Run the rule cache_latents to build it.", fix=_FIX,
    error=CacheError, missing_error=CacheError,
)


# --------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------


def _chunk_rows(num_items: int, row_bytes: int, target_bytes: int = 1 << 16) -> int:
    """Rows per HDF5 chunk: about 64 KiB, so random row reads stay cheap."""
    return int(max(1, min(num_items, target_bytes // max(row_bytes, 1))))


@torch.no_grad()
def _tabulate(fn: Any, t: np.ndarray, device: torch.device, name: str) -> np.ndarray:
    values = fn(torch.as_tensor(t, dtype=torch.float32, device=device))
    values = values.detach().to(torch.float64).cpu().numpy().reshape(-1)
    if values.shape != t.shape or not np.all(np.isfinite(values)):
        raise CacheError(f"the VAE's {name}(t) returned a non-finite or misshaped table")
    return values


@torch.no_grad()
def _tabulate_sigma(encoder: Any, t: np.ndarray, device: torch.device) -> np.ndarray:
    """σ_t ``[M]`` of a shared schedule, or σ_{t,j} ``[M, d]`` of a per-dimension one."""
    if not getattr(encoder, "per_dimension_sigma", False):
        return _tabulate(encoder.sigma, t, device, "sigma")
    values = encoder.posterior_sigma(torch.as_tensor(t, dtype=torch.float32, device=device))
    values = values.detach().to(torch.float64).cpu().numpy()
    if values.ndim != 2 or values.shape[0] != len(t) or not np.all(np.isfinite(values)):
        raise CacheError("the VAE's posterior_sigma(t) returned a non-finite or misshaped table")
    return values


def _monotone(sigma: np.ndarray, name: str) -> np.ndarray:
    fixed = np.maximum.accumulate(sigma)
    gap = float(np.max(fixed - sigma))
    if gap > 1e-5:
        logger.warning(
            "%s is not monotone in t (largest dip %.3g); using its running max", name, gap
        )
    return fixed


def _encode_levels(
    encoder: Encoder, x: torch.Tensor, grid: np.ndarray, use_jvp: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """μ (and ∂μ/∂t with JVP) of a batch at every level: ``[B, K, d]`` float32 on the CPU."""
    mus, deltas = [], []
    for tk in grid:
        t = torch.full((x.shape[0],), float(tk), device=x.device)
        if use_jvp:
            mu, dmu = jvp_delta(encoder, x, t)
            deltas.append(dmu.detach().float())
        else:
            # fp32 even where training used 16-bit autocast: Δ targets are finite differences
            # of μ between close levels, and bf16 rounding (~0.4 %) of μ would swamp them.
            with torch.no_grad():
                mu = encoder.encode(x, t)
        mus.append(mu.detach().float())
    mu_all = torch.stack(mus, dim=1).cpu()
    delta_all = torch.stack(deltas, dim=1).cpu() if use_jvp else None
    return mu_all, delta_all


def build_cache(
    encoder: Encoder,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    out_path: str | os.PathLike,
    *,
    cfg: CacheConfig,
    num_items: int,
    runtime: Runtime,
    vae_sha256: str,
    vae_config: Mapping[str, Any],
    metadata: Mapping[str, np.ndarray] | None = None,
    metadata_attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Encode every image at every level and write the latent cache atomically.

    Batches are encoded and written one at a time into preallocated chunked datasets, so
    memory stays bounded by one batch. The file appears at ``out_path`` only when complete.

    Args:
        encoder: the trained VAE (or anything with ``encode(x, t)``, ``sigma(t)``,
            ``beta(t)``); put in eval mode here when it is an ``nn.Module``.
        batches: ``(images [B, C, H, W] float in [0, 1], dataset indices [B])`` covering
            ``num_items`` images in total.
        out_path: the cache file (``<exp>/cache/latents.h5``).
        cfg: the cache config (levels, dtype, Δ method, schedule points).
        num_items: number of images the batches yield (N).
        runtime: device (encoding runs in fp32 whatever the autocast: see ``_encode_levels``).
        vae_sha256: SHA-256 of the VAE checkpoint file, stored for :meth:`LatentCache.check_vae`.
        vae_config: the VAE's config, stored as JSON.
        metadata: per-dataset-row arrays (``split``, ``factors``, ``factor_classes``,
            ``attributes``; first axis = dataset rows); the rows of the cached images are copied.
        metadata_attrs: extra file attributes (e.g. ``factor_names``); non-strings as JSON.

    Returns:
        ``out_path`` as a ``Path``.
    """
    out_path = Path(out_path)
    grid = cfg.grid()
    num_levels = len(grid)
    dtype = np.dtype(cfg.dtype)
    use_jvp = cfg.delta == "jvp"
    device = runtime.device
    schedule_t = np.linspace(0.0, 1.0, cfg.schedule_points)
    was_training = bool(getattr(encoder, "training", False))
    if isinstance(encoder, torch.nn.Module):
        encoder.eval()
    try:
        sigma = _monotone(_tabulate_sigma(encoder, grid, device), "sigma_t at the levels")
        beta = _tabulate(encoder.beta, grid, device, "beta")
        schedule_sigma = _monotone(
            _tabulate_sigma(encoder, schedule_t, device), "the dense sigma_t table"
        )
        logger.info(
            "caching %d images at %d levels (t=%s), delta=%s, dtype=%s -> %s",
            num_items,
            num_levels,
            np.round(grid, 4).tolist(),
            cfg.delta,
            cfg.dtype,
            out_path,
        )
        with create_h5(out_path) as f:
            index = np.full(num_items, -1, dtype=np.int64)
            pos = 0
            mu_ds = delta_ds = None
            total = math.ceil(num_items / cfg.batch_size)
            for images, indices in tqdm(batches, total=total, desc="cache_latents", disable=None):
                x = images.to(device, non_blocking=runtime.pin_memory).float()
                mu, delta = _encode_levels(encoder, x, grid, use_jvp)
                if not torch.isfinite(mu).all() or (
                    delta is not None and not torch.isfinite(delta).all()
                ):
                    raise CacheError(
                        f"the VAE encoded non-finite latents for dataset rows "
                        f"{np.asarray(indices)[:5].tolist()}...; check the VAE checkpoint (retrain it)."
                    )
                b = mu.shape[0]
                if pos + b > num_items:
                    raise CacheError(f"the batches yield more than num_items={num_items} images")
                if mu_ds is None:
                    d = mu.shape[-1]
                    chunks = (
                        _chunk_rows(num_items, num_levels * d * dtype.itemsize),
                        num_levels,
                        d,
                    )
                    mu_ds = f.create_dataset(
                        "mu", (num_items, num_levels, d), dtype=dtype, chunks=chunks
                    )
                    if use_jvp:
                        delta_ds = f.create_dataset(
                            "delta", (num_items, num_levels, d), dtype=dtype, chunks=chunks
                        )
                mu_ds[pos : pos + b] = mu.numpy().astype(dtype)
                if delta_ds is not None and delta is not None:
                    delta_ds[pos : pos + b] = delta.numpy().astype(dtype)
                index[pos : pos + b] = np.asarray(torch.as_tensor(indices).cpu(), dtype=np.int64)
                pos += b
            if pos != num_items:
                raise CacheError(
                    f"the batches yielded {pos} images, expected num_items={num_items}"
                )
            f.create_dataset("index", data=index)
            f.create_dataset("t", data=grid)
            f.create_dataset("sigma", data=sigma)
            f.create_dataset("beta", data=beta)
            f.create_dataset("schedule_t", data=schedule_t)
            f.create_dataset("schedule_sigma", data=schedule_sigma)
            for key, arr in (metadata or {}).items():
                if arr is not None:
                    f.create_dataset(key, data=np.asarray(arr)[index])
            for key, value in (metadata_attrs or {}).items():
                f.attrs[key] = value if isinstance(value, (str, np.ndarray)) else json.dumps(value)
            f.attrs["vae_sha256"] = vae_sha256
            f.attrs["vae_config"] = canonical_json(dict(vae_config))
            f.attrs["levels"] = json.dumps(cfg.to_dict()["levels"])
            f.attrs["spacing"] = cfg.spacing
            f.attrs["delta_method"] = cfg.delta
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["created_with"] = canonical_json(collect_versions())
    finally:
        if isinstance(encoder, torch.nn.Module):
            encoder.train(was_training)
    logger.info("latent cache written: %s (%d items)", out_path, num_items)
    return out_path


def cache_latents(
    vae_path: str | os.PathLike,
    dataset_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    cfg: CacheConfig,
    runtime: Runtime,
) -> Path:
    """The rule cache_latents: encode every image of the dataset file with the trained VAE.

    Reads images in order in batches of ``cfg.batch_size`` (uint8 moved to the device, then
    converted), copies the dataset's split/factors/attributes rows and their names, and
    records the VAE checkpoint's SHA-256 and config. See :func:`build_cache`.
    """
    from multibeta.data.h5io import ImageDataset  # the data layer reads the image file
    from multibeta.models.vae import load_vae

    vae, checkpoint = load_vae(vae_path, map_location=runtime.device)
    dataset = ImageDataset(dataset_path)
    n = len(dataset)
    metadata: dict[str, np.ndarray] = {"split": dataset.split_codes()}
    for name in ("factors", "factor_classes", "attributes"):
        if name in dataset.metadata["optional"]:
            metadata[name] = getattr(dataset, name)()
    names = {
        k: dataset.metadata.get(k) for k in ("factor_names", "factor_sizes", "attribute_names")
    }
    attrs: dict[str, Any] = {k: v for k, v in names.items() if v is not None}
    attrs["dataset"] = str(dataset.metadata["attrs"].get("dataset"))

    def batches() -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, n, cfg.batch_size):
            pos = np.arange(start, min(start + cfg.batch_size, n))
            yield dataset.tensor_batch(pos, runtime.device), torch.from_numpy(dataset.rows[pos])

    return build_cache(
        vae,
        batches(),
        out_path,
        cfg=cfg,
        num_items=n,
        runtime=runtime,
        vae_sha256=file_sha256(vae_path),
        vae_config={"arch": checkpoint.get("arch", {}), "config": checkpoint.get("config", {})},
        metadata=metadata,
        metadata_attrs=attrs,
    )


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheStatistics:
    """Moments of the cached latents over a set of rows (float64).

    Attributes:
        mean: ``[K, d]`` mean of μ_{t_k} per dimension.
        var: ``[K, d]`` variance of μ_{t_k} per dimension.
        delta_rms: ``[d]`` root mean square of Δ_t per dimension, averaged over t ~ U[0, 1]
            (exact for finite differences, trapezoid rule between levels for JVP targets).
        count: number of rows.
        delta_rms_segment: ``[K − 1, d]`` root mean square of Δ per dimension at the midpoint
            of each segment between levels (the segment's slope for finite differences, the
            mean of its two ends' targets for JVP); the Δ scale of each noise level.
    """

    mean: np.ndarray
    var: np.ndarray
    delta_rms: np.ndarray
    count: int
    delta_rms_segment: np.ndarray


class LatentCache:
    """Reader of the latent cache; μ_t and Δ_t at any (item, t) by linear interpolation.

    Args:
        path: the cache file.
        in_memory: ``True`` loads mu (and delta) into memory as float32 tensors; ``False``
            reads rows from the file on demand; ``"auto"`` loads when it fits
            ``max_memory_bytes``.
        max_memory_bytes: the ``"auto"`` budget.

    Raises:
        CacheError: missing, unreadable or inconsistent file (the message names the rule
            cache_latents).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        in_memory: bool | Literal["auto"] = "auto",
        max_memory_bytes: int = 4 << 30,
    ) -> None:
        self.path = Path(path)
        self._file = PerProcessFile(self.path, CACHE_FILE, required=_REQUIRED)
        try:
            f = self._h5()
            self.t = np.asarray(f["t"][...], dtype=np.float64)
            self.sigma = np.asarray(f["sigma"][...], dtype=np.float64)
            self.beta = np.asarray(f["beta"][...], dtype=np.float64)
            self.schedule_t = np.asarray(f["schedule_t"][...], dtype=np.float64)
            self.schedule_sigma = np.asarray(f["schedule_sigma"][...], dtype=np.float64)
            self.index = np.asarray(f["index"][...], dtype=np.int64)
            self.attrs: dict[str, Any] = {k: _attr(v) for k, v in f.attrs.items()}
            self._metadata = {k: np.asarray(f[k][...]) for k in METADATA_KEYS if k in f}
            shape = f["mu"].shape
            self.has_delta = "delta" in f
            if self.has_delta and f["delta"].shape != shape:
                raise CacheError(f"latent cache {self.path}: delta and mu differ in shape. {_FIX}")
        except CacheError:
            self.close()
            raise
        except (OSError, KeyError, ValueError) as exc:
            self.close()
            raise CacheError(
                f"latent cache {self.path} is unreadable or corrupt ({type(exc).__name__}: {exc}). {_FIX}"
            ) from exc
        self.num_items, num_levels, self.latent_dim = (int(s) for s in shape)
        if num_levels != len(self.t) or len(self.index) != self.num_items:
            raise CacheError(f"latent cache {self.path}: inconsistent shapes. {_FIX}")
        self.delta_method: str = self.attrs.get("delta_method", "finite_difference")
        self._grid = torch.as_tensor(self.t)
        self._mu: torch.Tensor | None = None
        self._delta: torch.Tensor | None = None
        need = self.num_items * num_levels * self.latent_dim * 4 * (2 if self.has_delta else 1)
        load = need <= max_memory_bytes if in_memory == "auto" else bool(in_memory)
        if load:
            f = self._h5()
            self._mu = torch.from_numpy(self._read("mu", ...))
            if self.has_delta:
                self._delta = torch.from_numpy(self._read("delta", ...))
            self.close()
        logger.info(
            "latent cache %s: N=%d, K=%d, d=%d, delta=%s, %s",
            self.path,
            self.num_items,
            num_levels,
            self.latent_dim,
            self.delta_method,
            "in memory" if load else "chunked reads",
        )

    # -- file handling --------------------------------------------------------------------

    def _h5(self) -> H5File:
        """This process's read handle (reopened after fork or unpickling)."""
        return self._file.get()

    def _read(self, name: str, selection: Any) -> np.ndarray:
        """``file[name][selection]`` as float32; a damaged chunk raises a CacheError naming the fix."""
        data = read_dataset(self._h5()[name], selection, kind=CACHE_FILE, path=self.path)
        return np.asarray(data, dtype=np.float32)

    def close(self) -> None:
        """Close the file handle (in-memory data stays usable)."""
        self._file.close()

    @property
    def in_memory(self) -> bool:
        return self._mu is not None

    @property
    def num_levels(self) -> int:
        return len(self.t)

    @property
    def device(self) -> torch.device:
        return self._mu.device if self._mu is not None else torch.device("cpu")

    def to(self, device: torch.device | str) -> LatentCache:
        """Move the in-memory tensors to ``device`` (a no-op for chunked reads)."""
        if self._mu is not None:
            self._mu = self._mu.to(device)
            if self._delta is not None:
                self._delta = self._delta.to(device)
            self._grid = self._grid.to(device)
        return self

    # -- metadata and schedule ------------------------------------------------------------

    @property
    def vae_sha256(self) -> str:
        return str(self.attrs.get("vae_sha256", ""))

    def vae_config(self) -> dict[str, Any]:
        """The VAE config stored at build time."""
        return json.loads(self.attrs.get("vae_config", "{}"))

    def metadata(self, name: str) -> np.ndarray | None:
        """A copied dataset array (``split``, ``factors``, ``factor_classes``, ``attributes``) or None."""
        return self._metadata.get(name)

    def rows(self, split: Literal["train", "validation", "test", "all"] = "all") -> np.ndarray:
        """Cache rows of a split (all rows when the dataset had no split)."""
        split_codes = self._metadata.get("split")
        if split == "all":
            return np.arange(self.num_items)
        if split_codes is None:
            logger.warning("cache %s stores no split; using all %d rows", self.path, self.num_items)
            return np.arange(self.num_items)
        return np.flatnonzero(split_codes == SPLIT_CODES[split])

    @property
    def per_dimension_sigma(self) -> bool:
        """True when the VAE's σ differs between dimensions (``sigma`` ``[K, d]``, ``schedule_sigma`` ``[M, d]``)."""
        return self.schedule_sigma.ndim == 2

    @property
    def sigma_1(self) -> float | np.ndarray:
        """σ at the last level (t = 1): a float, or ``[d]`` for a per-dimension schedule."""
        return self.sigma[-1].copy() if self.per_dimension_sigma else float(self.sigma[-1])

    def sigma_table(self) -> SigmaTable:
        """σ_t of the VAE as a :class:`SigmaTable` over the dense schedule (per dimension when
        :attr:`per_dimension_sigma`)."""
        return SigmaTable(self.schedule_t, self.schedule_sigma)

    def sigma_at(self, t: torch.Tensor) -> torch.Tensor:
        """σ_t ``[B]`` (``[B, d]`` per dimension) by linear interpolation of the dense schedule."""
        return self.sigma_table().to(t.device)(t)

    def check_vae(self, sha256: str) -> None:
        """Raise :class:`VAEMismatchError` unless the cache was built from the VAE with this hash."""
        if self.vae_sha256 != sha256:
            raise VAEMismatchError(
                f"latent cache {self.path} was built from the VAE checkpoint with sha256 "
                f"{self.vae_sha256 or '<unknown>'}, but the VAE given has sha256 {sha256}. "
                "The cache is stale: rerun the rule cache_latents (delete the cache file to force it)."
            )

    # -- latents --------------------------------------------------------------------------

    def _gather(self, name: str, idx: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Rows ``[B, 2, d]`` float32 of ``name`` at levels k and k+1 of items ``idx``."""
        data = self._mu if name == "mu" else self._delta
        if data is not None:
            return data[idx[:, None], k[:, None] + torch.arange(2, device=k.device)]
        idx_np = idx.cpu().numpy()
        uniq, inverse = np.unique(idx_np, return_inverse=True)
        block = torch.from_numpy(self._read(name, uniq))
        inv = torch.from_numpy(inverse.reshape(-1))
        kc = k.cpu()
        pair = block[inv[:, None], kc[:, None] + torch.arange(2)]
        return pair.to(idx.device)

    def _lookup(self, idx: torch.Tensor | np.ndarray, t: torch.Tensor | np.ndarray) -> tuple:
        idx = torch.as_tensor(idx, dtype=torch.long, device=self.device if self.in_memory else None)
        t = torch.as_tensor(t, device=idx.device)
        if idx.ndim != 1 or t.shape != idx.shape:
            raise ValueError(
                f"idx and t must be 1-D of the same length, got {tuple(idx.shape)}, {tuple(t.shape)}"
            )
        k, w = segment(self._grid.to(idx.device), t)
        return idx, k, w

    def mu_at(self, idx: torch.Tensor | np.ndarray, t: torch.Tensor | np.ndarray) -> torch.Tensor:
        """μ_t(x_idx) ``[B, d]`` float32, linearly interpolated between levels (exact at levels)."""
        idx, k, w = self._lookup(idx, t)
        return interpolate_levels(self._gather("mu", idx, k), w)

    def mu_at_level(self, rows: np.ndarray, t: float) -> torch.Tensor:
        """μ_t of ``rows`` ``[B]`` at one level ``t`` (any t in [0, 1]) as float32 ``[B, d]`` on the CPU."""
        rows_t = torch.as_tensor(rows)
        return self.mu_at(rows_t, torch.full((len(rows_t),), float(t), dtype=torch.float64)).float().cpu()

    def delta_at(
        self, idx: torch.Tensor | np.ndarray, t: torch.Tensor | np.ndarray
    ) -> torch.Tensor:
        """Δ_t(x_idx) = dμ_t/dt ``[B, d]`` float32 (finite difference of the segment, or JVP interpolated)."""
        return self.mu_and_delta_at(idx, t)[1]

    def mu_and_delta_at(
        self, idx: torch.Tensor | np.ndarray, t: torch.Tensor | np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(μ_t [B, d], Δ_t [B, d])`` with one lookup."""
        idx, k, w = self._lookup(idx, t)
        pair = self._gather("mu", idx, k)
        mu = interpolate_levels(pair, w)
        if self.has_delta:
            delta = interpolate_levels(self._gather("delta", idx, k), w)
        else:
            delta = segment_slope(pair, self._grid.to(idx.device), k)
        return mu, delta

    def level(self, k: int) -> np.ndarray:
        """All items' μ at level k: ``[N, d]`` float32."""
        if not -self.num_levels <= k < self.num_levels:
            raise IndexError(f"level {k} out of range for K={self.num_levels}")
        if self._mu is not None:
            return self._mu[:, k].cpu().numpy()
        return self._read("mu", (slice(None), k))

    def block(self, start: int, stop: int, name: Literal["mu", "delta"] = "mu") -> np.ndarray:
        """Rows ``[stop − start, K, d]`` float32 of ``mu`` (or ``delta``)."""
        data = self._mu if name == "mu" else self._delta
        if data is not None:
            return data[start:stop].cpu().numpy()
        return self._read(name, slice(start, stop))

    def statistics(
        self, rows: np.ndarray | None = None, block_rows: int = 65536
    ) -> CacheStatistics:
        """Per-level moments of μ and the RMS of Δ over ``rows`` (all when None), streamed in blocks."""
        mask = np.zeros(self.num_items, dtype=bool)
        mask[np.arange(self.num_items) if rows is None else rows] = True
        count = int(mask.sum())
        if count == 0:
            raise CacheError(f"latent cache {self.path}: no rows to compute statistics over")
        h = np.diff(self.t)
        s1 = np.zeros((self.num_levels, self.latent_dim))
        s2 = np.zeros_like(s1)
        d2 = np.zeros(self.latent_dim)
        d2_segment = np.zeros((self.num_levels - 1, self.latent_dim))
        for start in range(0, self.num_items, block_rows):
            stop = min(start + block_rows, self.num_items)
            sel = mask[start:stop]
            if not sel.any():
                continue
            mu = self.block(start, stop).astype(np.float64)[sel]
            s1 += mu.sum(0)
            s2 += (mu**2).sum(0)
            if self.has_delta:
                delta = self.block(start, stop, "delta").astype(np.float64)[sel]
                sq = (delta**2).sum(0)  # [K, d]
                d2 += (0.5 * h[:, None] * (sq[:-1] + sq[1:])).sum(0)
                d2_segment += (0.25 * (delta[:, :-1] + delta[:, 1:]) ** 2).sum(0)
            else:
                slope = np.diff(mu, axis=1) / h[None, :, None]
                d2 += (h[None, :, None] * slope**2).sum((0, 1))
                d2_segment += (slope**2).sum(0)
        mean = s1 / count
        var = np.maximum(s2 / count - mean**2, 0.0)
        return CacheStatistics(
            mean=mean,
            var=var,
            delta_rms=np.sqrt(d2 / count),
            count=count,
            delta_rms_segment=np.sqrt(d2_segment / count),
        )


def _attr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value
