"""Training loop of the multi-β VAE (and of its fixed-β baselines).

``train_vae(cfg, data, checkpoint_path=..., log_csv=..., runtime=...)`` trains for
``vae.steps`` steps of ``vae.batch_size`` images with AdamW, linear warm-up then cosine decay,
gradient clipping, optional EMA and mixed precision (``Runtime.autocast``/``grad_scaler``).

Restartability: every ``vae.checkpoint_every`` steps the full training state (weights, EMA,
optimiser, LR scheduler, grad scaler, step, data-order position, RNG states, CSV rows) is
written atomically to ``state_path`` (default: ``.<stem>.partial.pt`` beside the checkpoint).
A rerun resumes from it and, on CPU, reproduces an uninterrupted run bit for bit; a state (or
final checkpoint) written with another config is set aside as ``*.stale`` with a warning naming
the differing keys, and training starts again (:mod:`multibeta.training.resume`). The final
checkpoint (``kind="vae"``, weights, EMA weights, ``arch``, full config, versions, training
summary) goes to ``checkpoint_path``, after which the partial state is deleted. A non-finite
loss stops training with :class:`~multibeta.training.errors.NonFiniteLossError`; the last good
state stays on disk.

Randomness: the model is initialised after ``seed_everything(vae.seed)``; the data order of
epoch e is ``default_rng([seed, e]).permutation(n)``; levels t and noise ε come from a
dedicated CPU ``torch.Generator`` whose state is checkpointed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from multibeta.core.schedules import lr_factor, sigma_rms
from multibeta.core.image_size import IMAGE_SIZE, IMAGE_SIZES
from multibeta.data.sources import ImageSource, image_size_of
from multibeta.models.vae import MultiBetaVAE
from multibeta.training.csv_log import CsvLog
from multibeta.training.ema import EMA
from multibeta.training.errors import Cause, NonFiniteLossError
from multibeta.training.resume import default_state_path, load_resumable
from multibeta.training.state import optimisation_state, restore_optimisation_state
from multibeta.utils.checkpoint import diff_configs, save_checkpoint
from multibeta.utils.device import Runtime
from multibeta.utils.progress import ProgressLog
from multibeta.utils.seeding import seed_everything
from multibeta.utils.versions import collect_versions
from multibeta.vae.config import NON_TRAINING_KEYS, VAEConfig
from multibeta.vae.losses import PatchDiscriminator, VAEObjective, adaptive_gan_weight, hinge_d_loss

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- data sources
class TensorSource:
    """An in-memory image tensor ``[N, C, S, S]`` (uint8 in 0..255 or float in [0, 1]), S one of
    the ``data.image_size`` values."""

    def __init__(self, images: torch.Tensor) -> None:
        if images.ndim != 4 or images.shape[2] != images.shape[3] or int(images.shape[2]) not in IMAGE_SIZES:
            raise ValueError(f"expected images [N, C, S, S] with S in {list(IMAGE_SIZES)}, got {tuple(images.shape)}")
        self.images = images
        self.channels = int(images.shape[1])
        self.image_size = int(images.shape[2])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batch(self, indices: np.ndarray) -> torch.Tensor:
        x = self.images[torch.as_tensor(indices, dtype=torch.long)]
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


class H5Source:
    """One split of an image dataset file (``multibeta.data.h5io.ImageDataset``)."""

    def __init__(self, path: str | os.PathLike, split: str | None = "train") -> None:
        from multibeta.data.h5io import ImageDataset

        self.path = Path(path)
        self.dataset = ImageDataset(self.path, split=split)
        if len(self.dataset) == 0:
            raise ValueError(f"{self.path}: split {split!r} has no images")
        self.channels = int(self.dataset.channels)
        self.image_size = int(self.dataset.image_size)

    def __len__(self) -> int:
        return len(self.dataset)

    def batch(self, indices: np.ndarray) -> torch.Tensor:
        return self.dataset.tensor_batch(np.asarray(indices))


def as_source(data: str | os.PathLike | torch.Tensor | ImageSource, split: str | None = "train"
              ) -> ImageSource:
    """Wrap a dataset path, an image tensor or an existing source as an :class:`ImageSource`."""
    if isinstance(data, (str, os.PathLike)):
        return H5Source(data, split=split)
    if isinstance(data, torch.Tensor):
        return TensorSource(data)
    if isinstance(data, ImageSource):
        return data
    raise TypeError(f"cannot train on {type(data).__name__}: give a dataset path, a tensor or an ImageSource")


# ----------------------------------------------------------------------------- trainer
@dataclass
class TrainResult:
    """Outcome of :func:`train_vae`."""

    completed: bool
    step: int
    checkpoint_path: Path | None
    state_path: Path
    resumed_from: int | None
    wall_time_s: float
    steps_per_s: float
    summary: dict[str, Any] = field(default_factory=dict)


LOG_TERMS = ("loss", "rec", "kl", "beta_kl", "grad_norm")
GAN_TERMS = ("g_loss", "d_loss", "d_weight")


class VAETrainer:
    """Owns the model, optimiser and training state; see the module docstring.

    Args:
        cfg: the ``vae`` config.
        source: training images.
        runtime: device and precision.
        checkpoint_path: final checkpoint.
        log_csv: CSV of loss terms (rewritten atomically at each log row, checkpoint and the end).
        state_path: resumable partial state (default ``.<stem>.partial.pt`` beside the checkpoint).
        progress: show a tqdm bar (``disable=None``: silent when not a TTY).
    """

    def __init__(self, cfg: VAEConfig, source: ImageSource, *, runtime: Runtime,
                 checkpoint_path: str | os.PathLike, log_csv: str | os.PathLike | None,
                 state_path: str | os.PathLike | None = None, progress: bool = True) -> None:
        if len(source) < cfg.batch_size:
            raise ValueError(f"vae.batch_size ({cfg.batch_size}) exceeds the {len(source)} "
                             "training images; lower vae.batch_size or use more data")
        self.cfg = cfg
        self.source = source
        self.runtime = runtime
        self.device = runtime.device
        self.checkpoint_path = Path(checkpoint_path)
        self.state_path = Path(state_path) if state_path is not None else \
            default_state_path(self.checkpoint_path)
        self.log = CsvLog(log_csv)
        self.progress = progress

        seed_everything(cfg.seed)
        self.arch = cfg.vae_arch(source.channels, image_size_of(source))
        # the section's widths as trained (None in a section means the image size's default)
        self.cfg = cfg = dataclasses.replace(cfg, arch=dataclasses.replace(cfg.arch, channels=self.arch.channels))
        self.model: MultiBetaVAE = MultiBetaVAE(self.arch).to(self.device)
        self.objective = VAEObjective(self.model, cfg).to(self.device)
        self.fixed_t = self.model.fixed_t
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            (decay if p.ndim >= 2 and not name.startswith("schedule.") else no_decay).append(p)
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr, betas=cfg.adam_betas,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: lr_factor(s, warmup=cfg.warmup_steps, total=cfg.steps, floor=cfg.min_lr_ratio),
        )
        self.scaler = runtime.grad_scaler()
        self.ema = EMA(self.model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.use_gan = cfg.reconstruction == "l1_lpips" and cfg.gan.weight > 0
        if self.use_gan:
            self.disc = PatchDiscriminator(source.channels, cfg.gan.disc_channels,
                                           cfg.gan.disc_layers).to(self.device)
            self.opt_d = torch.optim.AdamW(self.disc.parameters(), lr=cfg.gan.lr, betas=(0.5, 0.9),
                                           weight_decay=0.0)
            self.scaler_d = runtime.grad_scaler()
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.step = 0
        self.epoch = 0
        self.pos = 0
        self.perm = self._permutation(0)
        self.accum: dict[str, float] = {}
        self.accum_n = 0
        self.wall_before = 0.0
        self._saved_step = 0
        self._t0: float | None = None
        self.progress_log: ProgressLog | None = None

    # ---- data and levels -------------------------------------------------------------
    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.cfg.seed, epoch]).permutation(len(self.source))

    def next_indices(self) -> np.ndarray:
        """Indices of the next batch (an epoch's tail shorter than a batch is skipped)."""
        b = self.cfg.batch_size
        if self.pos + b > len(self.perm):
            self.epoch += 1
            self.pos = 0
            self.perm = self._permutation(self.epoch)
        idx = np.sort(self.perm[self.pos:self.pos + b])
        self.pos += b
        return idx

    def sample_levels(self, n: int) -> torch.Tensor:
        """t ``[n]`` (``[1]`` in fixed-β mode), on the CPU generator: u ~ U[0, 1] (i.i.d. or
        stratified), then t = u^p with p = ``vae.t_power`` (density p⁻¹ t^(1/p − 1))."""
        if self.fixed_t is not None:
            return torch.full((1,), self.fixed_t)
        u = torch.rand(n, generator=self.generator)
        if self.cfg.t_sampling == "stratified":
            # shuffled strata: batch indices are sorted, so t must not follow their order
            strata = torch.randperm(n, generator=self.generator).to(torch.float32)
            u = (strata + u) / n
        return u if self.cfg.t_power == 1.0 else u.pow(self.cfg.t_power)

    # ---- one step --------------------------------------------------------------------
    def _check_finite(self, values: dict[str, torch.Tensor]) -> None:
        stacked = torch.stack([v.detach().float() for v in values.values()])
        if bool(torch.isfinite(stacked).all()):
            return
        bad = [k for k, v in values.items() if not bool(torch.isfinite(v.detach()).all())]
        cfg = self.cfg
        raise NonFiniteLossError(
            "train_vae", step=self.step + 1, terms=bad,
            values={k: float(values[k].detach()) for k in bad},
            causes=[
                Cause("the learning rate", {"vae.lr": cfg.lr, "vae.grad_clip": cfg.grad_clip},
                      "lower it or set vae.grad_clip"),
                Cause("a large beta", {"vae.beta_max": cfg.beta_max}, "lower it"),
                Cause("bf16 autocast", fix="compute.precision: fp32"),
            ],
            state_path=self.state_path, saved_step=self._saved_step,
        )

    def train_step(self) -> dict[str, float]:
        """One optimisation step; returns the batch means of the logged terms."""
        cfg, dev = self.cfg, self.device
        idx = self.next_indices()
        x = self.source.batch(idx).to(dev, non_blocking=True)
        t = self.sample_levels(len(idx)).to(dev, non_blocking=True)
        eps = torch.randn(len(idx), cfg.latent_dim, generator=self.generator).to(dev, non_blocking=True)
        gan_on = self.use_gan and self.step >= cfg.gan.start_step
        with self.runtime.autocast():
            terms = self.objective(self.model, x, t, eps)
            loss = terms.loss
            values = {"loss": loss, "rec": terms.rec.mean(), "kl": terms.kl.mean(),
                      "beta_kl": (terms.beta * terms.kl).mean()}
            values.update({k: v.mean() for k, v in terms.parts.items()})
            if gan_on:
                x_hat = torch.sigmoid(terms.logits.float())
                g_logits = self.disc(x_hat).flatten(1).mean(1)
                g_loss = -(terms.weight * g_logits).mean()
                d_weight = cfg.gan.weight * adaptive_gan_weight(
                    terms.weighted_rec(), g_loss, self.model.decoder.last.weight)
                loss = loss + d_weight * g_loss
                values.update(g_loss=g_loss, d_weight=d_weight, loss=loss)
        self._check_finite(values)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        clip = cfg.grad_clip if cfg.grad_clip is not None else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        if not self.scaler.is_enabled():
            self._check_finite({"gradient norm": grad_norm})
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model, self.step)
        values["grad_norm"] = grad_norm
        if gan_on:
            with self.runtime.autocast():
                d_loss = hinge_d_loss(self.disc(x), self.disc(x_hat.detach()))
            self._check_finite({"discriminator loss": d_loss})
            self.opt_d.zero_grad(set_to_none=True)
            self.scaler_d.scale(d_loss).backward()
            self.scaler_d.step(self.opt_d)
            self.scaler_d.update()
            values["d_loss"] = d_loss
        self.step += 1
        keys = list(values)
        numbers = torch.stack([values[k].detach().float() for k in keys]).cpu().tolist()
        return dict(zip(keys, numbers))

    # ---- logging ---------------------------------------------------------------------
    def _accumulate(self, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.accum[k] = self.accum.get(k, 0.0) + v
        self.accum_n += 1

    def _flush_row(self) -> None:
        if not self.accum_n:
            return
        row: dict[str, float] = {"step": self.step, "epoch": self.epoch,
                                 "lr": self.scheduler.get_last_lr()[0]}
        row.update({k: v / self.accum_n for k, v in self.accum.items()})
        with torch.no_grad():
            tt = torch.tensor([0.0, 0.5, 1.0], device=self.device)
            # the RMS over dimensions (the shared σ_t itself unless vae.sigma_stagger > 0)
            s0, s_half, s1 = sigma_rms(self.model.posterior_sigma(tt)).tolist()
        row.update(sigma_0=s0, sigma_half=s_half, sigma_1=s1)
        self.log.append(row)
        self.accum, self.accum_n = {}, 0
        if self.progress_log is not None:
            self.progress_log.update(self.step, **{k: row[k] for k in ("loss", "rec", "kl") if k in row})

    # ---- state -----------------------------------------------------------------------
    def _base_state(self) -> dict[str, Any]:
        return {
            "kind": "vae",
            "arch": self.arch.to_dict(),
            "config": self.cfg.to_dict(),
            "versions": collect_versions(),
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "ema": None if self.ema is None else {k: v.cpu() for k, v in self.ema.state_dict().items()},
        }

    def save_partial(self) -> None:
        """Write the full resumable state to ``state_path`` and the CSV, atomically."""
        state = self._base_state()
        state["complete"] = False
        state["train_state"] = {
            "step": self.step, "epoch": self.epoch, "pos": self.pos,
            **optimisation_state(self.optimizer, self.scaler, self.generator),
            "scheduler": self.scheduler.state_dict(),
            "rows": list(self.log.rows), "accum": dict(self.accum),
            "accum_n": self.accum_n, "wall_time_s": self.wall_before + self._session_time(),
        }
        if self.use_gan:
            state["train_state"].update(disc=self.disc.state_dict(), opt_d=self.opt_d.state_dict(),
                                        scaler_d=self.scaler_d.state_dict())
        save_checkpoint(state, self.state_path)
        self.log.write()
        self._saved_step = self.step
        logger.debug("saved training state at step %d to %s", self.step, self.state_path)

    def differences(self, state: dict[str, Any]) -> list[str]:
        """The architecture and training settings in which ``state`` differs from this run."""
        old = {k: v for k, v in state.get("config", {}).items() if k not in NON_TRAINING_KEYS}
        arch = {"image_size": IMAGE_SIZE, **state.get("arch", {})}  # states before image sizes: 64
        return (diff_configs(arch, self.arch.to_dict(), prefix="arch.")
                + diff_configs(old, self.cfg.training_dict(), prefix="vae."))

    def load_partial(self, state: dict[str, Any]) -> int:
        """Restore the partial ``state`` (loaded on the CPU); returns the step resumed from."""
        ts = state["train_state"]
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        restore_optimisation_state(ts, self.optimizer, self.scaler, self.generator)
        self.scheduler.load_state_dict(ts["scheduler"])
        self.step, self.epoch, self.pos = ts["step"], ts["epoch"], ts["pos"]
        self.perm = self._permutation(self.epoch)
        self.log.rows, self.accum, self.accum_n = list(ts["rows"]), dict(ts["accum"]), ts["accum_n"]
        self.wall_before = float(ts["wall_time_s"])
        if self.use_gan:
            self.disc.load_state_dict(ts["disc"])
            self.opt_d.load_state_dict(ts["opt_d"])
            self.scaler_d.load_state_dict(ts["scaler_d"])
        self._saved_step = self.step
        return self.step

    def _session_time(self) -> float:
        return time.perf_counter() - self._t0 if self._t0 is not None else 0.0

    def summary(self) -> dict[str, Any]:
        """Training summary stored in the final checkpoint."""
        with torch.no_grad():
            tt = torch.linspace(0, 1, 11, device=self.device)
            sigma = sigma_rms(self.model.posterior_sigma(tt)).cpu().tolist()
        last = self.log.last
        wall = self.wall_before + self._session_time()
        return {
            "steps": self.step,
            "epochs": self.epoch + self.pos / len(self.perm),
            "train_images": len(self.source),
            "wall_time_s": wall,
            "steps_per_s": self.step / wall if wall > 0 else float("nan"),
            "final": {k: v for k, v in last.items() if k not in ("step", "epoch")},
            "sigma_grid_t": tt.cpu().tolist(),
            "sigma_grid": sigma,
            "fixed_beta": self.cfg.fixed_beta,
            "device": str(self.device),
            "amp_dtype": str(self.runtime.amp_dtype),
            "torch_threads": torch.get_num_threads(),
        }

    def save_final(self) -> dict[str, Any]:
        """Write the final checkpoint and CSV; delete the partial state."""
        state = self._base_state()
        state["complete"] = True
        state["summary"] = self.summary()
        save_checkpoint(state, self.checkpoint_path)
        self.log.write()
        self.state_path.unlink(missing_ok=True)
        return state["summary"]

    # ---- loop ------------------------------------------------------------------------
    def run(self, stop_at: int | None = None) -> TrainResult:
        """Train (resuming if a partial state exists) until ``vae.steps`` or ``stop_at``.

        A final checkpoint or partial state written with another config is set aside as
        ``*.stale`` (see :mod:`multibeta.training.resume`) and training starts again.
        """
        cfg = self.cfg
        done = load_resumable(self.checkpoint_path, kind="vae", differences=self.differences)
        if done is not None and done.get("complete"):
            s = done["summary"]
            logger.info("%s is already trained (%d steps); nothing to do", self.checkpoint_path, s["steps"])
            return TrainResult(True, s["steps"], self.checkpoint_path, self.state_path, s["steps"],
                               0.0, s["steps_per_s"], s)
        resumed_from = None
        partial = load_resumable(self.state_path, kind="vae", differences=self.differences)
        if partial is not None:
            resumed_from = self.load_partial(partial)
            logger.info("resuming VAE training from step %d (%s)", resumed_from, self.state_path)
        end = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
        mode = f"fixed beta={cfg.fixed_beta}" if cfg.fixed_beta is not None else \
            f"beta in [{cfg.beta_min}, {cfg.beta_max}]"
        logger.info("training VAE (%s, %d images, %d steps of %d) on %s", mode, len(self.source),
                    cfg.steps, cfg.batch_size, self.device)
        self.model.train()
        self._t0 = time.perf_counter()
        start = self.step
        self.progress_log = ProgressLog("train_vae", cfg.steps, logger, start=start)
        bar = tqdm(total=cfg.steps, initial=self.step, desc="vae", dynamic_ncols=True,
                   disable=None if self.progress else True)
        try:
            while self.step < end:
                values = self.train_step()
                self._accumulate(values)
                bar.update(1)
                if self.step % 10 == 0 or self.step == end:
                    bar.set_postfix(loss=f"{values['loss']:.4g}", kl=f"{values['kl']:.3g}",
                                    rec=f"{values['rec']:.4g}", refresh=False)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    self._flush_row()
                    self.log.write()
                if self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                    self.save_partial()
        finally:
            bar.close()
        session = self._session_time()
        rate = (self.step - start) / session if session > 0 else float("nan")
        if self.step < cfg.steps:
            if self._saved_step != self.step:
                self.save_partial()
            logger.info("stopped at step %d of %d; state in %s", self.step, cfg.steps, self.state_path)
            return TrainResult(False, self.step, None, self.state_path, resumed_from, session, rate,
                               self.summary())
        summary = self.save_final()
        fin = summary["final"]
        logger.info("VAE trained: %d steps in %.1f s (%.2f steps/s); final loss %.4g rec %.4g "
                    "kl %.4g; sigma(0)=%.3g sigma(1)=%.3g", self.step, summary["wall_time_s"],
                    rate, fin.get("loss", float("nan")), fin.get("rec", float("nan")),
                    fin.get("kl", float("nan")), summary["sigma_grid"][0], summary["sigma_grid"][-1])
        return TrainResult(True, self.step, self.checkpoint_path, self.state_path, resumed_from,
                           session, rate, summary)


def train_vae(
    cfg: VAEConfig,
    data: str | os.PathLike | torch.Tensor | ImageSource,
    *,
    checkpoint_path: str | os.PathLike,
    log_csv: str | os.PathLike | None,
    runtime: Runtime,
    state_path: str | os.PathLike | None = None,
    progress: bool = True,
    stop_at: int | None = None,
) -> TrainResult:
    """Train (or resume training) a multi-β VAE, or a fixed-β baseline if ``cfg.fixed_beta``.

    Args:
        cfg: the ``vae`` config.
        data: the dataset file (its ``train`` split is used), an image tensor
            ``[N, C, S, S]`` (uint8 or float in [0, 1]) or an :class:`ImageSource`.
        checkpoint_path: where the final ``kind="vae"`` checkpoint goes.
        log_csv: CSV of loss terms every ``vae.log_every`` steps (None: no CSV).
        runtime: device and precision (``multibeta.utils.device.select_runtime``).
        state_path: resumable partial state; default ``.<stem>.partial.pt`` beside the checkpoint.
        progress: show a progress bar.
        stop_at: stop after this step (state saved, ``completed=False``): for time-limited
            jobs and tests; a later call resumes.

    A final checkpoint or partial state written with another architecture/config is renamed
    ``*.stale`` (a warning names the differing keys) and training starts from step 0.

    Raises:
        NonFiniteLossError: a loss term or the gradient became NaN/inf.
    """
    trainer = VAETrainer(cfg, as_source(data), runtime=runtime, checkpoint_path=checkpoint_path,
                         log_csv=log_csv, state_path=state_path, progress=progress)
    return trainer.run(stop_at=stop_at)
