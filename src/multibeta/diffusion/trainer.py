"""Training of the Stage-2 denoiser from the latent cache, with EMA, AMP and exact resume.

Outputs (their paths come from the caller; the rule ``train_diffusion`` puts them in
``results/<exp>/diffusion/<variant>/``):

- ``model_path``: the final checkpoint (``kind="diffusion"``): raw and EMA weights, optimiser,
  step, RNG states, the variant, normalisation, the cache's ``vae_sha256``; read it with
  :func:`multibeta.models.loading.load_denoiser` (returns the EMA model, ready for sampling).
- ``log_csv``: step, loss, eps_loss, delta_loss, lr, grad_norm (means over ``log_every`` steps).
- ``state_path`` while training: the same state every ``checkpoint_every`` steps; a rerun
  with the same config and cache resumes from it (bit-for-bit on CPU) and deletes it at the end.
  A state from another config or cache is kept as ``*.stale`` with a warning naming what
  differs (:mod:`multibeta.training.resume`), and training starts again. A non-finite loss
  stops training with :class:`~multibeta.training.errors.NonFiniteLossError` and leaves the
  last good state in place.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from multibeta.cache.latent_cache import CacheStatistics, LatentCache
from multibeta.core.logsnr import DensityTimes
from multibeta.core.schedules import lr_factor
from multibeta.diffusion.config import DiffusionConfig
from multibeta.diffusion.process import (
    Batch,
    CosineProcess,
    MultiBetaProcess,
    sample_t,
    training_loss,
)
from multibeta.models.denoiser import LatentDenoiser, check_variant
from multibeta.training.csv_log import CsvLog
from multibeta.training.ema import EMA
from multibeta.training.errors import Cause, NonFiniteLossError
from multibeta.training.resume import default_state_path, load_resumable
from multibeta.training.state import optimisation_state, restore_optimisation_state
from multibeta.utils.checkpoint import diff_configs, save_checkpoint
from multibeta.utils.device import Runtime
from multibeta.utils.io import config_hash
from multibeta.utils.progress import ProgressLog
from multibeta.utils.seeding import seed_everything
from multibeta.utils.versions import collect_versions

logger = logging.getLogger(__name__)

#: config keys that do not shape the training trajectory (a resumed run may change them)
NON_TRAINING_KEYS = frozenset({"variants", "checkpoint_every"})


def _floored(x: np.ndarray, rel: float = 1e-3) -> np.ndarray:
    """``x`` with entries below ``rel · max(x)`` raised to it (collapsed dims stay finite)."""
    floor = max(float(np.max(x)) * rel, 1e-12)
    return np.maximum(x, floor)


def normalisation_from_cache(
    cache: LatentCache, stats: CacheStatistics, variant: str, delta_scale: str = "global"
) -> dict[str, np.ndarray]:
    """The denoiser's normalisation buffers for ``variant`` (see :class:`LatentDenoiser`).

    ``delta_scale`` (``diffusion.delta_scale``): ``global``, one RMS of Δ per dimension over
    all t; ``per_level``, the RMS of Δ per dimension at the midpoint of every segment between
    the cache's levels ``[K − 1, d]`` (each row floored at 1e-3 of its largest entry and of
    the largest global RMS, so a level where μ_t does not move keeps a finite scale).
    """
    if variant == "standard_ldm":
        return {
            "latent_mean": stats.mean[0],
            "latent_std": _floored(np.sqrt(stats.var[0])),
            "precond_t": np.array([0.0, 1.0]),
            "input_scale": np.ones(2),
        }
    second_moment = (stats.var + stats.mean**2).mean(axis=1)  # [K]
    noise_power = cache.sigma**2 if cache.sigma.ndim == 1 else (cache.sigma**2).mean(axis=1)  # [K]
    norm = {
        "precond_t": cache.t,
        "input_scale": 1.0 / np.sqrt(second_moment + noise_power),
        "schedule_t": cache.schedule_t,
        "schedule_sigma": cache.schedule_sigma,
    }
    if variant == "multibeta":
        norm["delta_scale"] = _floored(stats.delta_rms)
        if delta_scale == "per_level":
            floor = max(float(np.max(stats.delta_rms)) * 1e-3, 1e-12)
            table = np.stack([_floored(row) for row in stats.delta_rms_segment])
            norm["delta_scale_t"] = 0.5 * (cache.t[:-1] + cache.t[1:])
            norm["delta_scale_table"] = np.maximum(table, floor)
        elif delta_scale != "global":
            raise ValueError(f"unknown diffusion.delta_scale {delta_scale!r}; use global or per_level")
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
        time_input=cfg.time_input,  # type: ignore[arg-type]
        delta_scale_points=(
            cache.num_levels - 1
            if variant == "multibeta" and cfg.delta_scale == "per_level"
            else 0
        ),
        per_dimension_sigma=not ldm and cache.per_dimension_sigma,
        prediction=cfg.prediction,  # type: ignore[arg-type]
    )


class DiffusionTrainer:
    """Trains one denoiser variant on a latent cache.

    Args:
        cfg: the diffusion config.
        variant: ``multibeta``, ``noise_only`` or ``standard_ldm``.
        cache: the latent cache (moved to the runtime device when in memory).
        model_path: the final checkpoint.
        log_csv: the CSV of the loss terms (None: no CSV).
        runtime: device, autocast and grad scaler.
        state_path: the resumable state (default ``.<stem>.partial.pt`` beside ``model_path``).
    """

    def __init__(
        self,
        cfg: DiffusionConfig,
        *,
        variant: str,
        cache: LatentCache,
        model_path: str | os.PathLike,
        log_csv: str | os.PathLike | None,
        runtime: Runtime,
        state_path: str | os.PathLike | None = None,
    ) -> None:
        self.cfg = cfg
        self.variant = check_variant(variant)
        self.runtime = runtime
        self.device = runtime.device
        self.model_path = Path(model_path)
        self.state_path = Path(state_path) if state_path is not None else default_state_path(model_path)
        self.log = CsvLog(log_csv)
        if cache.in_memory:
            cache.to(self.device)
        self.cache = cache

        rows = cache.rows(cfg.train_split)
        if len(rows) == 0:
            raise ValueError(
                f"no cache rows in split {cfg.train_split!r}; set diffusion.train_split: all"
            )
        stats = cache.statistics(rows)
        self.normalisation = normalisation_from_cache(cache, stats, variant, cfg.delta_scale)

        seed_everything(cfg.seed)
        self.model = build_denoiser(cfg, variant=variant, cache=cache)
        self.model.set_normalisation(**self.normalisation)
        self.model.to(self.device)
        # training times: uniform in t, or with the log-SNR density of diffusion.t_density
        self.density_times = DensityTimes(self.model.logsnr_table(), cfg.t_density)
        self.ema = EMA(self.model, cfg.ema_decay)
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
        # running sums over the log window: loss, eps, delta, grad_norm, count
        self._acc = torch.zeros(5, dtype=torch.float64, device=self.device)
        # which of (eps_loss, delta_loss, loss) turned NaN/inf, and the first step it happened
        # (kept on the device: checked once per log window, not synchronised every step)
        self._bad = torch.zeros(3, dtype=torch.bool, device=self.device)
        self._first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        self._saved_step = 0
        self.fingerprint = config_hash(self.identity())

    def identity(self) -> dict[str, Any]:
        """What a resumed state must share with this run: training config, variant and cache."""
        cache = self.cache
        return {
            "config": {k: v for k, v in self.cfg.to_dict().items() if k not in NON_TRAINING_KEYS},
            "variant": self.variant,
            "cache": {
                "vae_sha256": cache.vae_sha256,
                "shape": [cache.num_items, cache.num_levels, cache.latent_dim],
                "t": cache.t.tolist(),
                "delta": cache.delta_method,
            },
        }

    def differences(self, state: dict[str, Any]) -> list[str]:
        """The settings in which a saved ``state`` differs from this run (see :meth:`identity`)."""
        new, cache = self.identity(), state.get("cache", {})
        t = np.asarray(cache.get("t", [])).tolist()
        old_config = {k: v for k, v in state.get("config", {}).items() if k not in NON_TRAINING_KEYS}
        old_rest = {
            "variant": state.get("variant"),
            "cache": {
                "vae_sha256": state.get("vae_sha256"),
                "shape": [cache.get("num_items"), len(t), state.get("latent_dim")],
                "t": t,
                "delta": cache.get("delta_method"),
            },
        }
        new_rest = {k: v for k, v in new.items() if k != "config"}
        return diff_configs(old_config, new["config"], "diffusion.") + diff_configs(old_rest, new_rest)

    # -- one step -------------------------------------------------------------------------

    def learning_rate(self, step: int) -> float:
        """The rate of step ``step`` (0-based): linear warm-up, then constant or cosine decay
        from ``lr`` to ``lr · min_lr_ratio`` at ``cfg.steps`` (:func:`~multibeta.core.schedules.lr_factor`)."""
        cfg = self.cfg
        return cfg.lr * lr_factor(step, warmup=cfg.warmup_steps, total=cfg.steps,
                                  floor=cfg.min_lr_ratio, decay=cfg.lr_schedule)

    def sample_batch(self) -> Batch:
        """Random cache rows, times and noise (vectorised, from the trainer's generator)."""
        b, gen, dev = self.cfg.batch_size, self.generator, self.data_device
        idx = self.rows[torch.randint(len(self.rows), (b,), generator=gen, device=dev)]
        t = self.density_times(sample_t(b, self.cfg.t_sampling, gen, dev))
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
        self.ema.update(self.model, self.step)
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

    # -- logging and checks ---------------------------------------------------------------

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteLossError` if any loss since the last check was NaN/inf."""
        if not bool(self._bad.any()):
            return
        cfg = self.cfg
        terms = [name for name, b in zip(("eps_loss", "delta_loss", "loss"), self._bad.tolist()) if b]
        causes = [Cause("the learning rate", {"diffusion.lr": cfg.lr, "diffusion.grad_clip": cfg.grad_clip},
                        "lower it, keep diffusion.grad_clip > 0")]
        if "delta_loss" in terms or self.variant == "multibeta":
            causes.append(Cause("the weight of the Delta loss", {"diffusion.lambda_delta": cfg.lambda_delta},
                                "lower it"))
        if cfg.weighting != "uniform":
            causes.append(Cause("the SNR weighting's cap",
                                {"diffusion.snr_max": cfg.snr_max, "diffusion.weighting": cfg.weighting},
                                "lower diffusion.snr_max"))
        causes.append(Cause("bf16 autocast", fix="compute.precision: fp32"))
        raise NonFiniteLossError(
            f"train_diffusion[{self.variant}]", step=int(self._first_bad), found_at=self.step,
            terms=terms, causes=causes, state_path=self.state_path, saved_step=self._saved_step,
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
        self.log.append(row)
        self._acc.zero_()
        logger.debug("step %d: %s", self.step, row)

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
            **optimisation_state(self.optimizer, self.scaler, self.generator),
            "acc": self._acc.clone(),
            "log": list(self.log.rows),
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
        self.log.write()
        self._saved_step = self.step

    def try_resume(self) -> bool:
        """Resume from ``state_path`` when it belongs to this config and cache; return whether it did.

        A state from another config or cache is set aside as ``*.stale`` (the warning names the
        differences) and training starts from step 0.
        """
        # RNG states must stay CPU tensors; load_state_dict moves weights to the device
        state = load_resumable(self.state_path, kind="diffusion", differences=self.differences)
        if state is None:
            return False
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        restore_optimisation_state(state, self.optimizer, self.scaler, self.generator)
        self._acc.copy_(state["acc"])
        self.log.rows = list(state["log"])
        self.step = int(state["step"])
        self._saved_step = self.step
        logger.info("resumed %s at step %d", self.variant, self.step)
        return True

    # -- the loop -------------------------------------------------------------------------

    def run(self, *, stop_at: int | None = None) -> Path | None:
        """Train to ``cfg.steps`` (resuming if possible); write the final checkpoint, return its path.

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
                    bar.set_postfix(loss=f"{self.log.last['loss']:.4f}" if self.log.rows else "")
                    if self.log.rows:
                        last = self.log.last
                        progress.update(self.step, loss=last["loss"], eps=last["eps_loss"],
                                        delta=last["delta_loss"])
                if stop_at is not None and self.step >= stop_at:
                    self.save(self.state_path)
                    logger.info("stopped at step %d (resumable state %s)", self.step, self.state_path)
                    return None
                if self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                    self.save(self.state_path)
        self.check_finite()
        elapsed = time.perf_counter() - t0
        rate = (self.step - start_step) / elapsed if elapsed > 0 else float("nan")
        state = self.state()
        state["timing"] = {"seconds": elapsed, "steps_per_second": rate, "device": str(self.device)}
        save_checkpoint(state, self.model_path)
        self.log.write()
        self.state_path.unlink(missing_ok=True)
        last = self.log.last
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
    model_path: str | os.PathLike,
    log_csv: str | os.PathLike | None,
    runtime: Runtime,
    state_path: str | os.PathLike | None = None,
    vae_sha256: str | None = None,
    stop_at: int | None = None,
) -> Path | None:
    """Train the denoiser ``variant`` on the latent cache; returns ``model_path``.

    Args:
        cfg: the diffusion config.
        variant: one of ``cfg.variants`` (any of multibeta, noise_only, standard_ldm).
        cache: a :class:`LatentCache` or the path of the cache file.
        model_path: the final checkpoint.
        log_csv: the CSV of the loss terms every ``diffusion.log_every`` steps (None: no CSV).
        runtime: device/precision.
        state_path: the resumable state; default ``.<stem>.partial.pt`` beside ``model_path``.
        vae_sha256: when given, the cache must have been built from this VAE checkpoint.
        stop_at: see :meth:`DiffusionTrainer.run`.
    """
    if not isinstance(cache, LatentCache):
        cache = LatentCache(cache)
    if vae_sha256 is not None:
        cache.check_vae(vae_sha256)
    trainer = DiffusionTrainer(cfg, variant=variant, cache=cache, model_path=model_path,
                               log_csv=log_csv, runtime=runtime, state_path=state_path)
    return trainer.run(stop_at=stop_at)
