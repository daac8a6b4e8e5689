"""What both trainers (VAE and denoiser) share: one way to average, log, fail and resume.

- :mod:`multibeta.training.ema`: :class:`EMA`, the exponential moving average of the weights.
- :mod:`multibeta.training.errors`: :class:`NonFiniteLossError`, raised when a loss turns NaN/inf.
- :mod:`multibeta.training.csv_log`: :class:`CsvLog`, the training log rewritten atomically.
- :mod:`multibeta.training.resume`: the resume policy (a state written with another config is
  set aside as ``*.stale`` and training starts again) and the default state path.
- :mod:`multibeta.training.state`: capture and restore of the optimiser, scaler and RNG states.

The learning-rate schedule of every trainer is :func:`multibeta.core.schedules.lr_factor`.
"""

from multibeta.training.csv_log import CsvLog
from multibeta.training.ema import EMA
from multibeta.training.errors import Cause, NonFiniteLossError
from multibeta.training.resume import default_state_path, load_resumable, stale_path
from multibeta.training.state import optimisation_state, restore_optimisation_state

__all__ = [
    "CsvLog", "EMA", "Cause", "NonFiniteLossError", "default_state_path", "load_resumable",
    "optimisation_state", "restore_optimisation_state", "stale_path",
]
