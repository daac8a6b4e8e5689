"""Stage 1 training on a few hundred synthetic squares (CPU, seconds): the β trade-off,
conditioning, resume equality, mismatch and NaN handling, fixed-β mode, plots."""

from __future__ import annotations

import csv
import logging

import numpy as np
import pytest
import torch

from multibeta.models.vae import load_vae
from multibeta.utils.checkpoint import CheckpointMismatchError, load_checkpoint
from multibeta.utils.device import select_runtime
from multibeta.vae.config import VAEConfig
from multibeta.vae.evaluation import evaluate_levels, level_grid
from multibeta.vae.plots import write_vae_plots
from multibeta.training.errors import NonFiniteLossError
from multibeta.vae.trainer import TensorSource, train_vae
from multibeta.workflow.config import section_defaults

CPU = select_runtime("cpu", "fp32")

# Small but real: the trade-off test needs a network that learns something in ~250 steps.
# With this setup the monotonicity checks below held for each of 8 seeds tried (0..7).
SMALL = {
    "latent_dim": 4, "batch_size": 32, "lr": 2e-3, "warmup_steps": 20, "log_every": 25,
    "checkpoint_every": 10_000, "beta_min": 1.0, "beta_max": 300.0, "ema_decay": 0.0,
    "loss_weighting": "normalized", "t_sampling": "stratified", "t_power": 1.0, "sigma_schedule": "sinusoidal",
    "arch": {"channels": [8, 16, 16, 32], "hidden_dim": 64, "time_embed_dim": 32},
}
TINY = {
    "latent_dim": 3, "batch_size": 8, "lr": 1e-3, "warmup_steps": 2, "log_every": 2,
    "checkpoint_every": 3, "ema_decay": 0.9,
    "arch": {"channels": [4, 8], "hidden_dim": 16, "time_embed_dim": 8, "sigma_hidden": 4},
}


def make_cfg(base: dict, **over) -> VAEConfig:
    d = dict(base)
    d.update(over)
    return VAEConfig.from_section(section_defaults("vae", d))


def squares(n: int, seed: int) -> torch.Tensor:
    """uint8 [n, 1, 64, 64]: one white axis-aligned square (side 8..24) per image."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 1, 64, 64), np.uint8)
    for i in range(n):
        s = int(rng.integers(8, 25))
        y, x = rng.integers(0, 64 - s, size=2)
        out[i, 0, y:y + s, x:x + s] = 255
    return torch.from_numpy(out)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A multi-β VAE trained for 250 steps on 384 squares; held-out squares."""
    tmp = tmp_path_factory.mktemp("vae")
    cfg = make_cfg(SMALL, steps=250)
    result = train_vae(cfg, squares(384, 0), checkpoint_path=tmp / "model.pt",
                       log_csv=tmp / "log.csv", runtime=CPU, progress=False)
    model, ckpt = load_vae(tmp / "model.pt")
    return {"cfg": cfg, "result": result, "model": model, "ckpt": ckpt, "dir": tmp,
            "held_out": squares(128, 1)}


def test_kl_falls_and_reconstruction_error_rises_with_beta(trained) -> None:
    model = trained["model"]
    ev = evaluate_levels(model, trained["held_out"], np.linspace(0, 1, 5), metric="bce")
    assert np.all(np.diff(ev.beta) > 0)
    assert np.all(np.diff(ev.kl) < 0), ev.kl
    assert np.all(np.diff(ev.kl_per_dim, axis=0) < 0), ev.kl_per_dim
    assert np.all(np.diff(ev.rec_sample) > 0), ev.rec_sample
    # Decoding the mean: rises overall and never drops by more than 5 % between levels (the
    # low-β end is only partly converged after 250 steps).
    assert ev.rec_mean[-1] > 1.5 * ev.rec_mean[0], ev.rec_mean
    assert np.all(ev.rec_mean[1:] > 0.95 * ev.rec_mean[:-1]), ev.rec_mean


def test_outputs_depend_on_t(trained) -> None:
    model = trained["model"]
    x = trained["held_out"][:16].float() / 255
    lo, hi = torch.full((16,), 0.1), torch.full((16,), 0.9)
    with torch.no_grad():
        mu_lo, mu_hi = model.encode(x, lo), model.encode(x, hi)
        assert (mu_lo - mu_hi).abs().mean() > 0.1 * mu_lo.abs().mean()
        out_lo, out_hi = model.decode(mu_lo, lo), model.decode(mu_lo, hi)
        assert (out_lo - out_hi).abs().mean() > 0.1


def test_checkpoint_contents_and_csv(trained) -> None:
    ckpt, tmp = trained["ckpt"], trained["dir"]
    assert ckpt["kind"] == "vae" and ckpt["complete"]
    assert ckpt["arch"] == trained["cfg"].vae_arch(1).to_dict()
    assert ckpt["config"] == trained["cfg"].to_dict()
    assert ckpt["versions"]["torch"] and "git_commit" in ckpt["versions"]
    assert ckpt["summary"]["steps"] == 250 and ckpt["summary"]["train_images"] == 384
    assert not (tmp / ".model.partial.pt").exists()
    rows = list(csv.DictReader(open(tmp / "log.csv")))
    assert [int(r["step"]) for r in rows] == list(range(25, 251, 25))
    assert {"loss", "rec", "kl", "beta_kl", "grad_norm", "lr", "sigma_half"} <= set(rows[0])
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])


def test_rerun_of_finished_training_does_nothing(trained) -> None:
    path = trained["dir"] / "model.pt"
    before = path.stat().st_mtime_ns
    result = train_vae(trained["cfg"], squares(384, 0), checkpoint_path=path, log_csv=None,
                       runtime=CPU, progress=False)
    assert result.completed and result.step == 250 and path.stat().st_mtime_ns == before


def test_plots_are_written(trained) -> None:
    model, tmp = trained["model"], trained["dir"]
    cfg = make_cfg(SMALL, evaluation={"num_images": 32, "levels": 4, "recon_images": 4})
    out = write_vae_plots(model, trained["held_out"], tmp / "log.csv", tmp / "plots",
                          cfg.evaluation, metric="bce")
    assert set(out["plots"]) == {"loss_terms", "sigma_vs_beta", "kl_rec_vs_beta", "recon_grid"}
    for p in out["plots"].values():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(out["levels"]["t"]) == 4 and out["levels"]["num_images"] == 32
    gap = out["prior_gap"]
    assert gap["gaussian_kl_to_prior"] >= 0 and gap["sigma"] == pytest.approx(1.0)
    assert gap["num_images"] == 32


# --------------------------------------------------------------------------- restartability
def _weights(path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(path, kind="vae")
    return {**{f"model.{k}": v for k, v in state["model"].items()},
            **{f"ema.{k}": v for k, v in state["ema"].items()}}


def test_resume_is_bitwise_identical(tmp_path) -> None:
    cfg = make_cfg(TINY, steps=8)
    data = squares(48, 2)
    train_vae(cfg, data, checkpoint_path=tmp_path / "a.pt", log_csv=tmp_path / "a.csv",
              runtime=CPU, progress=False)
    first = train_vae(cfg, data, checkpoint_path=tmp_path / "b.pt", log_csv=tmp_path / "b.csv",
                      runtime=CPU, progress=False, stop_at=4)
    assert not first.completed and first.step == 4 and not (tmp_path / "b.pt").exists()
    torch.manual_seed(123)  # resuming must not depend on the global RNG state of the caller
    second = train_vae(cfg, data, checkpoint_path=tmp_path / "b.pt", log_csv=tmp_path / "b.csv",
                       runtime=CPU, progress=False)
    assert second.completed and second.resumed_from == 4
    a, b = _weights(tmp_path / "a.pt"), _weights(tmp_path / "b.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()


def test_state_of_another_config_is_kept_as_stale_and_training_restarts(tmp_path, caplog) -> None:
    data = squares(48, 2)
    state, stale = tmp_path / ".m.partial.pt", tmp_path / ".m.partial.stale"

    def run(**over):
        return train_vae(make_cfg(TINY, steps=6, **over), data, checkpoint_path=tmp_path / "m.pt",
                         log_csv=None, runtime=CPU, progress=False, stop_at=3)

    run()
    for over, key in [({"latent_dim": 5}, "latent_dim"), ({"lr": 5e-4}, r"vae.lr: checkpoint has 0.001")]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="multibeta.training.resume"):
            result = run(**over)
        assert result.resumed_from is None and result.step == 3, over
        assert key in caplog.text and str(stale) in caplog.text
        assert stale.exists() and state.exists()  # the old state kept, a new one written
    stale.unlink()
    run()  # back to the first config: the state of lr=5e-4 is set aside again
    # keys that do not shape training may change between runs
    done = train_vae(make_cfg(TINY, steps=6, log_every=3), data, checkpoint_path=tmp_path / "m.pt",
                     log_csv=None, runtime=CPU, progress=False)
    assert done.completed and done.resumed_from == 3
    other = make_cfg(TINY, steps=6, arch={**TINY["arch"], "hidden_dim": 32})
    with pytest.raises(CheckpointMismatchError, match="hidden_dim"):
        load_vae(tmp_path / "m.pt", arch=other.vae_arch(1))
    # a finished checkpoint of another config is kept as stale too, and training runs again
    again = train_vae(other, data, checkpoint_path=tmp_path / "m.pt", log_csv=None, runtime=CPU,
                      progress=False)
    assert again.completed and again.resumed_from is None and (tmp_path / "m.stale").exists()


class NaNAfter(TensorSource):
    """Returns NaN images from the ``k``-th batch on."""

    def __init__(self, images: torch.Tensor, k: int) -> None:
        super().__init__(images)
        self.k, self.calls = k, 0

    def batch(self, indices: np.ndarray) -> torch.Tensor:
        self.calls += 1
        x = super().batch(indices)
        return x * float("nan") if self.calls >= self.k else x


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path) -> None:
    cfg = make_cfg(TINY, steps=10, checkpoint_every=2)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss, rec.*step 6.*lower it.*fp32") as err:
        train_vae(cfg, NaNAfter(squares(48, 2), k=6), checkpoint_path=tmp_path / "m.pt",
                  log_csv=tmp_path / "log.csv", runtime=CPU, progress=False)
    assert "a rerun with this config stops here again: the config must change" in str(err.value)
    assert "vae.lr = 0.001, vae.grad_clip = " in str(err.value)
    assert f"{tmp_path / '.m.partial.pt'} holds the state of step 4" in str(err.value)
    state = load_checkpoint(tmp_path / ".m.partial.pt", kind="vae")
    assert state["train_state"]["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert not (tmp_path / "m.pt").exists()
    # the clean data resumes from the saved step
    result = train_vae(cfg, squares(48, 2), checkpoint_path=tmp_path / "m.pt",
                       log_csv=tmp_path / "log.csv", runtime=CPU, progress=False)
    assert result.completed and result.resumed_from == 4


def test_nan_at_the_first_step_says_no_checkpoint_was_written(tmp_path) -> None:
    cfg = make_cfg(TINY, steps=10, checkpoint_every=2)
    with pytest.raises(NonFiniteLossError, match=r"step 1 .*Checkpoint: none was written"):
        train_vae(cfg, NaNAfter(squares(48, 2), k=1), checkpoint_path=tmp_path / "m.pt",
                  log_csv=tmp_path / "log.csv", runtime=CPU, progress=False)
    assert not (tmp_path / ".m.partial.pt").exists()


def test_fixed_beta_mode_trains_a_plain_beta_vae(tmp_path) -> None:
    cfg = make_cfg(TINY, steps=6, beta_min=0.5, beta_max=50.0, fixed_beta=5.0)
    result = train_vae(cfg, squares(48, 2), checkpoint_path=tmp_path / "m.pt", log_csv=None,
                       runtime=CPU, progress=False)
    assert result.completed
    model, ckpt = load_vae(tmp_path / "m.pt")
    assert ckpt["arch"]["fixed_beta"] == 5.0 and model.fixed_t == pytest.approx(0.5)
    assert level_grid(model, 5).tolist() == [pytest.approx(0.5)]
    assert np.isfinite(ckpt["summary"]["final"]["loss"])
    multi = make_cfg(TINY, steps=6, beta_min=0.5, beta_max=50.0)
    with pytest.raises(CheckpointMismatchError, match="fixed_beta"):
        load_vae(tmp_path / "m.pt", arch=multi.vae_arch(1))


def test_trains_from_a_dataset_file(tmp_path) -> None:
    from multibeta.data.h5io import write_image_dataset

    images = squares(40, 3).numpy()
    split = np.array([0] * 32 + [1] * 8)
    write_image_dataset(tmp_path / "d.h5", images=images, split=split, progress=False,
                        attrs={"dataset": "squares", "generator_version": "test", "seed": 3,
                               "created_with": {}})
    result = train_vae(make_cfg(TINY, steps=3), tmp_path / "d.h5", checkpoint_path=tmp_path / "m.pt",
                       log_csv=None, runtime=CPU, progress=False)
    assert result.completed and result.summary["train_images"] == 32
    model, _ = load_vae(tmp_path / "m.pt")
    ev = evaluate_levels(model, tmp_path / "d.h5", [0.0, 1.0], metric="bce")
    assert ev.num_images == 8


def test_l1_lpips_with_gan_trains(tmp_path) -> None:
    import torchvision

    features = torchvision.models.alexnet(weights=None).features.state_dict()
    weights = tmp_path / "alexnet.pth"
    torch.save({f"features.{k}": v for k, v in features.items()}, weights)
    cfg = make_cfg(TINY, steps=3, batch_size=4, reconstruction="l1_lpips",
                   lpips={"weights_path": str(weights)},
                   gan={"weight": 0.5, "start_step": 1, "disc_channels": 8, "disc_layers": 2})
    data = torch.rand(8, 3, 64, 64)
    result = train_vae(cfg, data, checkpoint_path=tmp_path / "m.pt", log_csv=tmp_path / "log.csv",
                       runtime=CPU, progress=False, stop_at=2)
    result = train_vae(cfg, data, checkpoint_path=tmp_path / "m.pt", log_csv=tmp_path / "log.csv",
                       runtime=CPU, progress=False)
    assert result.completed and result.resumed_from == 2
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert {"l1", "lpips", "g_loss", "d_loss", "d_weight"} <= set(rows[-1])
    assert rows[-1]["d_weight"] != ""


@pytest.mark.parametrize("power", [1.0, 2.0, 3.0])
def test_t_power_shifts_levels_towards_low_beta(tmp_path, power) -> None:
    from multibeta.vae.trainer import VAETrainer

    cfg = make_cfg(TINY, steps=1, t_power=power, batch_size=64)
    trainer = VAETrainer(cfg, TensorSource(squares(64, 0)), runtime=CPU, checkpoint_path=tmp_path / "m.pt",
                         log_csv=None, progress=False)
    t = torch.cat([trainer.sample_levels(64) for _ in range(200)])
    assert 0.0 <= float(t.min()) and float(t.max()) < 1.0
    # P(t < 0.25) = 0.25 ** (1 / p): 0.25, 0.5, 0.63
    assert float((t < 0.25).float().mean()) == pytest.approx(0.25 ** (1.0 / power), abs=0.02)
    # stratified: every batch still covers [0, 1) one stratum of u each
    batch = trainer.sample_levels(64)
    u = torch.sort(batch.pow(1.0 / power)).values
    assert torch.all((u >= torch.arange(64) / 64) & (u < (torch.arange(64) + 1) / 64))


def test_progress_lines_name_step_speed_and_time_left(caplog) -> None:
    import logging

    from multibeta.utils.progress import ProgressLog, format_duration

    assert format_duration(41.2) == "41 s" and format_duration(512) == "8 min 32 s"
    assert format_duration(3725) == "1 h 02 min"
    log = logging.getLogger("test.progress")
    progress = ProgressLog("train_vae", 100, log, every_s=3600.0)
    with caplog.at_level(logging.INFO, logger="test.progress"):
        progress.update(10, loss=1.5)  # throttled
        progress.update(100, loss=1.25)  # the last step is always logged
    assert len(caplog.records) == 1
    line = caplog.records[0].getMessage()
    assert line.startswith("train_vae: step 100/100 (100%), loss 1.25,") and "steps/s" in line and "left" in line
