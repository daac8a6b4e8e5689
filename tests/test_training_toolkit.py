"""The training toolkit both trainers share: EMA, learning-rate factor, non-finite-loss error,
CSV log and resume policy (the trainers' own resume tests are in test_vae_training.py and
test_diffusion.py)."""

from __future__ import annotations

import copy
import logging
import math
import pickle

import pytest
import torch
from torch import nn

from multibeta.core.schedules import lr_factor
from multibeta.training import CsvLog, EMA, Cause, NonFiniteLossError
from multibeta.training.resume import default_state_path, load_resumable, stale_path
from multibeta.utils.checkpoint import diff_configs, save_checkpoint


class Net(nn.Module):
    """Parameters, a float buffer training leaves alone and an integer buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.register_buffer("scale", torch.tensor([0.5, 2.0], dtype=torch.float64))
        self.register_buffer("count", torch.tensor(7))


def _perturb(model: nn.Module, step: int) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(step)))


# --------------------------------------------------------------------------- EMA
def test_ema_reproduces_both_former_trainer_updates_bit_for_bit() -> None:
    torch.manual_seed(0)
    model = Net()
    ema = EMA(model, 0.9)
    vae_shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    diffusion_copy = copy.deepcopy(model).requires_grad_(False)
    for step in range(1, 30):
        _perturb(model, step)
        ema.update(model, step)
        d = min(0.9, (1.0 + step) / (10.0 + step))
        state = model.state_dict()  # the VAE trainer's former update: all floating-point state
        torch._foreach_lerp_([vae_shadow[k] for k in vae_shadow], [state[k] for k in vae_shadow], 1.0 - d)
        # the diffusion trainer's former update: the parameters of a model copy
        torch._foreach_lerp_(list(diffusion_copy.parameters()), [p.detach() for p in model.parameters()],
                             1.0 - d)
    assert ema.shadow.keys() == vae_shadow.keys() == {"lin.weight", "lin.bias", "scale"}
    for k, v in diffusion_copy.state_dict().items():
        if k != "count":
            assert torch.equal(ema.shadow[k], vae_shadow[k]) and torch.equal(ema.shadow[k], v), k
    assert torch.equal(ema.shadow["scale"], model.scale)  # an untouched buffer stays exact


def test_ema_warm_up_round_trip_and_copy() -> None:
    model = Net()
    ema = EMA(model, 0.999)
    assert ema.decay_at(0) == pytest.approx(0.1) and ema.decay_at(10**6) == 0.999
    before = ema.state_dict()
    with torch.no_grad():
        model.lin.weight.add_(1.0)
    ema.update(model, 0)  # d = 0.1: the average moves 90 % of the way
    torch.testing.assert_close(ema.shadow["lin.weight"], before["lin.weight"] + 0.9)
    other = EMA(Net(), 0.999)
    other.load_state_dict(ema.state_dict())
    assert all(torch.equal(other.shadow[k], ema.shadow[k]) for k in ema.shadow)
    target = ema.copy_to(Net())
    assert torch.equal(target.lin.weight, ema.shadow["lin.weight"]) and int(target.count) == 7
    follow = EMA(model, 0.0)  # decay 0: the average is the model
    _perturb(model, 1)
    follow.update(model, 5)
    assert torch.equal(follow.shadow["lin.weight"], model.lin.weight)
    with pytest.raises(ValueError, match="decay"):
        EMA(model, 1.0)
    with pytest.raises(KeyError, match="lin.bias"):
        ema.load_state_dict({"lin.weight": model.lin.weight})


# --------------------------------------------------------------------------- learning rate
def test_lr_factor_warms_up_then_decays_to_its_floor() -> None:
    assert [lr_factor(s, warmup=4, total=20) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    # cosine from the end of warm-up: 1 right after it, the floor at the last step
    assert lr_factor(4, warmup=4, total=20, floor=0.1) == 1.0
    assert lr_factor(20, warmup=4, total=20, floor=0.1) == pytest.approx(0.1, abs=1e-15)
    assert lr_factor(20, warmup=4, total=20) == 0.0  # the denoiser's default floor
    assert lr_factor(12, warmup=4, total=20, floor=0.2) == pytest.approx(0.6)  # halfway
    assert lr_factor(10**6, warmup=4, total=20, floor=0.2) == pytest.approx(0.2)
    assert lr_factor(15, warmup=4, total=20, decay="constant") == 1.0
    assert lr_factor(7, warmup=0, total=10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.7)))
    with pytest.raises(ValueError, match="floor"):
        lr_factor(0, warmup=0, total=10, floor=1.5)
    with pytest.raises(ValueError, match="decay"):
        lr_factor(5, warmup=0, total=10, decay="linear")


# --------------------------------------------------------------------------- errors
CAUSES = [Cause("the learning rate", {"vae.lr": 1e-3, "vae.grad_clip": None}, "lower it"),
          Cause("bf16 autocast", fix="compute.precision: fp32")]


def test_non_finite_loss_error_names_step_terms_causes_and_an_existing_checkpoint(tmp_path) -> None:
    state = tmp_path / "resume.pt"
    err = NonFiniteLossError("train_x", step=13, found_at=15, terms=["eps_loss", "loss"],
                             values={"loss": float("nan")}, causes=CAUSES, state_path=state, saved_step=10)
    message = str(err)
    assert isinstance(err, FloatingPointError)
    assert message.startswith("train_x: non-finite eps_loss, loss first at training step 13 "
                              "(found at step 15) (values: loss=nan).")
    assert "a rerun with this config stops here again: the config must change" in message
    assert ("Likely causes: the learning rate (vae.lr = 0.001, vae.grad_clip = null; lower it); "
            "bf16 autocast (compute.precision: fp32).") in message
    assert message.endswith("Checkpoint: none was written before the failure.")  # no file yet
    state.write_bytes(b"x")
    err = NonFiniteLossError("train_x", step=13, terms=["loss"], causes=CAUSES, state_path=state,
                             saved_step=10)
    assert err.checkpoint == state and "(found at" not in str(err)
    assert f"Checkpoint: {state} holds the state of step 10, trained with this config" in str(err)
    assert "resume.stale" in str(err)
    # nothing saved in this run: an older file is not vouched for
    assert NonFiniteLossError("t", step=1, terms=["loss"], causes=CAUSES, state_path=state).checkpoint is None
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.step == 13 and again.terms == ["loss"]


# --------------------------------------------------------------------------- CSV log
def test_csv_log_writes_the_union_of_columns_atomically(tmp_path) -> None:
    log = CsvLog(tmp_path / "log.csv")
    log.append({"step": 2, "loss": 1.0 / 3.0})
    log.write()
    log.append({"step": 4, "loss": 0.25, "d_loss": 2.0})
    log.write()
    assert (tmp_path / "log.csv").read_bytes() == b"step,loss,d_loss\n2,0.333333,\n4,0.25,2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.csv"]
    resumed = CsvLog(tmp_path / "again.csv", rows=log.rows)
    resumed.write()
    assert (tmp_path / "again.csv").read_text() == (tmp_path / "log.csv").read_text()
    assert resumed.last == {"step": 4, "loss": 0.25, "d_loss": 2.0} and CsvLog(None).last == {}
    CsvLog(None, rows=log.rows).write()  # no path: nothing written, no error


# --------------------------------------------------------------------------- resume policy
def _save(path, config: dict) -> None:
    save_checkpoint({"kind": "toy", "arch": {}, "config": config, "step": 3}, path)


def test_resume_policy_sets_aside_a_state_of_another_config(tmp_path, caplog) -> None:
    path = tmp_path / "resume.pt"
    asked = {"lr": 1e-3, "steps": 10}

    def differences(state: dict) -> list[str]:
        return diff_configs(state["config"], asked, prefix="x.")

    assert load_resumable(path, kind="toy", differences=differences) is None  # nothing there
    _save(path, asked)
    assert load_resumable(path, kind="toy", differences=differences)["step"] == 3
    _save(path, {"lr": 5e-4, "steps": 10})
    with caplog.at_level(logging.WARNING, logger="multibeta.training.resume"):
        assert load_resumable(path, kind="toy", differences=differences) is None
    assert not path.exists() and stale_path(path) == tmp_path / "resume.stale"
    assert stale_path(path).exists()
    assert "x.lr: checkpoint has 0.0005, config asks for 0.001" in caplog.text
    assert "resume.stale" in caplog.text and "starts again from step 0" in caplog.text
    path.write_bytes(b"not a checkpoint")  # unreadable: set aside too, replacing the older one
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="multibeta.training.resume"):
        assert load_resumable(path, kind="toy", differences=differences) is None
    assert "cannot be read" in caplog.text and stale_path(path).read_bytes() == b"not a checkpoint"
    assert default_state_path(tmp_path / "model.pt") == tmp_path / ".model.partial.pt"
