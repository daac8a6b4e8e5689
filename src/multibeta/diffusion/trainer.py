"""Training of the Stage-2 denoiser from the latent cache, with EMA, AMP and exact resume.

Outputs in ``out_dir`` (``results/<exp>/diffusion/<variant>/``):

- ``model.pt``: the final checkpoint (``kind="diffusion"``): raw and EMA weights, optimiser,
  step, RNG states, the variant, normalisation, the cache's ``vae_sha256``; read it with
  :func:`load_denoiser` (returns the EMA model, ready for sampling).
- ``train_log.csv``: step, loss, eps_loss, delta_loss, lr, grad_norm (means over ``log_every``
  steps).
- ``resume.pt`` while training: the same state every ``checkpoint_every`` steps; a rerun
  with the same config and cache resumes from it (bit-for-bit on CPU) and deletes it at the end.
  A non-finite loss stops training with :class:`NonFiniteLossError` and leaves the last
  good ``resume.pt`` in place.
"""

from __future__ import annotations

import copy
import csv
import io
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from multibeta.cache.latent_cache import CacheStatistics, LatentCache, VAEMismatchError
from multibeta.diffusion.config import DiffusionConfig
from multibeta.diffusion.process import (
    Batch,
    CosineProcess,
    MultiBetaProcess,
    sample_t,
    training_loss,
)
from multibeta.models.denoiser import LatentDenoiser, check_variant
from multibeta.utils.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from multibeta.utils.device import Runtime
from multibeta.utils.io import config_hash, write_text
from multibeta.utils.progress import ProgressLog
from multibeta.utils.seeding import rng_state, seed_everything, set_rng_state
from multibeta.utils.versions import collect_versions

logger = logging.getLogger(__name__)

LOG_COLUMNS = ("step", "loss", "eps_loss", "delta_loss", "lr", "grad_norm")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN/inf; the last good resume checkpoint is kept."""


def _floored(x: np.ndarray, rel: float = 1e-3) -> np.ndarray:
    """``x`` with entries below ``rel · max(x)`` raised to it (collapsed dims stay finite)."""
    floor = max(float(np.max(x)) * rel, 1e-12)
    return np.maximum(x, floor)


def normalisation_from_cache(
    cache: LatentCache, stats: CacheStatistics, variant: str
) -> dict[str, np.ndarray]:
    """The denoiser's normalisation buffers for ``variant`` (see :class:`LatentDenoiser`)."""
    if variant == "standard_ldm":
        return {
            "latent_mean": stats.mean[0],
            "latent_std": _floored(np.sqrt(stats.var[0])),
            "precond_t": np.array([0.0, 1.0]),
            "input_scale": np.ones(2),
        }
    second_moment = (stats.var + stats.mean**2).mean(axis=1)  # [K]
    norm = {
        "precond_t": cache.t,
        "input_scale": 1.0 / np.sqrt(second_moment + cache.sigma**2),
        "schedule_t": cache.schedule_t,
        "schedule_sigma": cache.schedule_sigma,
    }
    if variant == "multibeta":
        norm["delta_scale"] = _floored(stats.delta_rms)
    return norm


def build_denoiser(cfg: DiffusionConfig, *, variant: str, cache: LatentCache) -> LatentDenoiser:
    """A freshly initialised denoiser for ``variant`` sized for ``cache``."""
    ldm = variant == "standard_ldm"
    return LatentDenoiser(
        latent_dim=cache.latent_dim,
        width=cfg.width,
        depth=cfg.depth,
        time_embed_dim=cfg.time_embed_dim,
        variant=variant,  # type: ignore[arg-type]
        dropout=cfg.dropout,
        num_precond=2 if ldm else cache.num_levels,
        schedule_points=0 if ldm else len(cache.schedule_t),
    )


class DiffusionTrainer:
    """Trains one denoiser variant on a latent cache.

    Args:
        cfg: the diffusion config.
        variant: ``multibeta``, ``noise_only`` or ``standard_ldm``.
        cache: the latent cache (moved to the runtime device when in memory).
        out_dir: where model.pt, train_log.csv and resume.pt go.
        runtime: device, autocast and grad scaler.
    """

    def __init__(
        self,
        cfg: DiffusionConfig,
        *,
        variant: str,
        cache: LatentCache,
        out_dir: str | os.PathLike,
        runtime: Runtime,
    ) -> None:
        self.cfg = cfg
        self.variant = check_variant(variant)
        self.runtime = runtime
        self.device = runtime.device
        self.out_dir = Path(out_dir)
        self.model_path = self.out_dir / "model.pt"
        self.resume_path = self.out_dir / "resume.pt"
        self.log_path = self.out_dir / "train_log.csv"
        if cache.in_memory:
            cache.to(self.device)
        self.cache = cache

        rows = cache.rows(cfg.train_split)
        if len(rows) == 0:
            raise ValueError(
                f"no cache rows in split {cfg.train_split!r}; set diffusion.train_split: all"
            )
        stats = cache.statistics(rows)
        self.normalisation = normalisation_from_cache(cache, stats, variant)

        seed_everything(cfg.seed)
        self.model = build_denoiser(cfg, variant=variant, cache=cache)
        self.model.set_normalisation(**self.normalisation)
        self.model.to(self.device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        # fused kernels: ~11% faster per step than foreach on CPU for this small MLP
        # (benchmarks/results/stage_profile.md); other devices use foreach
        fused = self.device.type in ("cpu", "cuda")
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=cfg.lr,
            betas=cfg.adam_betas,
            weight_decay=cfg.weight_decay,
            fused=fused or None,
            foreach=None if fused else True,
        )
        self.scaler = runtime.grad_scaler()

        if variant == "standard_ldm":
            z0 = torch.from_numpy(cache.level(0)).to(self.device)
            self.process: MultiBetaProcess | CosineProcess = CosineProcess(
                self.model.normalize(z0), weighting=cfg.weighting, params=cfg.weighting_params
            )
            self.data_device = self.device
        else:
            self.process = MultiBetaProcess(
                cache,
                signal_var=stats.var.mean(axis=1),
                weighting=cfg.weighting,
                params=cfg.weighting_params,
                with_delta=variant == "multibeta",
            )
            self.data_device = cache.device
        self.rows = torch.as_tensor(rows, dtype=torch.long, device=self.data_device)
        self.generator = torch.Generator(device=self.data_device)
        self.generator.manual_seed(cfg.seed)

        self.step = 0
        self.log_rows: list[dict[str, float]] = []
        # running sums over the log window: loss, eps, delta, grad_norm, count
        self._acc = torch.zeros(5, dtype=torch.float64, device=self.device)
        # which of (eps_loss, delta_loss, loss) turned NaN/inf, and the first step it happened
        # (kept on the device: checked once per log window, not synchronised every step)
        self._bad = torch.zeros(3, dtype=torch.bool, device=self.device)
        self._first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        self._saved_step = 0
        self.fingerprint = config_hash(
            {
                "config": {
                    k: v
                    for k, v in cfg.to_dict().items()
                    if k not in ("variants", "checkpoint_every")
                },
                "variant": variant,
                "cache": {
                    "vae_sha256": cache.vae_sha256,
                    "shape": [cache.num_items, cache.num_levels, cache.latent_dim],
                    "t": cache.t.tolist(),
                    "delta": cache.delta_method,
                },
            }
        )

    # -- one step -------------------------------------------------------------------------

    def learning_rate(self, step: int) -> float:
        """Linear warm-up, then constant or cosine decay to 0 at ``cfg.steps``."""
        cfg = self.cfg
        warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0
        if cfg.lr_schedule == "cosine":
            progress = min(1.0, step / max(cfg.steps, 1))
            return cfg.lr * warm * 0.5 * (1.0 + math.cos(math.pi * progress))
        return cfg.lr * warm

    def sample_batch(self) -> Batch:
        """Random cache rows, times and noise (vectorised, from the trainer's generator)."""
        b, gen, dev = self.cfg.batch_size, self.generator, self.data_device
        idx = self.rows[torch.randint(len(self.rows), (b,), generator=gen, device=dev)]
        t = sample_t(b, self.cfg.t_sampling, gen, dev)
        eps = torch.randn(b, self.cache.latent_dim, generator=gen, device=dev)
        batch = self.process.training_batch(idx, t, eps)
        if self.data_device != self.device:
            batch = Batch(
                **{k: None if v is None else v.to(self.device) for k, v in vars(batch).items()}
            )
        return batch

    def train_step(self) -> None:
        """One optimiser step and EMA update; accumulates the log window."""
        lr = self.learning_rate(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        terms = training_loss(
            self.model,
            self.sample_batch(),
            lambda_delta=self.cfg.lambda_delta,
            autocast=self.runtime.autocast,
        )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(terms.total).backward()
        self.scaler.unscale_(self.optimizer)
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        self.update_ema()
        bad = ~torch.isfinite(torch.stack([terms.eps, terms.delta, terms.total.detach()]))
        self._bad |= bad
        self._first_bad.masked_fill_((self._first_bad < 0) & bad.any(), self.step)
        self._acc += torch.stack(
            [
                terms.total.detach(),
                terms.eps,
                terms.delta,
                grad_norm.detach(),
                torch.ones((), device=self.device),
            ]
        ).to(torch.float64)

    @torch.no_grad()
    def update_ema(self) -> None:
        """EMA ← decay·EMA + (1 − decay)·θ, decay warmed up as min(d, (1+s)/(10+s))."""
        decay = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))
        ema_params = list(self.ema.parameters())
        params = [p.detach() for p in self.model.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)

    # -- logging and checks ---------------------------------------------------------------

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteLossError` if any loss since the last check was NaN/inf."""
        if not bool(self._bad.any()):
            return
        cfg = self.cfg
        terms = [name for name, b in zip(("eps_loss", "delta_loss", "loss"), self._bad.tolist()) if b]
        causes = [f"the learning rate (diffusion.lr = {cfg.lr:g}; lower it, keep diffusion.grad_clip > 0)"]
        if "delta_loss" in terms or self.variant == "multibeta":
            causes.append(f"the weight of the Delta loss (diffusion.lambda_delta = {cfg.lambda_delta:g})")
        if cfg.weighting != "uniform":
            causes.append(f"the SNR weighting's cap (diffusion.snr_max = {cfg.snr_max:g}, "
                          f"diffusion.weighting = {cfg.weighting})")
        causes.append("bf16 autocast (compute.precision: fp32)")
        if self._saved_step and self.resume_path.exists():
            last = (f"{self.resume_path} holds step {self._saved_step}, trained with this config "
                    "(a changed config trains from step 0)")
        else:
            last = "none was written before the failure"
        raise NonFiniteLossError(
            f"train_diffusion[{self.variant}]: non-finite {', '.join(terms)} first at training step "
            f"{int(self._first_bad)} (found at step {self.step}). Training is deterministic, so a "
            "rerun with this config stops here again: the config must change. Likely causes: "
            + "; ".join(causes) + f". Checkpoint: {last}."
        )

    def log_window(self) -> None:
        """Append the mean of the current window to the log and reset it."""
        self.check_finite()
        loss, eps, delta, gnorm, n = self._acc.tolist()
        if n == 0:
            return
        row = {
            "step": self.step,
            "loss": loss / n,
            "eps_loss": eps / n,
            "delta_loss": delta / n,
            "lr": self.learning_rate(self.step - 1),
            "grad_norm": gnorm / n,
        }
        self.log_rows.append(row)
        self._acc.zero_()
        logger.debug("step %d: %s", self.step, row)

    def write_log(self) -> None:
        """Write train_log.csv atomically."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in self.log_rows:
            writer.writerow({k: (row[k] if k == "step" else f"{row[k]:.6g}") for k in LOG_COLUMNS})
        write_text(buf.getvalue(), self.log_path)

    # -- checkpoints ----------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything needed to sample (EMA) and to resume bit-for-bit."""
        return {
            "kind": "diffusion",
            "arch": self.model.arch(),
            "variant": self.variant,
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "generator": self.generator.get_state(),
            "acc": self._acc.clone(),
            "log": list(self.log_rows),
            "fingerprint": self.fingerprint,
            "config": self.cfg.to_dict(),
            "vae_sha256": self.cache.vae_sha256,
            "latent_dim": self.cache.latent_dim,
            "normalisation": {k: np.asarray(v) for k, v in self.normalisation.items()},
            "cache": {
                "path": str(self.cache.path),
                "num_items": self.cache.num_items,
                "t": self.cache.t,
                "sigma": self.cache.sigma,
                "beta": self.cache.beta,
                "delta_method": self.cache.delta_method,
            },
            "versions": collect_versions(),
        }

    def save(self, path: Path) -> None:
        self.check_finite()
        save_checkpoint(self.state(), path)
        self.write_log()
        self._saved_step = self.step

    def try_resume(self) -> bool:
        """Load ``resume.pt`` when it belongs to this config and cache; return whether it did."""
        if not self.resume_path.exists():
            return False
        try:
            # RNG states must stay CPU tensors; load_state_dict moves weights to the device
            state = load_checkpoint(
                self.resume_path, kind="diffusion", arch=self.model.arch(), map_location="cpu"
            )
        except CheckpointError as exc:
            logger.warning(
                "ignoring unusable %s (%s); training from scratch", self.resume_path, exc
            )
            return False
        if state.get("fingerprint") != self.fingerprint:
            logger.warning(
                "%s is from another config or cache; training from scratch", self.resume_path
            )
            return False
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])
        set_rng_state(state["rng"])
        self._acc.copy_(state["acc"])
        self.log_rows = list(state["log"])
        self.step = int(state["step"])
        self._saved_step = self.step
        logger.info("resumed %s at step %d", self.variant, self.step)
        return True

    # -- the loop -------------------------------------------------------------------------

    def run(self, *, stop_at: int | None = None) -> Path | None:
        """Train to ``cfg.steps`` (resuming if possible); write model.pt and return its path.

        Args:
            stop_at: stop after this step with a resume checkpoint and return None (to
                simulate an interruption, or to train in time-limited pieces).
        """
        cfg = self.cfg
        self.try_resume()
        start_step, t0 = self.step, time.perf_counter()
        logger.info(
            "train_diffusion[%s]: %d steps, batch %d, %d rows, device %s",
            self.variant,
            cfg.steps,
            cfg.batch_size,
            len(self.rows),
            self.device,
        )
        progress = ProgressLog(f"train_diffusion[{self.variant}]", cfg.steps, logger, start=start_step)
        with tqdm(
            total=cfg.steps, initial=self.step, desc=f"diffusion[{self.variant}]", disable=None
        ) as bar:
            while self.step < cfg.steps:
                self.train_step()
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    self.log_window()
                    bar.set_postfix(
                        loss=f"{self.log_rows[-1]['loss']:.4f}" if self.log_rows else ""
                    )
                    if self.log_rows:
                        last = self.log_rows[-1]
                        progress.update(self.step, loss=last["loss"], eps=last["eps_loss"],
                                        delta=last["delta_loss"])
                if stop_at is not None and self.step >= stop_at:
                    self.save(self.resume_path)
                    logger.info(
                        "stopped at step %d (resume checkpoint %s)", self.step, self.resume_path
                    )
                    return None
                if self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                    self.save(self.resume_path)
        self.check_finite()
        elapsed = time.perf_counter() - t0
        rate = (self.step - start_step) / elapsed if elapsed > 0 else float("nan")
        state = self.state()
        state["timing"] = {"seconds": elapsed, "steps_per_second": rate, "device": str(self.device)}
        save_checkpoint(state, self.model_path)
        self.write_log()
        self.resume_path.unlink(missing_ok=True)
        last = self.log_rows[-1] if self.log_rows else {}
        logger.info(
            "train_diffusion[%s]: done, %d steps in %.1f s (%.1f steps/s), final loss %.4g -> %s",
            self.variant,
            self.step - start_step,
            elapsed,
            rate,
            last.get("loss", float("nan")),
            self.model_path,
        )
        return self.model_path


def train_diffusion(
    cfg: DiffusionConfig,
    *,
    variant: str,
    cache: LatentCache | str | os.PathLike,
    out_dir: str | os.PathLike,
    runtime: Runtime,
    vae_sha256: str | None = None,
    stop_at: int | None = None,
) -> Path | None:
    """Train the denoiser ``variant`` on the latent cache; returns ``out_dir/model.pt``.

    Args:
        cfg: the diffusion config.
        variant: one of ``cfg.variants`` (any of multibeta, noise_only, standard_ldm).
        cache: a :class:`LatentCache` or the path of the cache file.
        out_dir: ``results/<exp>/diffusion/<variant>``.
        runtime: device/precision.
        vae_sha256: when given, the cache must have been built from this VAE checkpoint.
        stop_at: see :meth:`DiffusionTrainer.run`.
    """
    if not isinstance(cache, LatentCache):
        cache = LatentCache(cache)
    if vae_sha256 is not None:
        cache.check_vae(vae_sha256)
    trainer = DiffusionTrainer(cfg, variant=variant, cache=cache, out_dir=out_dir, runtime=runtime)
    return trainer.run(stop_at=stop_at)


def load_denoiser(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[LatentDenoiser, dict[str, Any]]:
    """The EMA denoiser of a ``train_diffusion`` checkpoint, in eval mode, and the checkpoint.

    The checkpoint dict carries ``variant``, ``vae_sha256`` (of the VAE behind the cache it
    was trained on), ``latent_dim``, ``normalisation``, ``cache`` (levels, σ, β) and ``config``.
    """
    try:
        state = load_checkpoint(path, kind="diffusion", map_location=map_location)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc} (the rule train_diffusion writes it; rerun it)") from exc
    model = LatentDenoiser(**state["arch"])
    model.load_state_dict(state["ema"])
    model.to(map_location).eval().requires_grad_(False)
    return model, state


def check_denoiser_vae(checkpoint: dict[str, Any], vae_sha256: str) -> None:
    """Raise :class:`VAEMismatchError` unless the denoiser was trained on latents of this VAE."""
    trained_on = checkpoint.get("vae_sha256") or "<unknown>"
    if trained_on != vae_sha256:
        raise VAEMismatchError(
            f"the diffusion model (variant {checkpoint.get('variant')}) was trained on a latent cache of "
            f"the VAE checkpoint with sha256 {trained_on}, but the VAE given has sha256 {vae_sha256}. "
            "Its latents mean nothing to this decoder: rerun the rules cache_latents and train_diffusion."
        )
